"""Study parameters: load a YAML study file, validate it, apply overrides.

A study file names the grid (datasets x models x ...) and the protocol (epochs, batch size, optimiser,
inference, energy, executor). Everything is checked before any run starts, raising
:class:`~helpers.params.ParamsError` that names the key, the value, what is accepted and the closest key.

This module checks the keys every study shares and ``study_kind``; each kind checks its own
(:mod:`helpers.studies`). The primary study's plan (:func:`expand_grid`, :func:`dense_twin`,
:func:`training_form`) and the types of :mod:`helpers.params` are re-exported here.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from helpers import data as data_mod
from helpers import models as models_mod
from helpers.executors import validate_executor
from helpers.params import (
    RESULT_KEYS,
    ParamsError,
    RunSpec,
    StudyParams,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_int_list,
    check_key,
    check_names,
    check_optional_int,
    study_dir,
)
from helpers.primary import TRAINING_FORMS, dense_twin, expand_grid, training_form
from helpers.studies import KINDS, kind, kind_defaults, validate_kinds

__all__ = [
    "ParamsError",
    "StudyParams",
    "RunSpec",
    "DEFAULTS",
    "KEYS",
    "RESULT_KEYS",
    "STUDIES",
    "OPTIMIZERS",
    "TRAINING_FORMS",
    "training_form",
    "load_params",
    "expand_grid",
    "dense_twin",
    "study_dir",
]

#: ``study_kind`` values: the kinds of study of the registry (:mod:`helpers.studies`).
STUDIES: tuple[str, ...] = tuple(KINDS)
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
#: Keys that ``model_options`` may set per model (a model's training budget).
MODEL_OPTION_KEYS: tuple[str, ...] = ("seeds", "epochs", "batch_size", "train_subset", "val_subset")

# Every shared key with its default (``None``: no limit / not set); the required keys (REQUIRED) have none.
# Every study also holds every kind's keys (helpers.studies.kind_defaults).
SHARED_DEFAULTS: dict[str, Any] = {
    "seeds": [0],
    "epochs": 50,
    "batch_size": 64,
    "eval_batch_size": 256,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "optimizer": "adam",
    "image_size": None,
    "train_subset": None,
    "val_subset": None,
    "test_subset": None,
    "data_seed": 0,
    "data_root": None,
    "dataset_options": {},
    # Per-model training budgets (MODEL_OPTION_KEYS), e.g. {vgg16: {train_subset: 3000}}: every method of
    # a model trains on it, so runs stay comparable within a model.
    "model_options": {},
    "augment": {"hflip": False, "rotation_degrees": 0.0},
    "device": "cpu",
    "threads": None,
    "inference": {"samples": 100, "batch_sizes": [1], "warmup": 10, "threads": None},
    "energy": {"estimate": False},
    "keep_models": True,
    # Seconds between training checkpoints (helpers.train.fit): 0 writes one after every epoch.
    "checkpoint_every_s": 0.0,
    "executor": "local",
    # The kind of study (helpers.studies): not `study` (notebooks' name for helpers.study) nor `kind` (old files').
    "study_kind": "primary",
}
DEFAULTS: dict[str, Any] = {**SHARED_DEFAULTS, **kind_defaults(), "out": "outputs"}
REQUIRED: tuple[str, ...] = ("name", "datasets", "models")
KEYS: tuple[str, ...] = REQUIRED + tuple(DEFAULTS)
_NESTED_KEYS = {k: tuple(v) for k, v in DEFAULTS.items() if isinstance(v, dict) and v}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_params(source: str | os.PathLike | Mapping[str, Any], overrides: Sequence[str] = ()) -> StudyParams:
    """Load, override and validate a study's parameters.

    Args:
        source: a YAML file path or an already parsed mapping.
        overrides: ``key=value`` strings applied on top (value parsed as YAML, so ``epochs=2`` is an
            int and ``methods=[dense,set]`` a list); ``inference.samples=10`` sets a nested key.

    Returns:
        The validated parameters with every default filled in.

    Raises:
        ParamsError: with a one-line message naming the key, the bad value and what is accepted.
    """
    if isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
        origin = "parameters"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ParamsError(
                f"parameter file {path} not found; pass the path of a study YAML such as params/smoke.yaml"
            )
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())
            raise ParamsError(f"{path} is not valid YAML: {first}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ParamsError(
                f"{path} must hold a mapping of keys (name, datasets, models, ...), got {type(raw).__name__}"
            )
    for item in overrides:
        _apply_override(raw, item)
    return StudyParams(values=_validate(raw, origin))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"override {item!r} must look like key=value (for example --set epochs=2)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    check_key(parts[0], KEYS, "key")
    if len(parts) == 1:
        raw[key] = value
    elif parts[0] == "executor":  # executor.n_workers=2, executor.jobqueue.cores=8 (checked by validation)
        section = raw.get("executor")
        section = dict(section) if isinstance(section, dict) else {"kind": section or "local"}
        node = section
        for part in parts[1:-1]:
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        node[parts[-1]] = value
        raw["executor"] = section
    elif len(parts) == 2 and parts[0] in _NESTED_KEYS:
        check_key(parts[1], _NESTED_KEYS[parts[0]], f"key in {parts[0]}")
        section = raw.get(parts[0])
        if not isinstance(section, dict):
            section = {}
        section[parts[1]] = value
        raw[parts[0]] = section
    else:
        nested = ", ".join(f"{k}.<key>" for k in _NESTED_KEYS)
        raise ParamsError(f"override key {key!r} is not settable; use a top-level key or one of {nested}")


def _validate(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    for key in raw:
        check_key(key, KEYS, "key")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise ParamsError(
            f"{origin} is missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"for example datasets: [digits], models: [resnet18]"
        )
    out: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = raw.get(key, copy.deepcopy(default))
        if isinstance(default, dict) and default:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ParamsError(f"{key} must be a mapping with keys {', '.join(default)}, got {value!r}")
            for sub in value:
                check_key(sub, tuple(default), f"key in {key}")
            value = {**copy.deepcopy(default), **value}
        out[key] = value
    for key in REQUIRED:
        out[key] = raw[key]
    name = out["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParamsError(f"name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    out["datasets"] = check_names("datasets", out["datasets"], data_mod.DATASETS)
    out["models"] = check_names("models", out["models"], models_mod.MODELS)
    out["seeds"] = check_int_list("seeds", out["seeds"], minimum=0)

    out["epochs"] = check_int("epochs", out["epochs"], minimum=1)
    out["batch_size"] = check_int("batch_size", out["batch_size"], minimum=2)
    out["eval_batch_size"] = check_int("eval_batch_size", out["eval_batch_size"], minimum=1)
    out["lr"] = check_float("lr", out["lr"], minimum=0.0, strict=True)
    out["weight_decay"] = check_float("weight_decay", out["weight_decay"], minimum=0.0)
    out["optimizer"] = check_choice("optimizer", out["optimizer"], OPTIMIZERS)
    out["image_size"] = check_optional_int("image_size", out["image_size"], minimum=1)
    smallest = max(models_mod.min_input_size(m) for m in out["models"])
    if out["image_size"] is not None and out["image_size"] < smallest:
        raise ParamsError(
            f"image_size {out['image_size']} is below the models' minimum input {smallest} px; "
            f"use image_size >= {smallest} or null (pad small images to the minimum)"
        )
    out["train_subset"] = check_optional_int("train_subset", out["train_subset"], minimum=2)
    out["val_subset"] = check_optional_int("val_subset", out["val_subset"], minimum=2)
    out["test_subset"] = check_optional_int("test_subset", out["test_subset"], minimum=2)
    out["data_seed"] = check_int("data_seed", out["data_seed"], minimum=0)
    if out["data_root"] is not None and not isinstance(out["data_root"], str):
        raise ParamsError(f"data_root must be a folder path or null, got {out['data_root']!r}")
    out["dataset_options"] = _dataset_options(out["dataset_options"], out["datasets"], data_mod)
    out["model_options"] = _model_options(out["model_options"], out["models"])
    aug = out["augment"]
    aug["hflip"] = check_bool("augment.hflip", aug["hflip"])
    aug["rotation_degrees"] = check_float("augment.rotation_degrees", aug["rotation_degrees"], minimum=0.0, maximum=180.0)
    out["device"] = _device(out["device"])
    out["threads"] = check_optional_int("threads", out["threads"], minimum=1)
    if out["threads"] is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        out["threads"] = max(1, len(usable))
    inf = out["inference"]
    inf["samples"] = check_int("inference.samples", inf["samples"], minimum=1)
    inf["batch_sizes"] = check_int_list("inference.batch_sizes", inf["batch_sizes"], minimum=1)
    inf["warmup"] = check_int("inference.warmup", inf["warmup"], minimum=0)
    inf["threads"] = check_optional_int("inference.threads", inf["threads"], minimum=1)
    if inf["threads"] is None:
        inf["threads"] = out["threads"]
    out["energy"]["estimate"] = check_bool("energy.estimate", out["energy"]["estimate"])
    out["keep_models"] = check_bool("keep_models", out["keep_models"])
    out["checkpoint_every_s"] = check_float("checkpoint_every_s", out["checkpoint_every_s"], minimum=0.0)
    out["study_kind"] = kind(out["study_kind"]).name
    validate_kinds(out)
    out["executor"] = validate_executor(out["executor"])
    if not isinstance(out["out"], str) or not out["out"]:
        raise ParamsError(f"out must be a folder path, got {out['out']!r}")
    return {k: out[k] for k in KEYS}


def _named_options(key: str, value: Any, names: Sequence[str], fix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, options)`` of ``dataset_options`` / ``model_options``, each name one of ``names``."""
    if value is None:
        return
    what = key.removesuffix("_options")
    if not isinstance(value, dict):
        raise ParamsError(f"{key} must map a {what} name to its options, got {value!r}")
    for name, options in value.items():
        if name not in names:
            raise ParamsError(f"{key} names {name!r}, which is not in {what}s ({', '.join(names)}); {fix}")
        if not isinstance(options, dict):
            raise ParamsError(f"{key}.{name} must be a mapping of options, got {options!r}")
        yield name, options


