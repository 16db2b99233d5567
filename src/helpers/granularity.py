"""Pruning granularities at matched parameter budgets, and what each buys on disk, in time and in MACs.

Study 3 of the project follows Gurram, Sindhura and Bandari, *A study on neural network pruning
techniques for efficient model deployment* (2025): five granularities, compared on model size (MB),
CPU inference time per sample, accuracy and MACs, beside the dense model.

Budget. The *prunable parameters* ``P`` are the weights of all ``nn.Conv2d`` and ``nn.Linear`` layers
(biases and BatchNorm parameters, under 1 % in the study's models, are left out, though they shrink with
compaction and count in file sizes). A budget ``b`` asks for ``round(b * P)`` of them to be removed;
each granularity gets as close as its unit allows (:class:`GranularityPlan`: target, achieved fraction,
tolerance). Weights that only served a removed filter, neuron or layer (the next layer's input slices)
count as removed: they are gone from the compacted model.

Granularities (:data:`GRANULARITIES`), each ranked by magnitude:

- ``weight``: the ``round(b * P)`` smallest ``|w|`` over all layers together (Han et al., NeurIPS
  2015). Tolerance ``1 / (2P)``.
- ``unstructured``: every layer loses ``round(b * n_l)`` of its own smallest ``|w|``. Tolerance
  ``L / (2P)`` for ``L`` layers.
- ``neuron``: output units of *hidden* linear layers (whose outputs feed another layer), with their
  weight row, bias and the next layer's input column, ranked by the weight row's L1 norm. The ResNets
  have none (:class:`NoRemovableUnitError`); in VGG16 the two hidden classifier layers hold about 89 %
  of ``P``.
- ``structured``: filters per conv group (:mod:`helpers.pruning.structure`), ranked by the group's
  summed filter L1 norm, with the next layers' input channels (in VGG the 49 flattened columns of
  ``classifier.0``).
- ``layer``: residual blocks or convolutions replaced by identity where shapes allow
  (:func:`removable_layers`): in ``resnet18`` the 5 blocks without a downsample (``layer1.0-1``,
  ``layer2.1``, ``layer3.1``, ``layer4.1``; about 65 % of ``P``), in ``resnet50`` 12 of 16 blocks
  (``layerN.0`` change width or stride), in ``vgg16`` / ``vgg16_bn`` 9 of 13 convolutions (the 2nd of
  blocks 1-2, the 2nd and 3rd of block 3, all of blocks 4-5 but the first of block 4), about 10 % of
  ``P``, so a larger ``layer`` budget is unreachable for VGG16. The CIFAR variants
  (:data:`helpers.models.CIFAR_MODELS`) have the same units: about 86 % of ``P`` in ``vgg16_bn_cifar``
  (whose hidden neurons hold only about 3 %), 57 % in ``resnet18_cifar``, 66 % in ``resnet50_cifar``.
  A block ``relu(f(x) + x)`` becomes ``x``, exact when ``f(x)`` vanishes because ``x`` is itself a
  ReLU's output (or a max-pool of one); a convolution with its BatchNorm and ReLU becomes ``x``, since
  its input is non-negative. Units go in order of increasing mean ``|w|`` (so large blocks are not
  penalised for their size), each only if it brings the count closer to the budget. Tolerance: half
  the largest unit.

For ``neuron`` and ``structured`` one fraction, found by bisection, applies to every unit group (exact
counts, :func:`helpers.pruning.units_removed`, at least one unit kept); then single units are added or
returned wherever that brings the count closest, until no move helps. Tolerance: half the largest
unit's parameters, next-layer inputs included. A budget beyond what a granularity can remove gives
``budget_reached`` False and a warning, or :class:`BudgetUnreachableError` with ``strict=True``.

Formats (:func:`measure_granularity`): ``neuron``, ``structured`` and ``layer`` are compacted
(torch-pruning, Fang et al., CVPR 2023), with masked twins (:func:`mask_granularity`) of equal logits;
``weight`` and ``unstructured`` keep dense tensors with zeros, stored as CSR where that is smaller
(:func:`sparse_state_dict`) and also timed with CSR linear layers (PyTorch has no sparse CPU convolution).
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from helpers.measure import benchmark_inference
from helpers.pruning import SparseLinear, compact, count_macs, find_structure, units_removed
from helpers.pruning.filters import find_consumers, mask_filters
from helpers.pruning.masks import group_l1_norm, top_k_mask
from helpers.pruning.structure import build_dependency_graph, example_input_for, forward_with_hooks
from helpers.train import evaluate

__all__ = [
    "GRANULARITIES",
    "UnknownGranularityError",
    "NoRemovableUnitError",
    "BudgetUnreachableError",
    "RemovableLayer",
    "GranularityPlan",
    "prunable_layers",
    "count_prunable",
    "removable_layers",
    "plan_granularity",
    "mask_granularity",
    "compact_granularity",
    "apply_granularity",
    "sparse_state_dict",
    "dense_state_dict",
    "serialized_size_bytes",
    "to_sparse_linear",
    "count_nonzero_macs",
    "measure_granularity",
]

GRANULARITIES: tuple[str, ...] = ("weight", "unstructured", "neuron", "structured", "layer")
_UNIT = {"weight": "weight", "unstructured": "weight", "neuron": "neuron", "structured": "filter", "layer": "layer"}
_COMPACTED = ("neuron", "structured", "layer")
SPARSE_FORMAT = "csr-int32"


class UnknownGranularityError(ValueError):
    """A granularity name that is not one of :data:`GRANULARITIES`."""


class NoRemovableUnitError(ValueError):
    """A granularity that finds nothing to remove in a model (``neuron`` in a ResNet)."""


class BudgetUnreachableError(ValueError):
    """A budget larger than what the granularity can remove from the model (only with ``strict=True``)."""


def _check_granularity(granularity: str, extra: tuple[str, ...] = ()) -> None:
    accepted = GRANULARITIES + extra
    if granularity not in accepted:
        raise UnknownGranularityError(f"unknown granularity {granularity!r}; expected one of {', '.join(accepted)}")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Conv2d`` and ``nn.Linear``, in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def count_prunable(model: nn.Module, *, nonzero: bool = False) -> int:
    """Weights of all conv and linear layers (only the non-zero ones with ``nonzero``)."""
    return sum(int(torch.count_nonzero(m.weight)) if nonzero else m.weight.numel() for _, m in prunable_layers(model))


# ------------------------------------------------------------------------------------ removable layers


@dataclass(frozen=True)
class RemovableLayer:
    """A unit that ``layer`` pruning can replace by identity.

    Attributes:
        name: module name of the residual block, or of the convolution.
        kind: ``residual_block`` or ``conv``.
        modules: the modules replaced by ``nn.Identity`` (the block; or the conv, its BatchNorm, its ReLU).
        params: prunable weights the unit holds.
        score: mean ``|w|`` over those weights (lowest removed first).
    """

    name: str
    kind: str
    modules: tuple[str, ...]
    params: int
    score: float


@torch.no_grad()
def removable_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> list[RemovableLayer]:
    """The units that ``layer`` pruning can remove, in model order (see the module docstring).

    Residual blocks: torchvision ``BasicBlock`` / ``Bottleneck`` without a ``downsample``. Plain
    convolutions: inside an ``nn.Sequential``, a ``Conv2d`` (groups 1) optionally followed by a
    ``BatchNorm2d``, then a ``ReLU``, preceded by a ``ReLU`` or a max-pool (so its input is non-negative).
    Every candidate is checked to keep its input shape on ``example_input`` (default: a random 2 x C x 32
    x 32 batch).
    """
    candidates: list[tuple[str, str, tuple[str, ...]]] = []
    for name, module in model.named_modules():
        if isinstance(module, (BasicBlock, Bottleneck)) and module.downsample is None:
            candidates.append((name, "residual_block", (name,)))
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (child_name, child) in enumerate(children):
                if not isinstance(child, nn.Conv2d) or child.groups != 1 or child.in_channels != child.out_channels:
                    continue
                if i == 0 or not isinstance(children[i - 1][1], (nn.ReLU, nn.MaxPool2d)):
                    continue
                j = i + 1
                parts = [child_name]
                if j < len(children) and isinstance(children[j][1], nn.BatchNorm2d):
                    parts.append(children[j][0])
                    j += 1
                if j >= len(children) or not isinstance(children[j][1], nn.ReLU):
                    continue
                parts.append(children[j][0])
                prefix = f"{name}." if name else ""
                candidates.append((prefix + child_name, "conv", tuple(prefix + p for p in parts)))
    if not candidates:
        return []
    shapes: dict[str, tuple[torch.Size, torch.Size]] = {}
    handles = []
    for name, _, modules in candidates:
        first, last = model.get_submodule(modules[0]), model.get_submodule(modules[-1])
        handles.append(first.register_forward_hook(lambda _m, i, _o, name=name: shapes.__setitem__(name, (i[0].shape, None))))
        handles.append(
            last.register_forward_hook(lambda _m, _i, o, name=name: shapes.__setitem__(name, (shapes[name][0], o.shape)))
        )
    if example_input is None:
        example_input = example_input_for(model)
    forward_with_hooks(model, example_input, handles)
    result = []
    for name, kind, modules in candidates:
        if name not in shapes or shapes[name][0] != shapes[name][1]:
            continue
        weights = [m.weight.detach() for part in modules for _, m in prunable_layers(model.get_submodule(part))]
        params = sum(w.numel() for w in weights)
        score = float(sum(w.abs().sum() for w in weights)) / max(params, 1)
        result.append(RemovableLayer(name, kind, modules, params, score))
    return result


# ------------------------------------------------------------------------------------------- plans


@dataclass
class GranularityPlan:
    """What a granularity removes from a model at a budget.

    Attributes:
        granularity: one of :data:`GRANULARITIES`.
        budget: target fraction of prunable parameters removed.
        params_total: prunable parameters ``P`` of the dense model.
        params_removed: prunable parameters the plan removes (including next-layer slices).
        units_total: removable units (weights, neurons, filters, layers).
        units_removed: units the plan removes.
        tolerance: the largest ``|achieved - budget|`` the unit size allows when the budget is reachable.
        removed: ``weight`` / ``unstructured``: layer name -> bool tensor of removed weights;
            ``neuron``: hidden linear name -> removed output indices; ``structured``: conv group name ->
            removed channel indices; ``layer``: removable unit name -> :class:`RemovableLayer`.
        max_removable: the most prunable parameters the granularity can remove from the model.
    """

    granularity: str
    budget: float
    params_total: int
    params_removed: int
    units_total: int
    units_removed: int
    tolerance: float
    removed: dict[str, Any] = field(repr=False)
    max_removable: int = 0

    @property
    def achieved(self) -> float:
        """Fraction of prunable parameters the plan removes."""
        return self.params_removed / self.params_total

    @property
    def budget_reached(self) -> bool:
        return abs(self.achieved - self.budget) <= self.tolerance + 1e-12

    def info(self) -> dict[str, Any]:
        """Plain data about the plan (no tensors), for a results table."""
        return {
            "granularity": self.granularity,
            "unit": _UNIT[self.granularity],
            "budget": self.budget,
            "achieved": self.achieved,
            "tolerance": self.tolerance,
            "budget_reached": self.budget_reached,
            "params_prunable_total": self.params_total,
            "params_prunable_removed": self.params_removed,
            "max_removable_fraction": self.max_removable / self.params_total,
            "units_total": self.units_total,
            "units_removed": self.units_removed,
            "removed_layers": sorted(self.removed) if self.granularity == "layer" else None,
        }


@dataclass
class _UnitSpace:
    """Unit groups (filters of a conv group, neurons of a linear) and an exact parameter count model."""

    names: list[str]
    sizes: list[int]
    scores: list[torch.Tensor]
    # per prunable layer: out, in, kernel size, producing group index or -1, consumed group index or -1, block
    layers: list[tuple[int, int, int, int, int, int]]

    def remaining(self, removed: Sequence[int]) -> int:
        total = 0
        for out, inp, k, producer, consumed, block in self.layers:
            o = out if producer < 0 else self.sizes[producer] - removed[producer]
            i = inp if consumed < 0 else (self.sizes[consumed] - removed[consumed]) * block
            total += o * i * k
        return total

    def unit_cost(self, u: int) -> int:
        """Parameters one unit of group ``u`` holds in the dense model (its rows plus next-layer inputs)."""
        one = [0] * len(self.sizes)
        one[u] = 1
        return self.remaining([0] * len(self.sizes)) - self.remaining(one)


def _unit_space(model: nn.Module, granularity: str, example_input: torch.Tensor) -> _UnitSpace:
    structure = find_structure(model, example_input)
    if granularity == "structured":
        groups = structure.conv_groups
        if not groups:
            raise NoRemovableUnitError(f"model {type(model).__name__} has no convolution, so no filter to remove")
        roots = [g.convs[0] for g in groups]
        names = [g.name for g in groups]
        sizes = [g.channels for g in groups]
        scores = [group_l1_norm(model, g).detach().float().cpu() for g in groups]
        producer_of = {conv: i for i, g in enumerate(groups) for conv in g.convs}
        consumers = find_consumers(model, roots, example_input)
    else:  # neuron
        consumers_all = find_consumers(model, list(structure.linears), example_input) if structure.linears else {}
        hidden = [name for name in structure.linears if consumers_all.get(name)]
        if not hidden:
            raise NoRemovableUnitError(
                f"model {type(model).__name__} has no hidden linear layer (linear layers: "
                f"{', '.join(structure.linears) or 'none'}; the last one outputs the classes), so neuron pruning has "
                "nothing to remove; the ResNets are such models -- use vgg16 / vgg16_bn for neuron pruning"
            )
        roots = names = hidden
        sizes = [model.get_submodule(n).out_features for n in hidden]
        scores = [model.get_submodule(n).weight.detach().abs().sum(1).float().cpu() for n in hidden]
        producer_of = {n: i for i, n in enumerate(hidden)}
        consumers = {n: consumers_all[n] for n in hidden}
    consumed_by = {c.name: (roots.index(root), c.block) for root in roots for c in consumers[root]}
    layers = []
    for name, module in prunable_layers(model):
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(f"conv {name} has groups={module.groups}; only groups=1 convolutions are supported")
        w = module.weight
        k = w[0, 0].numel() if w.ndim > 2 else 1
        consumed, block = consumed_by.get(name, (-1, 1))
        layers.append((w.shape[0], w.shape[1], k, producer_of.get(name, -1), consumed, block))
    return _UnitSpace(names, sizes, scores, layers)


def _fit_counts(space: _UnitSpace, target: int) -> list[int]:
    """Per-group removed counts: a shared fraction by bisection, then single-unit moves."""
    total = space.remaining([0] * len(space.sizes))

    def counts(f: float) -> list[int]:
        return [units_removed(n, f, keep_one=True) for n in space.sizes]

    def removed(c: Sequence[int]) -> int:
        return total - space.remaining(c)

    lo, hi = 0.0, math.nextafter(1.0, 0.0)
    if removed(counts(hi)) <= target:
        best = counts(hi)
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if removed(counts(mid)) >= target:
                hi = mid
            else:
                lo = mid
        below, above = counts(lo), counts(hi)
        best = below if abs(removed(below) - target) <= abs(removed(above) - target) else above
    gap = abs(removed(best) - target)
    for _ in range(100_000):
        move = None
        for u, n in enumerate(space.sizes):
            for delta in (1, -1):
                if not 0 <= best[u] + delta <= n - 1:
                    continue
                best[u] += delta
                new_gap = abs(removed(best) - target)
                best[u] -= delta
                if new_gap < gap and (move is None or new_gap < move[2]):
                    move = (u, delta, new_gap)
        if move is None:
            break
        best[move[0]] += move[1]
        gap = move[2]
    return best


def plan_granularity(
    model: nn.Module,
    granularity: str,
    budget: float,
    example_input: torch.Tensor | None = None,
    *,
    strict: bool = False,
) -> GranularityPlan:
    """Decide what ``granularity`` removes from ``model`` to remove the fraction ``budget`` of ``P``.

    Args:
        model: the (trained) dense network; not modified.
        granularity: one of :data:`GRANULARITIES`.
        budget: fraction of prunable parameters to remove, in ``[0, 1)``.
        example_input: an input batch for tracing; default a random 2 x C x 32 x 32 batch.
        strict: raise :class:`BudgetUnreachableError` instead of warning when the budget exceeds what
            the granularity can remove.

    Raises:
        NoRemovableUnitError: the model has no unit of this granularity (``neuron`` in a ResNet, or
            ``layer`` in a model without a shape-keeping block or convolution).
    """
    _check_granularity(granularity)
    if not 0.0 <= budget < 1.0:
        raise ValueError(f"budget must be a fraction of parameters removed in [0, 1), got {budget!r}")
    if example_input is None:
        example_input = example_input_for(model)
    layers = prunable_layers(model)
    total = count_prunable(model)
    target = units_removed(total, budget, keep_one=False)
    if granularity == "weight":
        flat = torch.cat([m.weight.detach().abs().reshape(-1).float().cpu() for _, m in layers])
        parts = top_k_mask(flat, total - target).split([m.weight.numel() for _, m in layers])
        removed = {name: ~part.view(m.weight.shape) for (name, m), part in zip(layers, parts)}
        plan = GranularityPlan(granularity, budget, total, target, total, target, 0.5 / total, removed, total)
    elif granularity == "unstructured":
        removed, count = {}, 0
        for name, m in layers:
            n = m.weight.numel()
            r = units_removed(n, budget, keep_one=False)
            removed[name] = ~top_k_mask(m.weight.detach().abs().float().cpu(), n - r)
            count += r
        plan = GranularityPlan(granularity, budget, total, count, total, count, 0.5 * len(layers) / total, removed, total)
    elif granularity in ("neuron", "structured"):
        space = _unit_space(model, granularity, example_input)
        best = _fit_counts(space, target)
        removed = {}
        for name, n, score, r in zip(space.names, space.sizes, space.scores, best):
            removed[name] = torch.nonzero(~top_k_mask(score, n - r)).reshape(-1).tolist()
        params_removed = total - space.remaining(best)
        tolerance = max(space.unit_cost(u) for u in range(len(space.sizes))) / (2 * total)
        max_removable = total - space.remaining([n - 1 for n in space.sizes])
        plan = GranularityPlan(
            granularity, budget, total, params_removed, sum(space.sizes), sum(best), tolerance, removed, max_removable
        )
    else:  # layer
        units = removable_layers(model, example_input)
        if not units:
            raise NoRemovableUnitError(
                f"model {type(model).__name__} has no residual block without downsample and no shape-keeping "
                "convolution, so layer pruning has nothing to remove"
            )
        removed, count = {}, 0
        for unit in sorted(units, key=lambda u: (u.score, u.name)):
            if abs(target - count - unit.params) < abs(target - count):
                removed[unit.name] = unit
                count += unit.params
        tolerance = max(u.params for u in units) / (2 * total)
        max_removable = sum(u.params for u in units)
        plan = GranularityPlan(granularity, budget, total, count, len(units), len(removed), tolerance, removed, max_removable)
    if not plan.budget_reached:
        message = (
            f"{granularity} pruning removes {plan.achieved:.4f} of the prunable parameters of "
            f"{type(model).__name__}, short of the budget {budget} (it can remove at most "
            f"{plan.max_removable / total:.4f}); compare it at a budget <= that"
        )
        if strict:
            raise BudgetUnreachableError(message)
        warnings.warn(message, stacklevel=2)
    return plan


# --------------------------------------------------------------------------------- masked / compacted


@torch.no_grad()
def mask_granularity(model: nn.Module, plan: GranularityPlan) -> nn.Module:
    """A copy of ``model`` with the plan's units zeroed (or made identity) but every shape kept.

    ``weight`` / ``unstructured``: removed weights are 0. ``neuron``: the unit's weight row and bias are
    0. ``structured``: :func:`helpers.pruning.filters.mask_filters`. ``layer``: a residual block's last
    BatchNorm gets weight and bias 0 (the block outputs ``relu(x) = x``); a convolution becomes an
    identity kernel (``nn.init.dirac_``, bias 0) and its BatchNorm an identity map in eval mode
    (weight ``sqrt(running_var + eps)``, bias ``running_mean``), so in eval mode the masked model's
    logits equal the compacted one's.
    """
    masked = copy.deepcopy(model)
    if plan.granularity in ("weight", "unstructured"):
        for name, gone in plan.removed.items():
            weight = masked.get_submodule(name).weight
            weight.masked_fill_(gone.to(weight.device), 0.0)
    elif plan.granularity == "neuron":
        for name, idxs in plan.removed.items():
            linear = masked.get_submodule(name)
            index = torch.as_tensor(idxs, dtype=torch.long, device=linear.weight.device)
            linear.weight[index] = 0.0
            if linear.bias is not None:
                linear.bias[index] = 0.0
    elif plan.granularity == "structured":
        mask_filters(masked, plan.removed)
    else:
        for unit in plan.removed.values():
            if unit.kind == "residual_block":
                block = masked.get_submodule(unit.name)
                norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
                last = norms[-1] if norms else [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1]
                last.weight.zero_()
                if last.bias is not None:
                    last.bias.zero_()
            else:
                conv = masked.get_submodule(unit.modules[0])
                nn.init.dirac_(conv.weight)
                if conv.bias is not None:
                    conv.bias.zero_()
                for name in unit.modules[1:]:
                    norm = masked.get_submodule(name)
                    if isinstance(norm, nn.BatchNorm2d):
                        norm.weight.copy_((norm.running_var + norm.eps).sqrt())
                        norm.bias.copy_(norm.running_mean)
    return masked


def compact_granularity(model: nn.Module, plan: GranularityPlan, example_input: torch.Tensor | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` without the plan's neurons, filters or layers.

    Filters go through :func:`helpers.pruning.compact` (on the masked twin), neurons through
    torch-pruning's ``prune_linear_out_channels`` (``compact`` handles conv filters only); layers become
    ``nn.Identity``. Raises ``ValueError`` for ``weight`` / ``unstructured``: no compacted form.
    """
    if plan.granularity not in _COMPACTED:
        raise ValueError(
            f"{plan.granularity} pruning keeps every tensor's shape, so it has no compacted form; use "
            "mask_granularity for the model and sparse_state_dict for its size on disk"
        )
    if example_input is None:
        example_input = example_input_for(model)
    if plan.granularity == "structured":
        return compact(mask_granularity(model, plan), example_input)
    small = copy.deepcopy(model)
    if plan.granularity == "neuron":
        graph = build_dependency_graph(small, example_input)
        for name, idxs in plan.removed.items():
            if idxs:
                linear = small.get_submodule(name)
                graph.get_pruning_group(linear, tp.prune_linear_out_channels, idxs=list(idxs)).prune()
        return small
    for unit in plan.removed.values():
        for name in unit.modules:
            small.set_submodule(name, nn.Identity())
    return small


