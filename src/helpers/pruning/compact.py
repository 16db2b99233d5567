"""Physical compaction of a masked model, and MAC counting.

:func:`compact` returns a smaller copy without every filter that outputs exactly zero
(:func:`helpers.pruning.report.removed_filters`; in a residual group, zero in every member) and what
only served it: its BatchNorm entries, the input channels of the convolutions that read it and, in
VGG, the 7 x 7 = 49 input columns of the first linear layer that the flatten maps it to. The index
bookkeeping is torch-pruning's ``DependencyGraph`` (Fang et al., CVPR 2023). Removed channels carried
exact zeros, so the logits equal the masked model's up to floating-point summation order.

Unstructured linear sparsity stays as zeros in dense tensors (``linear_only`` compacts to the masked
model's parameters and MACs). Whether a linear layer runs faster in CSR depends on its shape, sparsity,
batch size and the machine, so the runner decides that per layer afterwards, by measurement
(:func:`helpers.pruning.choose_linear_formats`), and records it in ``inference.csv``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .report import removed_filters
from .sparse import SparseLinear
from .structure import build_dependency_graph, find_structure, forward_with_hooks

__all__ = ["compact", "compact_with_map", "CompactionMap", "count_macs"]


@torch.no_grad()
def _zero_channels(model: nn.Module, group) -> torch.Tensor:
    """Bool ``[C]``: the group's channels whose filter outputs exactly zero in every member."""
    dead = None
    for conv_name, norm_name in zip(group.convs, group.norms):
        norm = model.get_submodule(norm_name) if norm_name is not None else None
        member = removed_filters(model.get_submodule(conv_name), norm)
        dead = member if dead is None else dead & member
    return dead


def _plan(model: nn.Module, example_input: torch.Tensor, masks=None) -> list[tuple[Any, list[int]]]:
    """Which channels of each conv group go: the zero filters, or the channels ``masks`` removes."""
    plan = []
    for group in find_structure(model, example_input).conv_groups:
        gone = _zero_channels(model, group) if masks is None else masks.channel[group.name].detach().cpu() == 0
        idxs = torch.nonzero(gone).reshape(-1).tolist()
        plan.append((group, idxs[1:] if len(idxs) == group.channels else idxs))  # a layer keeps one channel
    return plan


def _prune(model: nn.Module, plan: list[tuple[Any, list[int]]], example_input: torch.Tensor) -> dict[str, dict[int, set[int]]]:
    """Prune ``model`` in place by ``plan``; returns, per module name, the removed indices per tensor dim.

    The indices are read off torch-pruning's pruning groups before they are applied, so its index
    bookkeeping (residual groups, VGG's flatten into the first linear layer) defines them. Each dim
    of a tensor belongs to one channel space, so the groups never remove along the same dim twice and
    every index refers to the original shape.
    """
    removed: dict[str, dict[int, set[int]]] = {}
    if not any(idxs for _, idxs in plan):
        return removed
    names = {module: name for name, module in model.named_modules()}
    graph = build_dependency_graph(model, example_input)
    for group, idxs in plan:
        if not idxs:
            continue
        root = model.get_submodule(group.convs[0])
        pruning_group = graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=idxs)
        for dep, dep_idxs in pruning_group:
            module = dep.target.module
            if module not in names or not list(module.parameters(recurse=False)):
                continue  # an operation without tensors (add, flatten, ...)
            weight = getattr(module, "weight", None)
            if graph.is_out_channel_pruning_fn(dep.handler) or weight is None or weight.dim() < 2:
                dim = 0
            else:
                dim = 1
            plain = [int(getattr(i, "idx", i)) for i in dep_idxs]
            removed.setdefault(names[module], {}).setdefault(dim, set()).update(plain)
        pruning_group.prune()
    return removed