def _dataset_options(value: Any, datasets: Sequence[str], data_mod: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    reserved = ("train_subset", "val_subset", "test_subset")
    fix = "add it to datasets or remove its options"
    for name, options in _named_options("dataset_options", value, datasets, fix):
        accepted = tuple(k for k in data_mod.DATASET_OPTIONS[name] if k not in reserved)
        for key in options:
            if key in reserved:
                raise ParamsError(
                    f"dataset_options.{name}.{key}: set {key} at the top level (it applies to every dataset)"
                )
            check_key(key, accepted, f"option of dataset {name}")
        out[name] = dict(options)
    return out


def _model_options(value: Any, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, options in _named_options("model_options", value, models, "remove it or add the model"):
        checked: dict[str, Any] = {}
        for key, option in options.items():
            check_key(key, MODEL_OPTION_KEYS, f"key in model_options.{name}")
            if key == "seeds":
                checked[key] = check_int_list(f"model_options.{name}.seeds", option, minimum=0)
                continue
            minimum = {"epochs": 1, "batch_size": 2}.get(key, 2)
            checked[key] = (check_int if key in ("epochs", "batch_size") else check_optional_int)(
                f"model_options.{name}.{key}", option, minimum=minimum)
        out[name] = checked
    return out


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ParamsError(f"unknown device {value!r}; expected cpu, cuda or cuda:N")
    return value
