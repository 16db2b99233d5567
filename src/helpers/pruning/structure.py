"""Which layers a pruning method touches, and which of them must be pruned together.

Every ``nn.Conv2d`` is pruned by output filter and every ``nn.Linear`` by individual weight, the
classifier's output layer included (the paper prunes "every linear layer").

Convolutions whose outputs are summed by a residual add share their channels (He et al. 2016): in a
torchvision ResNet the stem ``conv1`` (ResNet18) and, in each stage, every block's last conv
(``conv2`` in BasicBlock, ``conv3`` in Bottleneck) and the ``downsample`` conv write into the same
channels. Removing a filter from only one of them leaves the channel alive through the identity path,
so it can be neither zero nor removed physically. Such convolutions form one *conv group*: they remove
the same channel indices, ranked by the group's summed filter L1 norm, and swap together -- as
torch-pruning's dependency groups do (Fang et al., *DepGraph: Towards Any Structural Pruning*, CVPR
2023). The groups are derived here from torch-pruning's ``DependencyGraph``, not from layer names, so
any model torch-pruning can trace works.

Effect of grouping on per-layer counts: every member of a group has the same number of channels and
the scenario's conv fraction applies to all of them, so with L1 or random masks the per-layer counts
are the same as ungrouped -- only *which* channels go changes (the group's summed L1 instead of each
layer's own). In SET the group gets one shared Erdős–Rényi density instead of one per member; see
:func:`helpers.pruning.masks.erk_allocation`, which reports both.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

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
    group_of: dict[str, str] = field(default_factory=dict)

    @property
    def convs(self) -> tuple[str, ...]:
        return tuple(name for group in self.conv_groups for name in group.convs)


_CACHE: "weakref.WeakKeyDictionary[nn.Module, Structure]" = weakref.WeakKeyDictionary()


def example_input_for(model: nn.Module, batch_size: int = 2, size: int = 32) -> torch.Tensor:
    """A random input batch for ``model``: its first conv's input channels, ``size`` x ``size`` pixels."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    param = next(model.parameters())
    if first is None:
        linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
        return torch.randn(batch_size, linear.in_features, device=param.device, dtype=param.dtype)
    return torch.randn(batch_size, first.in_channels, size, size, device=param.device, dtype=param.dtype)


@torch.no_grad()
def forward_with_hooks(model: nn.Module, example_input: torch.Tensor, handles: list) -> None:
    """One eval-mode forward of ``example_input`` (for the hooks in ``handles``), which are removed after;
    every module's training flag is restored, whatever the forward raises."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training


def find_structure(model: nn.Module, example_input: torch.Tensor | None = None) -> Structure:
    """Find the conv groups and linear layers of ``model`` (cached per model object).

    Args:
        model: the network; it is traced once by torch-pruning in eval mode (its training flag and
            BatchNorm statistics are left as they were).
        example_input: an input batch; default a random 2 x C x 32 x 32 batch.

    Returns:
        The model's :class:`Structure`.

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
            members = []
            for dep, _ in group:
                module = dep.target.module
                if isinstance(module, nn.Conv2d) and graph.is_out_channel_pruning_fn(dep.handler):
                    members.append(names[module])
            members = sorted(set(members) | {name}, key=order.__getitem__)
            seen.update(members)
            norms = tuple(_following_norm(graph, model.get_submodule(m), names) for m in members)
            groups.append(ConvGroup(members[0], tuple(members), norms, conv.out_channels))
    group_of = {conv: group.name for group in groups for conv in group.convs}
    structure = Structure(tuple(groups), linears, linears[-1] if linears else None, group_of)
    _CACHE[model] = structure
    return structure


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor | None = None) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``, traced in eval mode without touching its state."""
    if example_input is None:
        example_input = example_input_for(model)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():  # torch-pruning traces through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    finally:
        for module, training in modes.items():
            module.training = training


def _following_norm(graph: tp.DependencyGraph, conv: nn.Conv2d, names: dict) -> str | None:
    node = graph.module2node[conv]
    for out in node.outputs:
        if isinstance(out.module, nn.BatchNorm2d):
            return names[out.module]
    return None
