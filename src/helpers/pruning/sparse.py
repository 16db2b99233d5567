"""Sparse (CSR) linear layers for inference, chosen per layer by measurement on the running machine.

Whether a ``torch.sparse_csr`` matmul beats the dense one depends on the layer's shape and sparsity,
the batch size, the thread count, the CPU and its load (on this project's 2-core CPU, VGG16's compacted
first linear layer at 80 % zeros took 7.6 ms in CSR against 9.9 ms dense at batch 1 on one thread, but
114 ms against 100 ms at batch 64; a 4096 x 8 output layer is always faster dense), so
:func:`choose_linear_formats` measures instead of assuming.

:class:`SparseLinear` holds the weight as CSR with int32 indices (PyTorch's CPU kernels were 3-4x faster
with them than with int64 here) and multiplies with ``torch.mv`` at batch 1 (the fastest CSR form
measured), with ``torch.addmm(bias, W, x.T)`` above; ``x @ W.T`` with a CSR or transposed-CSR ``W`` and
``F.linear`` with a CSR weight were 10-100x slower or fail under ``torch.inference_mode``. The CSR arrays
and the bias are plain buffers, so the layer deep-copies, moves with ``.to()`` and saves with
:func:`helpers.pruning.save_model` like any other. It is an inference layer: no parameters, never trained.
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from .structure import forward_with_hooks

__all__ = ["SparseLinear", "choose_linear_formats", "LINEAR_FORMATS"]

#: Formats a linear layer can run in after :func:`choose_linear_formats`.
LINEAR_FORMATS: tuple[str, ...] = ("dense", "csr")


class SparseLinear(nn.Module):
    """A linear layer ``y = x W^T + b`` whose weight ``W`` is a CSR matrix (int32 indices).

    Build one from a trained layer with :meth:`from_linear`; ``SparseLinear(in, out, nnz)`` makes an
    empty one of the right buffer sizes (for loading a state dict into).
    """

    def __init__(self, in_features: int, out_features: int, nnz: int = 0, bias: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.register_buffer("crow_indices", torch.zeros(out_features + 1, dtype=torch.int32))
        self.register_buffer("col_indices", torch.zeros(nnz, dtype=torch.int32))
        self.register_buffer("values", torch.zeros(nnz, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        """The CSR twin of ``linear`` (its weight's zeros dropped, its bias kept); ``linear`` is unchanged."""
        weight = linear.weight.detach()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = weight.to_sparse_csr()
        new = cls(linear.in_features, linear.out_features, csr.values().numel(), linear.bias is not None, weight.dtype)
        new.to(weight.device)
        new.crow_indices.copy_(csr.crow_indices())
        new.col_indices.copy_(csr.col_indices())
        new.values.copy_(csr.values())
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach())
        return new

    @property
    def weight(self) -> torch.Tensor:
        """The weight as a ``torch.sparse_csr`` tensor ``[out_features, in_features]`` (a view of the buffers)."""
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.values, (self.out_features, self.in_features),
            check_invariants=False,
        )  # fmt: skip

    @property
    def nnz(self) -> int:
        """Stored (non-zero) weights."""
        return int(self.values.numel())

    def to_linear(self) -> nn.Linear:
        """The dense ``nn.Linear`` with the same weights (zeros restored)."""
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.values.device, dtype=self.values.dtype)  # fmt: skip
        with torch.no_grad():
            dense.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        weight = self.weight
        if rows.shape[0] == 1:
            y = torch.mv(weight, rows[0])
            y = (y if self.bias is None else y + self.bias).unsqueeze(0)
        elif self.bias is None:
            y = torch.mm(weight, rows.t()).t()
        else:
            y = torch.addmm(self.bias.unsqueeze(1), weight, rows.t()).t()
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        density = self.nnz / max(1, self.in_features * self.out_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz} ({density:.1%} dense)")  # fmt: skip


@torch.no_grad()
def _capture_inputs(model: nn.Module, names: list[str], example_input: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named layer's input on one forward pass of ``example_input`` (eval mode; modes restored)."""
    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str, _module: nn.Module, args: tuple[Any, ...]) -> None:
        inputs.setdefault(name, args[0].detach())

    handles = [model.get_submodule(name).register_forward_pre_hook(partial(hook, name)) for name in names]
    forward_with_hooks(model, example_input, handles)
    return inputs


