"""Which layers a pruning method touches, and which of them must be pruned together.

Every ``nn.Conv2d`` is pruned by output filter and every ``nn.Linear`` by individual weight, the
classifier's output layer included (the paper prunes "every linear layer").

Convolutions whose outputs are summed by a residual add (He et al. 2016; in a torchvision ResNet each
stage's block-final and ``downsample`` convs, and ResNet18's stem) share their channels: a filter
removed from only one of them stays alive through the identity path. They form one *conv group*,
which removes the same channel indices, ranked by the group's summed filter L1 norm, and swaps
together: torch-pruning's dependency groups (Fang et al., *DepGraph*, CVPR 2023), read from its
``DependencyGraph`` rather than layer names, so any model it can trace works. Grouping leaves L1 and
random masks' per-layer counts unchanged, only *which* channels go; in SET a group shares one density
(:func:`helpers.pruning.masks.erk_allocation` reports both).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["ConvGroup", "Structure", "find_structure", "NoPrunableLayerError", "example_input_for", "forward_with_hooks"]


class NoPrunableLayerError(ValueError):
    """A model with no ``nn.Conv2d`` and no ``nn.Linear`` layer."""


@dataclass(frozen=True)
class ConvGroup:
    """Convolutions that share output channels.

    Attributes:
        name: the first member's module name (used as the group's key).
        convs: module names of the member convolutions, in model order.
        norms: for each member, the name of the BatchNorm directly after it, or ``None``.
        channels: the shared number of output channels.
    """

    name: str
    convs: tuple[str, ...]
    norms: tuple[str | None, ...]
    channels: int


@dataclass(frozen=True)
class Structure:
    """The prunable layers of a model.

    Attributes:
        conv_groups: the conv groups, in model order (a conv not coupled to any other is a group of one).
        linears: module names of the linear layers, in model order.
        output_layer: name of the linear layer that produces the logits (the last one), or ``None``.
    """

    conv_groups: tuple[ConvGroup, ...]
    linears: tuple[str, ...]
    output_layer: str | None

    @property
    def convs(self) -> tuple[str, ...]:
        return tuple(name for group in self.conv_groups for name in group.convs)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, Structure]" = weakref.WeakKeyDictionary()


def example_input_for(model: nn.Module, batch_size: int = 2, size: int = 32) -> torch.Tensor:
    """A random input batch for ``model``: its first conv's input channels, ``size`` x ``size`` pixels."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(model.parameters())
    if first is None:  # a linear model: one input vector per sample
        linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return torch.randn(batch_size, linear.in_features, device=param.device, dtype=param.dtype)
    return torch.randn(batch_size, first.in_channels, size, size, device=param.device, dtype=param.dtype)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's training flag is restored, whatever it raises."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


@torch.no_grad()
def forward_with_hooks(model: nn.Module, example_input: torch.Tensor, handles: list) -> None:
    """One :func:`eval_mode` forward of ``example_input`` for the hooks in ``handles``, removed after."""
    try:
        with eval_mode(model):
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()


def channel_tensors(model: nn.Module, conv_name: str, norm_name: str | None) -> list[torch.Tensor]:
    """The tensors indexed by a conv's output channel along dim 0 that decide its output: the conv's weight
    and bias and the following BatchNorm's affine weight and bias, those that exist."""
    conv = model.get_submodule(conv_name)
    norm = model.get_submodule(norm_name) if norm_name is not None else None
    tensors = [conv.weight, conv.bias] + ([norm.weight, norm.bias] if norm is not None else [])
    return [tensor for tensor in tensors if tensor is not None]


def find_structure(model: nn.Module, example_input: torch.Tensor | None = None) -> Structure:
    """Find the conv groups and linear layers of ``model`` (cached per model object).

    Args:
        model: the network; it is traced once by torch-pruning in eval mode (its training flag and
            BatchNorm statistics are left as they were).
        example_input: an input batch; default a random 2 x C x 32 x 32 batch.

    Raises:
        NoPrunableLayerError: the model has no convolution and no linear layer.
    """
    cached = _CACHE.get(model)
    if cached is not None:
        return cached
    names = {module: name for name, module in model.named_modules()}
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = tuple(name for name, m in model.named_modules() if isinstance(m, nn.Linear))
    if not convs and not linears:
        raise NoPrunableLayerError(
            f"model {type(model).__name__} has no prunable layer; pruning needs at least one of nn.Conv2d "
            f"(filters) or nn.Linear (weights)"
        )
    groups: list[ConvGroup] = []
    if convs:
        graph = build_dependency_graph(model, example_input)
        order = {name: i for i, name in enumerate(convs)}
        seen: set[str] = set()
        for name in convs:
            if name in seen:
                continue
            conv = model.get_submodule(name)
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0])
            coupled = {names[dep.target.module] for dep, _ in group
                       if isinstance(dep.target.module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler)}
            members = sorted(coupled | {name}, key=order.__getitem__)
            seen.update(members)
            norms = tuple(_following_norm(graph, model.get_submodule(m), names) for m in members)
            groups.append(ConvGroup(members[0], tuple(members), norms, conv.out_channels))
    structure = Structure(tuple(groups), linears, linears[-1] if linears else None)
    _CACHE[model] = structure
    return structure


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor | None = None) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, traced in eval mode without touching its state."""
    if example_input is None:
        example_input = example_input_for(model)
    with eval_mode(model), torch.enable_grad():  # torch-pruning traces through autograd
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def _following_norm(graph: tp.DependencyGraph, conv: nn.Conv2d, names: dict) -> str | None:
    outputs = graph.module2node[conv].outputs
    return next((names[out.module] for out in outputs if isinstance(out.module, nn.BatchNorm2d)), None)
