"""Filter primitives shared by the companion studies: who reads a layer's channels, and removing channels.

A conv group's channels (:class:`helpers.pruning.structure.ConvGroup`) are removed by zeroing them in
every member (:func:`mask_filters`) or in a physically smaller copy (:func:`prune_filters`). Which
channels go is the caller's choice (:mod:`helpers.criteria`, :mod:`helpers.granularity`);
:func:`find_consumers` tells which layers read a group's channels: those whose outputs a removal changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from .compact import compact
from .structure import Structure, build_dependency_graph, channel_tensors, find_structure

__all__ = ["Consumer", "find_consumers", "mask_filters", "prune_filters"]


@dataclass(frozen=True)
class Consumer:
    """A layer that reads a unit group's channels.

    Attributes:
        name: module name of the consumer (an ``nn.Conv2d`` or ``nn.Linear``).
        block: input features per channel: 1 for a convolution, ``H x W`` for a linear layer behind a
            flatten (channel ``c`` owns features ``c * block`` to ``(c + 1) * block - 1``).
    """

    name: str
    block: int


def _out_channel_fn(module: nn.Module) -> Callable:
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    raise TypeError(f"a unit root must be nn.Conv2d or nn.Linear, got {type(module).__name__}")


def find_consumers(
    model: nn.Module, roots: Sequence[str], example_input: torch.Tensor | None = None
) -> dict[str, tuple[Consumer, ...]]:
    """For each root layer, the convolutions and linear layers that read its output channels.

    Found with torch-pruning's ``DependencyGraph`` (the in-channel dependencies of pruning the root's
    output channel 0), so residual streams and flattens are followed.

    Args:
        roots: module names of ``nn.Conv2d`` / ``nn.Linear`` layers (for a conv group, its first member).
        example_input: an input batch for tracing; default a random 2 x C x 32 x 32 batch.

    Returns:
        root name -> its consumers, in model order.

    Raises:
        ValueError: a consumer reads the channels in a layout other than contiguous blocks (grouped
            convolutions, concatenations), which the study's models do not have.
    """
    graph = build_dependency_graph(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    result = {}
    for root_name in roots:
        root = model.get_submodule(root_name)
        group = graph.get_pruning_group(root, _out_channel_fn(root), idxs=[0])
        consumers = {}
        for dep, idxs in group:
            module = dep.target.module
            if not isinstance(module, (nn.Conv2d, nn.Linear)) or not graph.is_in_channel_pruning_fn(dep.handler):
                continue
            name = names[module]
            block = len(idxs)
            if list(idxs) != list(range(block)) or (isinstance(module, nn.Conv2d) and (block != 1 or module.groups != 1)):
                raise ValueError(
                    f"layer {name} reads the channels of {root_name} as input indices {list(idxs)[:5]}...; only "
                    "contiguous blocks per channel (convolutions with groups=1, linear layers behind a flatten) "
                    "are supported"
                )
            consumers[name] = Consumer(name, block)
        result[root_name] = tuple(sorted(consumers.values(), key=lambda c: order[c.name]))
    return result


@torch.no_grad()
def mask_filters(
    model: nn.Module,
    removed: Mapping[str, Sequence[int]],
    structure: Structure | None = None,
    example_input: torch.Tensor | None = None,
) -> None:
    """Zero the removed channels in place, in every member of their group.

    A removed channel's filter weight and bias and its BatchNorm's affine weight and bias become 0, so
    the channel outputs exactly zero in train and eval mode (what :func:`helpers.pruning.compact` removes).

    Args:
        model: the network, modified in place.
        removed: conv group name -> channel indices (from :func:`select_filters`).
        structure: the model's structure (or that of a copy: only names are used); found when ``None``.
        example_input: an input batch for tracing when ``structure`` is ``None``; default 2 x C x 32 x 32.
    """
    structure = structure or find_structure(model, example_input)
    groups = {g.name: g for g in structure.conv_groups}
    for name, idxs in removed.items():
        if name not in groups:
            raise KeyError(f"{name!r} is not a conv group of this model; expected one of {', '.join(groups)}")
        if len(idxs) == 0:
            continue
        index = torch.as_tensor(list(idxs), dtype=torch.long)
        for conv_name, norm_name in zip(groups[name].convs, groups[name].norms):
            for tensor in channel_tensors(model, conv_name, norm_name):
                tensor[index.to(tensor.device)] = 0


def prune_filters(
    model: nn.Module,
    removed: Mapping[str, Sequence[int]],
    example_input: torch.Tensor,
    structure: Structure | None = None,
) -> nn.Module:
    """A physically smaller copy of ``model`` without the removed channels.

    The copy is masked with :func:`mask_filters` and compacted with :func:`helpers.pruning.compact`
    (torch-pruning), so its logits equal those of the masked model.

    Args:
        model: the network (not modified).
        removed: conv group name -> channel indices.
        example_input: an input batch for tracing.
        structure: ``model``'s structure; found when ``None``.
    """
    structure = structure or find_structure(model, example_input)
    masked = copy.deepcopy(model)
    mask_filters(masked, removed, structure)
    return compact(masked, example_input)
