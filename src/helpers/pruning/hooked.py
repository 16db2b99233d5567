"""The ``hooked`` form of a pruned model: ``torch.nn.utils.prune``'s reparametrisation, as the paper's models were.

``torch.nn.utils.prune`` keeps a pruned parameter as ``weight_orig`` and a ``weight_mask`` buffer, and a
forward pre-hook recomputes ``weight = weight_orig * weight_mask`` before every forward pass. Saved
without ``prune.remove`` (as Douzandeh Zenoozi et al. 2025 benchmark their models), such a model stores
every weight twice and pays one multiply per pruned layer per call: the mask overhead the paper
discusses, which the study's inference table measures beside the ``masked`` and ``compacted`` forms.
Files are plain state dicts (``weights_only=True``), format ``helpers.pruning.hooked/1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from .io import build_skeleton, check_meta, write_model_file

__all__ = ["to_hooked", "hooked_layers", "save_hooked", "load_hooked", "FORMAT_HOOKED"]

FORMAT_HOOKED = "helpers.pruning.hooked/1"


def hooked_layers(model: nn.Module) -> list[str]:
    """Names of the layers of ``model`` that carry a ``torch.nn.utils.prune`` reparametrisation."""
    return [name for name, module in model.named_modules() if hasattr(module, "weight_orig")]


@torch.no_grad()
def to_hooked(model: nn.Module) -> nn.Module:
    """A masked ``model`` (pruned weights exactly zero) pruned the ``torch.nn.utils.prune`` way, in place:
    ``weight_orig``, ``weight_mask`` and a forward pre-hook on every conv and linear layer whose weight
    holds zeros. Returns ``model``, whose outputs are unchanged."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not prune.is_pruned(module):
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
    write_model_file(model, path, FORMAT_HOOKED, arch, meta, hooked=hooked_layers(model))


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
