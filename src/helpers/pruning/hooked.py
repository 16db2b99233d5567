"""The ``hooked`` form of a pruned model: ``torch.nn.utils.prune``'s reparametrisation, as the paper's models were.

``torch.nn.utils.prune`` does not zero a weight; it renames the parameter to ``weight_orig``, adds a
``weight_mask`` buffer and registers a forward pre-hook that recomputes ``weight = weight_orig *
weight_mask`` before every forward pass. A model pruned with it and saved without
``prune.remove`` (Douzandeh Zenoozi et al. 2025 benchmark such models) therefore stores every weight
twice-sized (the original and its mask) and pays one element-wise multiply per pruned layer per call:
the mask overhead the paper discusses. The study's inference table measures that form beside the
``masked`` model (zeros baked into plain weights) and the ``compacted`` one.

:func:`to_hooked` turns a masked model into that form with ``prune.custom_from_mask`` on every conv
and linear weight that holds zeros (its mask: the non-zero pattern), so its logits equal the masked
model's exactly. :func:`save_hooked` / :func:`load_hooked` write and read it as a plain state dict
(``weights_only=True``), format ``helpers.pruning.hooked/1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ..files import atomic_write
from .io import build_skeleton, check_meta

__all__ = ["to_hooked", "hooked_layers", "save_hooked", "load_hooked", "FORMAT_HOOKED"]

FORMAT_HOOKED = "helpers.pruning.hooked/1"
_PRUNABLE = (nn.Conv2d, nn.Linear)


def hooked_layers(model: nn.Module) -> list[str]:
    """Names of the layers of ``model`` that carry a ``torch.nn.utils.prune`` reparametrisation."""
    return [name for name, module in model.named_modules() if hasattr(module, "weight_orig")]


@torch.no_grad()
def to_hooked(model: nn.Module) -> nn.Module:
    """``model`` pruned the ``torch.nn.utils.prune`` way, in place: ``weight_orig``, ``weight_mask`` and a
    forward pre-hook on every conv and linear layer whose weight holds zeros.

    Args:
        model: a masked model (pruned weights exactly zero).

    Returns:
        ``model``, whose outputs are unchanged.
    """
    for module in model.modules():
        if isinstance(module, _PRUNABLE) and not prune.is_pruned(module):
            mask = module.weight.detach() != 0
            if not bool(mask.all()):
                prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))
    return model


def save_hooked(model: nn.Module, path: str | Path, *, arch: str, meta: Mapping[str, Any] | None = None) -> None:
    """Write a hooked model (:func:`to_hooked`) with its ``weight_orig`` / ``weight_mask`` tensors, atomically.

    Args:
        model: the hooked model (full-size, as trained).
        path: destination file.
        arch: its architecture (one of :data:`helpers.models.MODELS`).
        meta: plain data stored alongside.
    """
    meta = dict(meta or {})
    check_meta(meta)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    payload = {
        "format": FORMAT_HOOKED,
        "arch": arch,
        "num_classes": linears[-1].out_features,
        "in_channels": convs[0].in_channels,
        "hooked": hooked_layers(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    atomic_write(Path(path), lambda fh: torch.save(payload, fh), mode="wb")


def load_hooked(path: str | Path) -> nn.Module:
    """Load a model written by :func:`save_hooked`: the architecture, its prune hooks, then the stored tensors.

    Returns:
        The hooked model in eval mode on the CPU.
    """
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_HOOKED:
        raise ValueError(
            f"{path} is not a model file of format {FORMAT_HOOKED}; write it with helpers.pruning.save_hooked"
        )
    state = payload["state_dict"]
    model = build_skeleton(payload["arch"], payload["num_classes"], payload["in_channels"], state)
    for name in payload["hooked"]:
        module = model.get_submodule(name)
        # identity reparametrisation on the skeleton; the stored weight_orig and weight_mask replace it
        prune.custom_from_mask(module, "weight", torch.ones_like(module.weight, device="meta"))
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model