def compact(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` (masked or dense; not modified) without its removed filters.

    ``example_input`` as in :func:`compact_with_map`. The copy has ``model``'s training mode.
    """
    return compact_with_map(model, example_input)[0]


@dataclass
class CompactionMap:
    """Where the entries of a compacted model's tensors sit in its full-size twin.

    ``kept[name]`` holds, for every state-dict tensor (parameter or buffer) that compaction shrank,
    the kept indices along dims 0 and 1 of the full tensor (``None``: that dim was not shrunk).
    Tensors absent from ``kept`` have the same shape in both models. Only dims 0 and 1 can shrink
    (conv / linear output and input channels, BatchNorm channels).
    """

    kept: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]

    def shrink(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (shaped like the full model's ``name``, or broadcastable to it) cut to the compacted shape.

        Dims of size 1 are left alone, so a ``[C, 1, 1, 1]`` mask view shrinks to ``[C', 1, 1, 1]``.
        """
        for dim, idx in enumerate(self.kept.get(name, ())):
            if idx is not None and tensor.dim() > dim and tensor.shape[dim] > 1:
                tensor = tensor.index_select(dim, idx.to(tensor.device))
        return tensor

    @torch.no_grad()
    def expand_into(self, full: nn.Module, small: nn.Module) -> None:
        """Write ``small``'s parameters and buffers into their places in ``full`` (in place).

        Entries of ``full`` that compaction removed keep their values: they belong to removed filters
        (zero under the masks) or to the input channels that read them (multiplied by zero).
        """
        targets = full.state_dict(keep_vars=True)
        for name, value in small.state_dict(keep_vars=True).items():
            self.put(name, targets[name], value)

    @torch.no_grad()
    def put(self, name: str, target: torch.Tensor, value: torch.Tensor) -> None:
        """Write ``value`` (shaped like the compacted ``name``) into its places in ``target`` (full-shaped)."""
        index = self.kept.get(name)
        if index is None:
            target.copy_(value)
            return
        rows, cols = index
        rows = torch.arange(target.shape[0], device=target.device) if rows is None else rows.to(target.device)
        if target.dim() == 1:
            target[rows] = value.to(target)
        else:
            cols = torch.arange(target.shape[1], device=target.device) if cols is None else cols.to(target.device)
            target[rows[:, None], cols[None, :]] = value.to(target)


@torch.no_grad()
def compact_with_map(
    model: nn.Module, example_input: torch.Tensor | None = None, *, masks=None
) -> tuple[nn.Module, CompactionMap]:
    """:func:`compact`, plus the map from the compacted tensors back to ``model``'s.

    The map is read off the pruning groups torch-pruning applies (see :func:`_prune`), and checked
    against the shapes it built.

    Args:
        model: a masked model; it is not modified. Global RNG state is left as it was.
        example_input: an input batch for tracing (default 2 x C x 32 x 32 random, drawn from a
            private generator).
        masks: remove exactly the channels these masks remove (:class:`~helpers.pruning.masks.MaskSet`)
            instead of the filters that are zero now.

    Returns:
        ``(small, map)``: the compacted copy (same training mode, device and dtype) and its
        :class:`CompactionMap`.
    """
    rng = torch.get_rng_state()
    try:
        if example_input is None:
            param = next(model.parameters())
            first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            channels = first.in_channels if first is not None else 3
            gen = torch.Generator().manual_seed(0)
            example_input = torch.randn(2, channels, 32, 32, generator=gen).to(param)
        plan = _plan(model, example_input, masks)  # on the model: its structure is cached across calls
        small = copy.deepcopy(model)
        removed = _prune(small, plan, example_input)
        full_modules = dict(model.named_modules())
        kept: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        for module_name, dims in removed.items():
            module = full_modules[module_name]
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for tensor_name, tensor in tensors:
                if tensor is None or tensor.dim() == 0:
                    continue
                index: list[torch.Tensor | None] = [None, None]
                for dim, gone in dims.items():
                    if tensor.dim() > dim and gone:
                        keep = torch.ones(tensor.shape[dim], dtype=torch.bool)
                        keep[sorted(gone)] = False
                        index[dim] = torch.nonzero(keep).reshape(-1)
                if index != [None, None]:
                    kept[f"{module_name}.{tensor_name}" if module_name else tensor_name] = (index[0], index[1])
        small_state, full_state = small.state_dict(), model.state_dict()
        for name, (rows, cols) in kept.items():  # the map must describe what torch-pruning built
            expected = tuple(len(i) if i is not None else n for i, n in zip((rows, cols), full_state[name].shape))
            if tuple(small_state[name].shape[: len(expected)]) != expected:
                raise RuntimeError(f"compaction map of {name} gives {expected}, torch-pruning built "
                                   f"{tuple(small_state[name].shape)}; please report this model")  # fmt: skip
        return small, CompactionMap(kept)
    finally:
        torch.set_rng_state(rng)


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``example_input`` through conv and linear layers.

    Conv: ``output elements x C_in / groups x k_h x k_w``; linear: ``output elements x in_features``.
    Zeros in dense weights are counted (a masked model has its dense twin's MACs: its kernels compute
    them); a :class:`~helpers.pruning.sparse.SparseLinear` layer stores and multiplies only its non-zero
    weights, so it counts ``rows x nnz``. BatchNorm, activations and pooling are left out (under 1 % of
    the total in the study's models).
    """
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * k_h * k_w
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:
            total += (output.numel() // max(1, module.out_features)) * module.nnz

    layers = (nn.Conv2d, nn.Linear, SparseLinear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    forward_with_hooks(model, example_input, handles)
    return int(total)
