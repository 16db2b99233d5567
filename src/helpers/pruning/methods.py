"""The pruning methods of the study, as objects whose hooks a training loop calls.

Methods (Douzandeh Zenoozi et al. 2025; the scenario sets the fractions removed):

- ``dense``: no pruning, the baseline; every hook is a no-op.
- ``pre_training``: keep the largest-L1 filters and largest-|w| linear weights at initialisation;
  train with the mask fixed.
- ``in_training``: a uniformly random initial mask with exact per-layer counts; at the end of every
  epoch but the last, drop the ``swap_fraction`` (default 0.2) of each layer's *active* filters /
  weights with the smallest magnitude (filter: group-summed L1; weight: |w|) and regrow as many,
  chosen uniformly among the units inactive before the drop (so a swap always changes the mask).
- ``set``: Sparse Evolutionary Training (Mocanu et al., *Nature Communications* 9, 2383, 2018): the
  same evolution from an Erdős–Rényi initial mask. As the paper says initialisation is the only
  difference from In-Training, by default (``set_allocation="scenario"``) every layer keeps the
  scenario's fraction, as an Erdős–Rényi random graph (:func:`~helpers.pruning.masks.er_graph_masks`);
  the extension ``set_allocation="erk"`` (ER / ERK densities under the same budget in weights,
  :func:`~helpers.pruning.masks.erk_allocation`) keeps the early convs nearly dense: its MACs differ, so a
  comparison must show them.
- ``post_training``: train dense, then at :meth:`PruningMethod.on_train_end` keep the largest-L1
  filters / largest-|w| weights; the study's ``finetune_epochs`` (default 0, the paper's protocol)
  trains further with the mask enforced.

A training loop calls the hooks in the order ``on_init``, ``after_step``, ``on_epoch_end``, ``on_train_end``.

Regrowth re-initialises a unit, never giving back its stale value: conv filters from torchvision's
Kaiming-normal conv init (fan-out, ReLU gain), bias 0, the following BatchNorm reset to weight 1, bias
0, running mean 0, running variance 1; linear weights from ``nn.Linear``'s default U(-1/sqrt(fan_in),
1/sqrt(fan_in)) (torchvision's VGG classifier starts from N(0, 0.01), of the same order).
``regrow="zeros"`` regrows at zero instead (as RigL, Evci et al. 2020). The optimizer's per-weight
state (Adam's moments, SGD's momentum) of every dropped or regrown entry is zeroed at swap time, and
masks are re-applied after every step, so optimizer state never brings a removed weight back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .compact import compact_with_map
from .masks import MaskSet, er_graph_masks, erk_keep_counts, group_l1_norm, l1_masks, random_masks, top_k_mask
from .scenarios import Scenario, parse_scenario, units_removed
from .structure import channel_tensors, find_structure

__all__ = [
    "METHODS",
    "REGROW",
    "make_method",
    "method_class",
    "PruningMethod",
    "DenseMethod",
    "PreTrainingMethod",
    "InTrainingMethod",
    "PostTrainingMethod",
    "SetMethod",
    "UnknownMethodError",
    "SET_ALLOCATIONS",
    "CompactedTraining",
]

METHODS: tuple[str, ...] = ("dense", "pre_training", "in_training", "post_training", "set")
REGROW: tuple[str, ...] = ("reinit", "zeros")
#: ``set``'s per-layer budgets: the scenario's fraction in every layer (the paper) or ER/ERK densities.
SET_ALLOCATIONS: tuple[str, ...] = ("scenario", "erk")


class UnknownMethodError(ValueError):
    """A method name that is not one of :data:`METHODS`."""


class PruningMethod:
    """Base class: holds the scenario, the masks and the random generator; subclasses fill the hooks.

    Args:
        scenario: fractions removed per layer type.
        swap_fraction: fraction of each layer's active units swapped per epoch (``in_training``, ``set``).
        seed: seeds the method's own CPU generator (initial random masks, regrowth choice and values).
        regrow: ``"reinit"`` (fresh initial values) or ``"zeros"``.

    Class attributes (what the training loop asks instead of matching names):
        prunes: the method holds masks (every method but ``dense``).
        evolves_mask: its mask changes between epochs (drop and regrow: ``in_training``, ``set``).
        prunes_after_training: it prunes a trained dense model in :meth:`on_train_end` (``post_training``).
    """

    name = "base"
    prunes = True
    evolves_mask = False
    prunes_after_training = False

    def __init__(
        self,
        scenario: Scenario,
        *,
        swap_fraction: float = 0.2,
        seed: int = 0,
        regrow: str = "reinit",
    ) -> None:
        self.scenario = scenario
        self.swap_fraction = swap_fraction
        self.seed = seed
        self.regrow = regrow
        self.generator = torch.Generator().manual_seed(seed)
        self.masks: MaskSet | None = None
        self._pending_masks: dict | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scenario={self.scenario.name!r}, seed={self.seed})"

    # -- hooks ------------------------------------------------------------------------------------
    def on_init(self, model: nn.Module) -> None:
        """Called once on the freshly built model, before the optimizer exists."""

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Called after every ``optimizer.step()``: re-applies the masks (no-op while unpruned)."""
        if self.restore_masks(model) is not None:
            self.masks.apply(model)

    def on_epoch_end(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int, num_epochs: int
    ) -> dict[str, Any]:
        """Called after every epoch (``epoch`` is 0-based). Returns swap statistics (empty if none)."""
        return {}

    def on_train_end(self, model: nn.Module) -> None:
        """Called after the last epoch."""
        self.apply(model)

    # -- helpers ----------------------------------------------------------------------------------
    def apply(self, model: nn.Module) -> None:
        """Zero the removed weights of ``model`` now (e.g. after loading a checkpoint into it)."""
        self.after_step(model, None)

    def _set_masks(self, model: nn.Module, masks: MaskSet) -> None:
        self.masks = masks
        self._pending_masks = None
        masks.bind(model)
        masks.apply(model)

    def restore_masks(self, model: nn.Module) -> MaskSet | None:
        """The method's masks, first rebuilt on ``model`` from a loaded state if :meth:`load_state_dict`
        left them pending (they are otherwise restored at the next hook call)."""
        if self._pending_masks is not None:
            self._set_masks(model, MaskSet.from_state_dict(find_structure(model), self._pending_masks))
        return self.masks

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Masks, generator state and settings; plain tensors and builtins (``weights_only=True`` safe)."""
        return {
            "method": self.name,
            "scenario": {"conv": self.scenario.conv, "linear": self.scenario.linear},
            "swap_fraction": self.swap_fraction,
            "seed": self.seed,
            "regrow": self.regrow,
            "generator": self.generator.get_state(),
            "masks": self.masks.state_dict() if self.masks is not None else self._pending_masks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the masks are applied at the next hook call."""
        if state["method"] != self.name:
            raise ValueError(f"state of method {state['method']!r} cannot be loaded into method {self.name!r}")
        scenario = parse_scenario(dict(state["scenario"]))
        if scenario != self.scenario:
            raise ValueError(f"state of scenario {scenario.name!r} cannot be loaded into scenario {self.scenario.name!r}")
        self.generator.set_state(state["generator"])
        self.masks = None
        self._pending_masks = state["masks"]


