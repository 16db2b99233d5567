"""Saving and loading masked and compacted models as plain state dicts.

A model file is one ``torch.save``d dict of tensors and builtins only, so it loads with
``torch.load(..., weights_only=True)`` (no pickled classes, safe to open from anywhere)::

    {"format": "helpers.pruning.model/1", "arch": "resnet18", "num_classes": 8, "in_channels": 3,
     "state_dict": {...}, "meta": {...}}

Models with :class:`~helpers.pruning.sparse.SparseLinear` layers are written as format
``helpers.pruning.model/2``, which adds ``"sparse_linear": {name: {"in_features": .., "out_features": ..}}``;
both formats load. Files are written atomically (temporary file, then rename). :func:`load_model`
builds the architecture on PyTorch's ``meta`` device (initialising a VGG16 at random only to overwrite
every weight cost about a second per load), reshapes conv, BatchNorm and linear layers to the stored
shapes (so compacted models load too), rebuilds the ``SparseLinear`` layers and assigns the tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import DamagedFileError, atomic_write, load_torch
from ..models import MODELS, build_model, shapes_only
from .sparse import SparseLinear

__all__ = ["save_model", "load_model", "build_skeleton", "infer_arch", "FORMAT", "FORMAT_SPARSE"]

FORMAT = "helpers.pruning.model/1"
#: The format of files holding SparseLinear layers (``FORMAT`` plus ``sparse_linear``).
FORMAT_SPARSE = "helpers.pruning.model/2"
_ALLOWED = (str, int, float, bool, type(None))


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which of :data:`helpers.models.MODELS` a state dict belongs to, from its keys."""
    keys = set(state_dict)
    if "features.0.weight" in keys:
        return "vgg16_bn" if "features.1.running_mean" in keys else "vgg16"
    if "layer1.0.conv3.weight" in keys:
        return "resnet50"
    if "layer1.0.conv1.weight" in keys:
        return "resnet18"
    raise ValueError(
        f"cannot tell the architecture from state-dict keys such as {sorted(keys)[:3]}; expected one of "
        f"{', '.join(MODELS)} (pass meta={{'model': name}} to save_model)"
    )


def check_meta(value: Any, where: str = "meta") -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} key {key!r} is not a string; model files hold only plain data")
            check_meta(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_meta(item, f"{where}[{i}]")
    elif not isinstance(value, _ALLOWED) and not torch.is_tensor(value):
        raise TypeError(
            f"{where} is a {type(value).__name__}; model files hold only str, int, float, bool, None, "
            f"tensors, lists and dicts of them (so they load with weights_only=True)"
        )


def save_model(model: nn.Module, path: str | Path, *, meta: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` (masked or compacted) and ``meta`` to ``path`` atomically.

    Args:
        model: one of the study's torchvision models, possibly compacted.
        path: destination file (conventionally ``*.pt``); parent folders are created.
        meta: plain data stored alongside (run id, method, scenario, ...); ``meta["model"]``, if
            given, names the architecture, else it is inferred from the state dict.

    Raises:
        helpers.files.WriteFailedError: the file cannot be written (disk full, ...); a previous file at
            ``path`` is unchanged and the message names the path.
    """
    meta = dict(meta or {})
    check_meta(meta)
    arch = meta.get("model") or infer_arch(model.state_dict())
    if arch not in MODELS:
        raise ValueError(f"meta['model'] is {arch!r}; expected one of {', '.join(MODELS)}")
    sparse = {
        name: {"in_features": m.in_features, "out_features": m.out_features}
        for name, m in model.named_modules()
        if isinstance(m, SparseLinear)
    }
    extra = {"sparse_linear": sparse} if sparse else {}
    write_model_file(model, path, FORMAT_SPARSE if sparse else FORMAT, arch, meta, **extra)


def write_model_file(model: nn.Module, path: str | Path, fmt: str, arch: str, meta: dict[str, Any],
                     **extra: Any) -> None:  # fmt: skip
    """Write ``model``'s file dict of format ``fmt`` (``meta`` already checked, ``extra`` entries last) atomically."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, SparseLinear))]
    payload = {
        "format": fmt,
        "arch": arch,
        "num_classes": linears[-1].out_features,
        "in_channels": convs[0].in_channels,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
        **extra,
    }
    atomic_write(Path(path), lambda fh: torch.save(payload, fh), mode="wb")


def load_model(path: str | Path, *, return_meta: bool = False) -> nn.Module | tuple[nn.Module, dict]:
    """Load a model written by :func:`save_model` (with ``weights_only=True``), in eval mode on the CPU;
    with ``return_meta``, ``(model, meta)``.

    Raises:
        FileNotFoundError: there is no such file.
        helpers.files.DamagedFileError: (a ``ValueError``) the file cannot be read or is not a model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found; write it with helpers.pruning.save_model")
    payload = load_torch(path, what="model file")
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_SPARSE):
        reason = f"not a model file of format {FORMAT} or {FORMAT_SPARSE}"
        raise DamagedFileError(f"{path} is {reason}; write it with helpers.pruning.save_model", path, reason)
    state = payload["state_dict"]
    model = build_skeleton(payload["arch"], payload["num_classes"], payload["in_channels"], state,
                           payload.get("sparse_linear", {}))  # fmt: skip
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor the file does not hold would stay without storage
        raise ValueError(f"{path} holds no values for {', '.join(left[:5])}; write it with helpers.pruning.save_model")
    model.eval()
    return (model, payload["meta"]) if return_meta else model


def build_skeleton(arch: str, num_classes: int, in_channels: int, state: Mapping[str, torch.Tensor],
                   sparse_linear: Mapping[str, Mapping[str, int]] | None = None) -> nn.Module:  # fmt: skip
    """The architecture shaped like ``state``, on the ``meta`` device (no memory, no random initialisation).

    Load the tensors with ``model.load_state_dict(state, assign=True)``.
    """
    with shapes_only():
        model = build_model(arch, num_classes, in_channels)
        for name, shape in (sparse_linear or {}).items():
            new = SparseLinear(shape["in_features"], shape["out_features"], state[f"{name}.values"].numel(),
                               bias=f"{name}.bias" in state, dtype=state[f"{name}.values"].dtype)  # fmt: skip
            model.set_submodule(name, new)
        _reshape_to(model, state)
    return model


def _reshape_to(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Replace every conv / BatchNorm / linear whose stored shape differs by one of the stored shape."""
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key not in state or state[key].shape == getattr(module, "weight", torch.empty(0)).shape:
            continue
        shape = state[key].shape
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(shape[1] * module.groups, shape[0], module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, bias=module.bias is not None,
                            padding_mode=module.padding_mode)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(shape[1], shape[0], bias=module.bias is not None)
        else:
            raise ValueError(f"layer {name} ({type(module).__name__}) has a stored shape {tuple(shape)} that cannot be rebuilt")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
