"""Sparsity actually achieved by a model, read from its weights (not from a method's masks).

A filter counts as removed when it outputs exactly zero (:func:`removed_filters`): the test
:func:`helpers.pruning.compact.compact` uses, so a masked model's report and its compacted twin's size
agree. Linear sparsity is the fraction of exactly-zero weights. Weights of later layers that only read
removed channels are not counted as zero here (the masked model stores and multiplies them);
compaction removes them.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from .structure import Structure, channel_tensors, find_structure

__all__ = ["sparsity_report", "summarize_sparsity", "removed_filters", "SUMMARY_KEYS"]

SUMMARY_KEYS: tuple[str, ...] = (
    "conv_filter_sparsity",
    "linear_weight_sparsity",
    "overall_sparsity",
    "params_total",
    "params_nonzero",
)


@torch.no_grad()
def removed_filters(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> torch.Tensor:
    """Bool ``[C_out]``: which filters of ``conv`` (followed by ``norm``, if any) output exactly zero: the
    BatchNorm's affine weight and bias are zero, or without an affine one the filter's weight and bias."""
    if norm is not None and norm.weight is not None:
        return (norm.weight == 0) & (norm.bias == 0)
    dead = (conv.weight == 0).flatten(1).all(dim=1)
    if conv.bias is not None:
        dead &= conv.bias == 0
    return dead


def _count_nonzero(tensors: list[torch.Tensor]) -> int:
    return sum(int(torch.count_nonzero(t)) for t in tensors)


def _weight_counts(weight: torch.Tensor, params: list[torch.Tensor]) -> dict[str, float | int]:
    zero = weight.numel() - int(torch.count_nonzero(weight))
    return dict(weights_total=weight.numel(), weights_zero=zero, weight_sparsity=zero / weight.numel(),
                params_total=sum(p.numel() for p in params), params_nonzero=_count_nonzero(params))  # fmt: skip


@torch.no_grad()
def sparsity_report(model: nn.Module, structure: Structure | None = None) -> pd.DataFrame:
    """One row per prunable layer.

    Columns: ``layer``, ``kind`` (conv / linear), ``group`` (the conv group, see
    :mod:`helpers.pruning.structure`; the layer itself for linear), ``group_size``, ``filters_total``,
    ``filters_removed``, ``filter_sparsity`` (conv only, else NaN), ``weights_total``, ``weights_zero``,
    ``weight_sparsity``, ``params_total`` and ``params_nonzero`` (weight, bias and, for conv, the
    following BatchNorm's affine parameters).

    Args:
        model: a dense, masked or compacted model.
        structure: its structure; found (and cached) when ``None``.
    """
    structure = structure or find_structure(model)
    rows = []
    for group in structure.conv_groups:
        for conv_name, norm_name in zip(group.convs, group.norms):
            conv = model.get_submodule(conv_name)
            norm = model.get_submodule(norm_name) if norm_name is not None else None
            dead = int(removed_filters(conv, norm).sum())
            rows.append(dict(
                layer=conv_name, kind="conv", group=group.name, group_size=len(group.convs),
                filters_total=conv.out_channels, filters_removed=dead, filter_sparsity=dead / conv.out_channels,
                **_weight_counts(conv.weight, channel_tensors(model, conv_name, norm_name)),
            ))
    for name in structure.linears:
        linear = model.get_submodule(name)
        params = [p for p in (linear.weight, linear.bias) if p is not None]
        rows.append(dict(
            layer=name, kind="linear", group=name, group_size=1,
            filters_total=math.nan, filters_removed=math.nan, filter_sparsity=math.nan,
            **_weight_counts(linear.weight, params),
        ))
    return pd.DataFrame(rows)


@torch.no_grad()
def summarize_sparsity(model: nn.Module, structure: Structure | None = None) -> dict[str, float | int]:
    """Aggregate sparsity of ``model``.

    Returns:
        ``conv_filter_sparsity`` (removed filters / all filters over the conv layers),
        ``linear_weight_sparsity`` (zero weights / all weights over the linear layers),
        ``overall_sparsity`` (zero weights / all weights over conv and linear layers),
        ``params_total`` and ``params_nonzero`` (over all parameters of the model). A ratio without
        layers of its kind is NaN.
    """
    report = sparsity_report(model, structure)
    conv = report[report.kind == "conv"]
    linear = report[report.kind == "linear"]

    def ratio(num: float, den: float) -> float:
        return float(num) / float(den) if den else math.nan

    params = list(model.parameters())
    return {
        "conv_filter_sparsity": ratio(conv.filters_removed.sum(), conv.filters_total.sum()),
        "linear_weight_sparsity": ratio(linear.weights_zero.sum(), linear.weights_total.sum()),
        "overall_sparsity": ratio(report.weights_zero.sum(), report.weights_total.sum()),
        "params_total": int(sum(p.numel() for p in params)),
        "params_nonzero": _count_nonzero(params),
    }