def apply_granularity(
    model: nn.Module,
    granularity: str,
    budget: float,
    example_input: torch.Tensor | None = None,
    *,
    strict: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``model`` at ``granularity`` to the parameter ``budget``, in its deployable form.

    Arguments as :func:`plan_granularity` (``model`` is not modified).

    Returns:
        ``(pruned, info)``: the compacted model (``neuron``, ``structured``, ``layer``) or the masked
        dense model (``weight``, ``unstructured``); ``info`` is :meth:`GranularityPlan.info` plus
        ``format`` (``compacted`` or ``masked-dense``), ``params_prunable_remaining`` and
        ``achieved_measured`` (counted from the returned model: its prunable weights, non-zero ones for
        masked models).
    """
    plan = plan_granularity(model, granularity, budget, example_input, strict=strict)
    compacted = granularity in _COMPACTED
    pruned = compact_granularity(model, plan, example_input) if compacted else mask_granularity(model, plan)
    remaining = count_prunable(pruned, nonzero=not compacted)
    info = plan.info()
    info["format"] = "compacted" if compacted else "masked-dense"
    info["params_prunable_remaining"] = remaining
    info["achieved_measured"] = 1.0 - remaining / plan.params_total
    return pruned, info


# ------------------------------------------------------------------------------------ sparse storage


def _csr_int32(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` (2-D, dense) as a CSR tensor with int32 indices."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        csr = matrix.to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32), csr.values(), matrix.shape,
            check_invariants=False,
        )  # fmt: skip


@torch.no_grad()
def sparse_state_dict(model: nn.Module) -> dict[str, Any]:
    """``model``'s state with conv / linear weights in CSR (int32 indices) wherever that is smaller (8 bytes
    per non-zero plus 4 per row: below about 50 % density).

    A weight ``[out, ...]`` is stored as a 2-D ``torch.sparse_csr`` matrix ``[out, prod(...)]``; the
    original shapes are kept under ``shapes``. Loadable with ``torch.load(weights_only=True)``;
    :func:`dense_state_dict` turns it back into a regular state dict.

    Returns:
        ``{"format": "csr-int32", "state": {...}, "shapes": {key: shape}}``.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shapes = {}
    for name, module in prunable_layers(model):
        key = f"{name}.weight"
        w = state[key]
        matrix = w.reshape(w.shape[0], -1)
        nnz = int(torch.count_nonzero(matrix))
        if (matrix.shape[0] + 1) * 4 + nnz * 8 < w.numel() * w.element_size():  # CSR bytes < dense bytes
            state[key] = _csr_int32(matrix)
            shapes[key] = list(w.shape)
    return {"format": SPARSE_FORMAT, "state": state, "shapes": shapes}