def _time_pair(dense: nn.Module, sparse: nn.Module, x: torch.Tensor, *, repeats: int, warmup: int,
               budget_s: float) -> tuple[float, float]:  # fmt: skip
    """Median seconds of ``dense(x)`` and ``sparse(x)``, timed alternately (order swapped every round)."""
    times: dict[int, list[float]] = {0: [], 1: []}
    layers = (dense, sparse)
    with torch.inference_mode():
        for _ in range(max(0, warmup)):
            dense(x)
            sparse(x)
        start = time.perf_counter()
        for r in range(max(1, repeats)):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                layers[which](x)
                times[which].append(time.perf_counter() - t0)
            if time.perf_counter() - start > budget_s:
                break
    return float(np.median(times[0])), float(np.median(times[1]))


def choose_linear_formats(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    repeats: int = 7,
    warmup: int = 2,
    min_sparsity: float = 0.5,
    budget_s: float = 3.0,
    force: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each sparse-enough linear layer of ``model`` dense or CSR, whichever is faster here; in place.

    Every ``nn.Linear`` with at least ``min_sparsity`` zeros is timed on its real input, captured on one
    pass of ``example_input`` (so time it at the batch size and thread count it will run at): the dense
    layer and its :class:`SparseLinear` twin alternately, under ``torch.inference_mode``, medians
    compared; where CSR is faster the twin replaces the layer. A layer's timing stops once it has used
    its share of ``budget_s`` (at least one round is timed). Layers already :class:`SparseLinear` are
    left as they are and recorded as ``csr``.

    Args:
        model: the model to convert (for inference; it is modified in place).
        example_input: a batch as the model will see it in deployment.
        repeats: timed rounds per layer (each times both formats once).
        warmup: untimed calls per format before timing.
        min_sparsity: layers with a smaller fraction of zero weights stay dense without being timed.
        budget_s: wall-clock bound of the timing, shared equally among the timed layers.
        force: ``"dense"`` or ``"csr"`` to skip timing and put every sparse-enough layer in that format
            (for tests and for reproducing a choice); ``None`` (default) measures.

    Returns:
        Per linear layer (by module name, in model order): ``format`` (``dense`` or ``csr``),
        ``dense_ms`` and ``csr_ms`` (median ms per call, NaN when not timed), ``sparsity`` (fraction of
        zero weights) and ``reason`` (why this format).
    """
    if force is not None and force not in LINEAR_FORMATS:
        raise ValueError(f"force must be None or one of {', '.join(LINEAR_FORMATS)}, got {force!r}")
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be within [0, 1], got {min_sparsity}")
    records: dict[str, dict[str, Any]] = {}
    candidates: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear):
            sparsity = 1.0 - module.nnz / max(1, module.in_features * module.out_features)
            records[name] = _record("csr", math.nan, math.nan, sparsity, "already SparseLinear")
        elif isinstance(module, nn.Linear):
            weight = module.weight.detach()
            sparsity = 1.0 - int(torch.count_nonzero(weight)) / max(1, weight.numel())
            if sparsity < min_sparsity:
                reason = f"sparsity {sparsity:.3f} < min_sparsity {min_sparsity:g}: kept dense, not timed"
                records[name] = _record("dense", math.nan, math.nan, sparsity, reason)
            else:
                records[name] = _record("dense", math.nan, math.nan, sparsity, "")
                candidates.append(name)
    if not candidates:
        return records
    if force is not None:
        for name in candidates:
            records[name].update(format=force, reason=f"forced {force}, not timed")
            if force == "csr":
                model.set_submodule(name, SparseLinear.from_linear(model.get_submodule(name)))
        return records
    inputs = _capture_inputs(model, candidates, example_input)
    share = budget_s / len(candidates)
    for name in candidates:
        dense = model.get_submodule(name)
        if name not in inputs:  # not reached by this input: nothing to measure on
            records[name]["reason"] = "not called on example_input: kept dense, not timed"
            continue
        sparse = SparseLinear.from_linear(dense)
        dense_s, csr_s = _time_pair(dense, sparse, inputs[name], repeats=repeats, warmup=warmup, budget_s=share)
        faster = csr_s < dense_s
        records[name].update(
            format="csr" if faster else "dense", dense_ms=dense_s * 1e3, csr_ms=csr_s * 1e3,
            reason=f"measured at batch {inputs[name].reshape(-1, dense.in_features).shape[0]}: "
            f"{'csr' if faster else 'dense'} faster",
        )  # fmt: skip
        if faster:
            model.set_submodule(name, sparse)
    return records


def _record(fmt: str, dense_ms: float, csr_ms: float, sparsity: float, reason: str) -> dict[str, Any]:
    return {"format": fmt, "dense_ms": dense_ms, "csr_ms": csr_ms, "sparsity": float(sparsity), "reason": reason}