class DenseMethod(PruningMethod):
    """No pruning: the baseline."""

    name = "dense"
    prunes = False


class PreTrainingMethod(PruningMethod):
    """L1 masks taken at initialisation, fixed during training."""

    name = "pre_training"

    def on_init(self, model: nn.Module) -> None:
        self._set_masks(model, l1_masks(model, find_structure(model), self.scenario))


class PostTrainingMethod(PruningMethod):
    """Dense training, then L1 pruning of the trained model at :meth:`on_train_end`."""

    name = "post_training"
    prunes_after_training = True

    def on_train_end(self, model: nn.Module) -> None:
        self._set_masks(model, l1_masks(model, find_structure(model), self.scenario))


class InTrainingMethod(PruningMethod):
    """Random exact-count initial masks, evolved at every epoch end but the last."""

    name = "in_training"
    evolves_mask = True

    def on_init(self, model: nn.Module) -> None:
        self._set_masks(model, random_masks(model, find_structure(model), self.scenario, self.generator))

    def on_epoch_end(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int, num_epochs: int
    ) -> dict[str, Any]:
        if self.restore_masks(model) is None:
            raise RuntimeError(f"{self.name}: on_epoch_end called before on_init; call on_init(model) first")
        if not self.masks.is_bound_to(model):
            self.masks.bind(model)
        stats = {"filters_swapped": 0, "weights_swapped": 0}
        if epoch < num_epochs - 1 and self.swap_fraction != 0:
            stats = _swap(model, optimizer, self.masks, self.swap_fraction, self.generator, self.regrow)
        self.masks.apply(model)
        return stats