def dense_state_dict(payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The regular state dict of a :func:`sparse_state_dict` payload."""
    if payload.get("format") != SPARSE_FORMAT:
        raise ValueError(f"payload format {payload.get('format')!r} is not {SPARSE_FORMAT!r}; write it with sparse_state_dict")
    shapes = payload["shapes"]
    return {key: v.to_dense().reshape(shapes[key]) if key in shapes else v for key, v in payload["state"].items()}


def serialized_size_bytes(obj: Any) -> int:
    """Bytes ``torch.save(obj)`` writes (the size of the file on disk)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def to_sparse_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (for inference) whose ``nn.Linear`` layers multiply with CSR weights."""
    sparse = copy.deepcopy(model).eval()
    for name, module in list(sparse.named_modules()):
        if isinstance(module, nn.Linear):
            sparse.set_submodule(name, SparseLinear.from_linear(module))
    return sparse


@torch.no_grad()
def count_nonzero_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """MACs of one forward pass that multiply a non-zero weight (what a sparse kernel would do).

    Conv: ``output positions x non-zero weights`` (padding taps included); linear: ``rows x non-zero
    weights``. Compare :func:`helpers.pruning.count_macs`, which counts every weight.
    """
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() // module.weight.shape[0] * int(torch.count_nonzero(module.weight))  # positions x nnz

    handles = [m.register_forward_hook(hook) for _, m in prunable_layers(model)]
    forward_with_hooks(model, example_input, handles)
    return int(total)


def measure_granularity(
    model: nn.Module,
    granularity: str,
    images: torch.Tensor,
    *,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    num_classes: int | None = None,
    samples: int = 100,
    warmup: int = 10,
    threads: int = 1,
    eval_batch_size: int = 256,
) -> dict[str, Any]:
    """Size on disk, CPU latency per sample, MACs and accuracy of a pruned (or the dense) model.

    Args:
        model: the model as :func:`apply_granularity` returns it, or the dense model.
        granularity: one of :data:`GRANULARITIES`, or ``dense`` for the baseline.
        images: CPU images ``[N, C, H, W]`` for timing (cycled, batch 1) and MAC counting (the first one).
        test: optional ``(images, labels)`` for accuracy.
        num_classes: classes (default: the last linear layer's outputs).
        samples, warmup, threads: timed images, untimed batches first and torch CPU threads
            (:func:`helpers.measure.benchmark_inference`).
        eval_batch_size: batch size for accuracy.

    Returns:
        ``granularity``; ``size_mb`` of the file in ``size_format`` (``dense`` for the baseline,
        ``compacted`` for neuron / structured / layer, ``csr-int32`` for weight / unstructured -- or
        ``dense`` where no weight is sparse enough for CSR to be smaller), ``size_sparse_tensors`` (weights
        stored in CSR) and ``size_mb_dense_file`` (the plain ``torch.save`` of the state dict, for comparison);
        ``latency_ms_mean`` / ``_p50`` / ``_p95`` with dense kernels (``latency_format``:
        ``dense``, ``compacted`` or ``masked-dense``) and ``latency_ms_sparse_linear`` (weight /
        unstructured: linear layers in CSR; NaN otherwise); ``macs`` and ``macs_nonzero`` (one image);
        ``params_total``, ``params_nonzero``, ``params_prunable``, ``params_prunable_nonzero``;
        ``accuracy`` and ``loss`` (NaN without ``test``).
    """
    _check_granularity(granularity, ("dense",))
    model = model.cpu().eval()
    images = images.cpu()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dense_bytes = serialized_size_bytes(state)
    sparse = granularity in ("weight", "unstructured")
    sparse_tensors = 0
    if sparse:
        payload = sparse_state_dict(model)
        sparse_tensors = len(payload["shapes"])
        size_bytes = serialized_size_bytes(payload)
        size_format = SPARSE_FORMAT if sparse_tensors else "dense"
        latency_format = "masked-dense"
    else:
        size_bytes = dense_bytes
        size_format = latency_format = "dense" if granularity == "dense" else "compacted"

    def time_it(timed: nn.Module) -> dict[str, float]:
        return benchmark_inference(lambda: timed, images, batch_size=1, samples=samples, warmup=warmup, threads=threads)

    timing = time_it(model)
    sparse_latency = time_it(to_sparse_linear(model))["latency_ms_mean"] if sparse else math.nan
    accuracy = loss = math.nan
    if test is not None:
        classes = num_classes or [m for _, m in prunable_layers(model) if isinstance(m, nn.Linear)][-1].out_features
        metrics, _ = evaluate(model, test[0].cpu(), test[1].cpu(), batch_size=eval_batch_size, num_classes=classes)
        accuracy, loss = metrics["accuracy"], metrics["loss"]
    params = list(model.parameters())
    return {
        "granularity": granularity,
        "size_mb": size_bytes / 2**20,
        "size_format": size_format,
        "size_mb_dense_file": dense_bytes / 2**20,
        "size_sparse_tensors": sparse_tensors,
        "latency_ms_mean": timing["latency_ms_mean"],
        "latency_ms_p50": timing["latency_ms_p50"],
        "latency_ms_p95": timing["latency_ms_p95"],
        "latency_format": latency_format,
        "latency_ms_sparse_linear": sparse_latency,
        "threads": threads,
        "macs": count_macs(model, images[:1]),
        "macs_nonzero": count_nonzero_macs(model, images[:1]),
        "params_total": sum(p.numel() for p in params),
        "params_nonzero": sum(int(torch.count_nonzero(p.detach())) for p in params),
        "params_prunable": count_prunable(model),
        "params_prunable_nonzero": count_prunable(model, nonzero=True),
        "accuracy": accuracy,
        "loss": loss,
    }
