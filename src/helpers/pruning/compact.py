"""Physical compaction of a masked model, and MAC counting.

:func:`compact` returns a smaller copy in which every filter that outputs exactly zero (see
:func:`helpers.pruning.report.removed_filters`) is gone, together with everything that only served it:
its BatchNorm entries, the input channels of the convolutions that read it, and -- in VGG -- the
7 x 7 = 49 input columns of the first linear layer that the flatten maps it to. The index bookkeeping
(residual couplings, the flatten) is torch-pruning's ``DependencyGraph`` (Fang et al., CVPR 2023).
Within a residual group a channel is removed only if it is zero in every member. Since removed
channels carried exact zeros, the compacted model's logits equal the masked model's up to
floating-point summation order.

Unstructured linear sparsity stays as explicit zeros in dense tensors: on this project's 2-core CPU,
a ``torch.sparse`` CSR matmul with VGG16's compacted first linear layer at 80 % sparsity was 3-5x
slower than the dense matmul at batch 1 and at best 1.0-1.3x faster at batch 64
(``benchmarks/README.md``), so a sparse format would not make the study's batch-1 inference faster.

With the ``linear_only`` scenario no filter is removed, so the compacted model has the masked model's
parameters and MACs; only structured (conv) sparsity shrinks a model physically here.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from .report import removed_filters
from .structure import build_dependency_graph, example_input_for, find_structure

__all__ = ["compact", "count_macs"]


@torch.no_grad()
def _removable_channels(model: nn.Module, group) -> list[int]:
    dead = None
    for conv_name, norm_name in zip(group.convs, group.norms):
        norm = model.get_submodule(norm_name) if norm_name is not None else None
        member = removed_filters(model.get_submodule(conv_name), norm)
        dead = member if dead is None else dead & member
    idxs = torch.nonzero(dead).reshape(-1).tolist()
    if len(idxs) == group.channels:  # a layer cannot have zero channels; keep one (it outputs zero)
        idxs = idxs[1:]
    return idxs


def compact(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` without its removed filters.

    Args:
        model: a masked (or dense) model; it is not modified.
        example_input: an input batch for tracing; default 2 x C x 32 x 32 random.

    Returns:
        The compacted copy, in the same training mode as ``model``.
    """
    small = copy.deepcopy(model)
    if example_input is None:
        example_input = example_input_for(small)
    structure = find_structure(small, example_input)
    plan = [(group, _removable_channels(small, group)) for group in structure.conv_groups]
    if not any(idxs for _, idxs in plan):
        return small
    graph = build_dependency_graph(small, example_input)
    for group, idxs in plan:
        if idxs:
            root = small.get_submodule(group.convs[0])
            graph.get_pruning_group(root, tp.prune_conv_out_channels, idxs=idxs).prune()
    return small


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``example_input`` through conv and linear layers.

    Conv: ``output elements x C_in / groups x k_h x k_w``; linear: ``output elements x in_features``.
    Zeros in weights are counted (a masked model has its dense twin's MACs); BatchNorm, activations and
    pooling are left out (under 1 % of the total in the study's models).
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k_h, k_w = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * k_h * k_w

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return int(total)