class SetMethod(InTrainingMethod):
    """Sparse Evolutionary Training: an Erdős–Rényi initial mask, then the in-training evolution.

    Args:
        allocation: ``"scenario"`` (every layer keeps the scenario's fraction; the paper) or ``"erk"``
            (ER / ERK per-layer densities under the same budget in weights; an extension).
    """

    name = "set"

    def __init__(self, scenario: Scenario, *, allocation: str = "scenario", **kwargs: Any) -> None:
        super().__init__(scenario, **kwargs)
        self.allocation = allocation

    def on_init(self, model: nn.Module) -> None:
        structure = find_structure(model)
        if self.allocation == "erk":
            keep = erk_keep_counts(model, self.scenario, structure)
            masks = random_masks(model, structure, self.scenario, self.generator, keep=keep)
        else:
            masks = er_graph_masks(model, structure, self.scenario, self.generator)
        self._set_masks(model, masks)


class CompactedTraining:
    """Train a pruning method's physically compacted network: the one compacted form of :func:`helpers.train.fit`.

    :meth:`build` compacts the full-size model and cuts its optimizer's state to the small network, whose
    steps re-apply the method's linear masks cut to the small shapes (and the zero channel a fully-pruned
    group keeps); after the epoch :meth:`write_back` puts its weights back. The full-size model stays the
    record: validation, the final model and every checkpoint (with the full-size optimizer state,
    :meth:`optimizer_state`) read it, whatever the method. :func:`~helpers.train.fit` counts building and
    writing back as training time (``setup_time_s``).

    A fixed mask (``pre_training``, ``post_training`` fine-tuning) is compacted once: exactly masked
    training, where the weights that read a removed (zero) filter get zero gradients (equal up to
    floating-point summation order; ``tests/test_compacted_training.py``). The small optimizer is the
    live state; the full-size one holds it only while a checkpoint is written. An evolving mask
    (``in_training``, ``set``) writes the optimizer state back after every epoch, swaps on the full-size
    model and is compacted anew. One difference by construction: weights that read a removed filter stay
    exactly where they were, whereas in masked training Adam's decaying momentum still moves them a
    little, so a regrown filter's readers resume from slightly different values.

    Args:
        method: the method, its masks set on the full-size model (``on_init`` / ``on_train_end`` done).
        example_input: an input batch for tracing (two images suffice).
        make_optimizer: builds the small network's optimizer, as the full-size one was built.
    """

    def __init__(self, method: PruningMethod, example_input: torch.Tensor, make_optimizer: Any) -> None:
        self.method, self.example_input, self.make_optimizer = method, example_input, make_optimizer

    def build(self, full: nn.Module, optimizer: torch.optim.Optimizer):
        """``(small, small_optimizer, hooks)`` for the next epoch, from ``full`` and its optimizer's state;
        ``hooks.after_step`` enforces the masks on ``small``."""
        if self.method.restore_masks(full) is None:
            raise ValueError(f"{self.method.name}: compacted training needs the method's masks; call on_init first")
        small, cmap = compact_with_map(full, self.example_input, masks=self.method.masks)
        hooks = _SmallMasks(self.method, cmap, full, small)
        small_opt = self.make_optimizer(small)
        names = dict(full.named_parameters())
        for name, param in small.named_parameters():
            state = optimizer.state.get(names[name])
            if state:
                small_opt.state[param] = {
                    key: cmap.shrink(name, value).clone() if _per_entry(value, names[name]) else _copy(value)
                    for key, value in state.items()
                }
        if not self.method.evolves_mask:
            optimizer.state.clear()  # a fixed mask's small optimizer is the live state from now on
        return small, small_opt, hooks

    @torch.no_grad()
    def write_back(self, full: nn.Module, optimizer: torch.optim.Optimizer, small: nn.Module,
                   small_opt: torch.optim.Optimizer, hooks: _SmallMasks, *, state: bool | None = None) -> None:  # fmt: skip
        """Weights of ``small`` back into ``full``, masks re-applied; and its optimizer state into
        ``optimizer`` when ``state`` (default: when the mask evolves, whose swap and rebuild read it)."""
        hooks.cmap.expand_into(full, small)
        self.method.apply(full)
        if not (self.method.evolves_mask if state is None else state):
            return
        names = dict(full.named_parameters())
        for name, param in small.named_parameters():
            entries = small_opt.state.get(param)
            if not entries:
                continue
            target_param = names[name]
            target = optimizer.state.setdefault(target_param, {})
            for key, value in entries.items():
                if _per_entry(value, param):
                    into = target.get(key)
                    if into is None or into.shape != target_param.shape:
                        into = target[key] = torch.zeros_like(target_param)
                    hooks.cmap.put(name, into, value)
                else:
                    target[key] = _copy(value)

    def optimizer_state(self, full: nn.Module, optimizer: torch.optim.Optimizer, small: nn.Module,
                        small_opt: torch.optim.Optimizer, hooks: _SmallMasks) -> dict[str, Any]:  # fmt: skip
        """The full-size optimizer's ``state_dict`` for a checkpoint. An evolving mask's was written back
        after the epoch; a fixed mask's is written for the checkpoint and then dropped from ``optimizer``
        (the returned dict keeps it), so that training holds it once."""
        if self.method.evolves_mask:
            return optimizer.state_dict()
        self.write_back(full, optimizer, small, small_opt, hooks, state=True)
        packed = optimizer.state_dict()
        optimizer.state.clear()
        return packed

    def load_compacted(self, full: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                       optimizer_state: dict[str, Any] | None) -> None:  # fmt: skip
        """Restore a checkpoint that holds the compacted network (a fixed mask's, as written before
        2026-12-03) into ``full`` and ``optimizer``; the method's state must be loaded first."""
        small, small_opt, hooks = self.build(full, optimizer)
        small.load_state_dict(model_state)
        if optimizer_state is not None:
            small_opt.load_state_dict(optimizer_state)
        self.write_back(full, optimizer, small, small_opt, hooks, state=True)


class _SmallMasks:
    """A method's masks cut to its compacted network by the :class:`~helpers.pruning.compact.CompactionMap`:
    what each step on the small network re-applies (tensors whose zeros compaction removed are skipped)."""

    def __init__(self, method: PruningMethod, cmap: Any, full: nn.Module, small: nn.Module) -> None:
        self.cmap = cmap
        masks = method.masks
        masks.bind(full)
        names = {id(t): n for n, t in full.state_dict(keep_vars=True).items()}
        targets = small.state_dict(keep_vars=True)
        self._params: list[torch.Tensor] = []
        self._factors: list[torch.Tensor] = []
        for param, factor in masks.bound_tensors():
            name = names[id(param)]
            cut = cmap.shrink(name, factor)
            if bool((cut == 1).all()):
                continue
            self._params.append(targets[name])
            self._factors.append(cut.to(targets[name]))

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        if self._params:
            torch._foreach_mul_(self._params, self._factors)


def _per_entry(value: Any, param: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == param.shape and value.dim() > 0


def _copy(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else value


_CLASSES = {cls.name: cls for cls in (DenseMethod, PreTrainingMethod, InTrainingMethod, PostTrainingMethod, SetMethod)}


def make_method(
    name: str,
    scenario: str | dict | Scenario | None,
    *,
    swap_fraction: float = 0.2,
    seed: int = 0,
    regrow: str = "reinit",
    set_allocation: str = "scenario",
) -> PruningMethod:
    """Build a pruning method.

    Args:
        name: one of :data:`METHODS`.
        scenario: a scenario name, ``{conv: x, linear: y}`` or :class:`Scenario`; ``None`` only for ``dense``.
        swap_fraction: fraction of active units swapped per epoch, in ``[0, 1]`` (``in_training``, ``set``).
        seed: seed of the method's random generator.
        regrow: ``"reinit"`` or ``"zeros"``: the values regrown weights start from.
        set_allocation: ``set``'s per-layer budgets, one of :data:`SET_ALLOCATIONS` (ignored by the others).

    Raises:
        UnknownMethodError: ``name`` is not a method.
        UnknownScenarioError, InvalidSparsityError: a bad scenario.
        ValueError: a bad ``swap_fraction`` or ``regrow``.
    """
    cls = method_class(name)
    if scenario is None:
        if name != "dense":
            raise ValueError(f"method {name!r} needs a scenario; give one of uniform, mixed, linear_only or {{conv: x, linear: y}}")
        scenario = Scenario(0.0, 0.0)
    scenario = parse_scenario(scenario)
    if isinstance(swap_fraction, bool) or not isinstance(swap_fraction, (int, float)) or not 0 <= swap_fraction <= 1:
        raise ValueError(f"swap_fraction {swap_fraction!r} is outside [0, 1]; the default is 0.2")
    if regrow not in REGROW:
        raise ValueError(f"unknown regrow {regrow!r}; expected one of {', '.join(REGROW)}")
    if set_allocation not in SET_ALLOCATIONS:
        raise ValueError(f"unknown set_allocation {set_allocation!r}; expected one of {', '.join(SET_ALLOCATIONS)}")
    extra = {"allocation": set_allocation} if name == "set" else {}
    return cls(scenario, swap_fraction=float(swap_fraction), seed=seed, regrow=regrow, **extra)


def method_class(name: str) -> type[PruningMethod]:
    """The class of method ``name``: its properties (``prunes``, ``evolves_mask``, ``prunes_after_training``)
    without building it.

    Raises:
        UnknownMethodError: ``name`` is not one of :data:`METHODS`.
    """
    if name not in _CLASSES:
        raise UnknownMethodError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return _CLASSES[name]


# -- evolution (in_training, set) ------------------------------------------------------------------
def _swap_count(active: int, inactive: int, swap_fraction: float) -> int:
    return min(units_removed(active, swap_fraction, keep_one=False), inactive)


def _drop_and_grow(active: torch.Tensor, magnitude: torch.Tensor, n: int, generator: torch.Generator):
    """Drop the ``n`` weakest active units, grow ``n`` random previously-inactive ones."""
    # In place on fresh tensors: over VGG16's 103 M-weight layer every full-size pass costs ~0.1 s.
    drop = top_k_mask(torch.neg(magnitude.float()).masked_fill_(~active, -math.inf), n)  # inactive: never dropped
    chance = torch.rand(active.shape, generator=generator).to(active.device)
    grow = top_k_mask(chance.masked_fill_(active, -1.0), n)
    return drop, grow


def _reset_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, index: torch.Tensor) -> None:
    state = optimizer.state.get(param) if optimizer is not None else None
    if not state:
        return
    if index.dim() < param.dim():  # a per-filter mask: broadcast over each filter's weights
        index = index.reshape(index.shape + (1,) * (param.dim() - index.dim()))
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(index, 0)  # vectorised; a boolean-index write scans and scatters


def _nonzero(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Redraw the (rare, about 1e-7 per value) exact zeros of a standard-normal draw."""
    zero = values == 0
    while zero.any():
        values[zero] = torch.randn(int(zero.sum()), generator=generator)
        zero = values == 0
    return values


@torch.no_grad()
def _swap(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    masks: MaskSet,
    swap_fraction: float,
    generator: torch.Generator,
    regrow: str,
) -> dict[str, int]:
    filters_swapped = weights_swapped = 0
    for group in masks.structure.conv_groups:
        mask = masks.channel[group.name]
        active = mask > 0
        k = int(torch.count_nonzero(active))  # count_nonzero: ~8x faster than a bool sum
        n = _swap_count(k, group.channels - k, swap_fraction)
        if n == 0:
            continue
        drop, grow = _drop_and_grow(active, group_l1_norm(model, group), n, generator)
        mask.copy_((active & ~drop) | grow)  # in place: the bound views see the new mask
        changed = drop | grow
        for conv_name, norm_name in zip(group.convs, group.norms):
            conv = model.get_submodule(conv_name)
            if regrow == "reinit":
                fan_out = conv.out_channels * conv.weight[0, 0].numel()
                fresh = _nonzero(torch.randn((n, *conv.weight.shape[1:]), generator=generator), generator)
                fresh *= math.sqrt(2.0 / fan_out)
                conv.weight[grow] = fresh.to(conv.weight)
            else:
                conv.weight[grow] = 0
            if conv.bias is not None:
                conv.bias[grow] = 0
            if norm_name is not None:
                norm = model.get_submodule(norm_name)
                if norm.weight is not None:
                    norm.weight[grow] = 1
                    norm.bias[grow] = 0
                if norm.running_mean is not None:
                    norm.running_mean[grow] = 0
                    norm.running_var[grow] = 1
            for tensor in channel_tensors(model, conv_name, norm_name):
                _reset_optimizer_state(optimizer, tensor, changed)
        filters_swapped += n
    for name in masks.structure.linears:
        linear = model.get_submodule(name)
        mask = masks.weight[name]
        k = int(torch.count_nonzero(mask))
        n = _swap_count(k, mask.numel() - k, swap_fraction)
        if n == 0:
            continue
        bound = 1.0 / math.sqrt(linear.in_features)
        if _swap_large_linear(linear.weight, mask, k, n, optimizer, generator, bound if regrow == "reinit" else None):
            weights_swapped += n
            continue
        active = mask > 0
        drop, grow = _drop_and_grow(active, linear.weight.detach().abs(), n, generator)
        mask.copy_((active & ~drop) | grow)
        if regrow == "reinit":
            linear.weight.masked_scatter_(grow, _fresh_linear(n, bound, generator).to(linear.weight))  # in order
        else:
            linear.weight.masked_fill_(grow, 0)
        _reset_optimizer_state(optimizer, linear.weight, drop | grow)
        weights_swapped += n
    return {"filters_swapped": filters_swapped, "weights_swapped": weights_swapped}


def _fresh_linear(n: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of U(-bound, bound) without its (probability 2**-24) exact zero, which would break the count."""
    magnitude = 1.0 - torch.rand(n, generator=generator)  # in (0, 1]
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    return magnitude * sign * bound


# -- the swap of a large linear layer without full-size temporaries --------------------------------
# Over VGG16's 103 M-weight layer every full-size temporary costs a pass plus its page faults (a new
# 412 MB float tensor took 0.75 s on this project's AMD CPU), and the plain swap made about ten, plus a
# full-size random draw. Above _LARGE weights the swap instead reads the weight and mask in chunks,
# ranks only the candidates of a sampled bracket, and draws random positions by rejection: the same
# drop set (ties to the lower index), a uniformly random regrowth, and every write in place.
_LARGE = 1 << 21
_CHUNK = 1 << 22
_BRACKET_SAMPLE = 1 << 18


@torch.no_grad()
def _swap_large_linear(
    weight: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    n: int,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
    bound: float | None,
) -> bool:
    """Swap ``n`` of the ``k`` active weights of a large layer in place; ``False`` (nothing changed) when
    the layer is small, nearly dense, of a mask dtype that cannot hold the draw order, or the sampled
    bracket missed: the caller then takes the plain path."""
    total = mask.numel()
    inactive = total - k
    if total <= _LARGE or mask.dtype not in (torch.float32, torch.float64) or not mask.is_contiguous():
        return False
    if n * total / inactive > total // 4:  # too few inactive weights for rejection sampling to pay
        return False
    w, m = weight.detach().reshape(-1), mask.reshape(-1)
    drop = _weakest_active(w, m, k, n)
    if drop is None:
        return False
    grow = _grow_uniform(m, n, inactive, generator)  # marks them active in m
    m[drop] = 0
    w[grow] = _fresh_linear(n, bound, generator).to(w) if bound is not None else 0
    state = optimizer.state.get(weight) if optimizer is not None else None
    for value in (state or {}).values():
        if torch.is_tensor(value) and value.shape == weight.shape:
            flat = value.view(-1)
            flat[drop] = 0
            flat[grow] = 0
    return True


def _weakest_active(w: torch.Tensor, m: torch.Tensor, k: int, n: int) -> torch.Tensor | None:
    """Flat indices (ascending) of the ``n`` active entries of smallest ``|w|``, ties to the lower index
    (as :func:`~helpers.pruning.masks.top_k_mask` over all of them), or ``None`` if the bracket missed."""
    sampler = torch.Generator().manual_seed(0)
    where = torch.randint(w.numel(), (_BRACKET_SAMPLE,), generator=sampler).to(w.device)
    sample = w[where].abs()[m[where] > 0]
    if sample.numel() < 1024:
        return None
    fraction = n / k
    slack = 5 * math.sqrt(fraction * (1 - fraction) / sample.numel()) + 2 / sample.numel()
    rank = math.ceil((fraction + slack) * sample.numel())
    if rank >= sample.numel():
        return None
    threshold = torch.kthvalue(sample.float(), rank).values.to(w.dtype)
    parts = []
    for start in range(0, w.numel(), _CHUNK):
        hit = (w[start:start + _CHUNK].abs() <= threshold) & (m[start:start + _CHUNK] > 0)
        parts.append(torch.nonzero(hit).reshape(-1) + start)
    candidates = torch.cat(parts)  # every active entry at or below the threshold, ascending
    if candidates.numel() < n:
        return None
    return candidates[top_k_mask(w[candidates].abs().float().neg_(), n)]


def _grow_uniform(m: torch.Tensor, n: int, inactive: int, generator: torch.Generator) -> torch.Tensor:
    """Flat indices of ``n`` distinct entries drawn uniformly among the ``inactive`` zeros of ``m``, each
    set to 1 in ``m``. Sequential rejection sampling, vectorised: positions are drawn at random, those
    already active or already drawn are rejected, and the first ``n`` survivors in draw order are kept.
    The first draw of each position is found by scattering the draw order into ``m`` with ``amin``
    (deterministic, no sort); ``m`` then holds 0 / 1 again."""
    total, picked, have = m.numel(), [], 0
    while have < n:
        need, free = n - have, inactive - have
        draws = torch.randint(total, (int(need * total / free * 1.1) + 64,), generator=generator).to(m.device)
        draws = draws[m[draws] == 0][: (1 << 24) - 1]  # float32 holds the draw order exactly below 2**24
        order = torch.arange(1, draws.numel() + 1, dtype=m.dtype, device=m.device)
        m.scatter_reduce_(0, draws, order, "amin", include_self=False)
        first = draws[m[draws] == order]  # distinct, in draw order
        m[first[need:]] = 0
        m[first[:need]] = 1
        picked.append(first[:need])
        have += min(need, first.numel())
    return torch.cat(picked)
