"""Study parameters: load a YAML study file, validate it, apply overrides, expand the grid.

A study file names the grid (datasets x models x methods x scenarios x seeds) and the protocol
(epochs, batch size, optimiser, inference and energy settings). Everything is checked before any
run starts: an unknown key names the closest valid key (``difflib``), a wrong type or an impossible
value names the key, the value and what is accepted. :class:`ParamsError` is the one exception.

The grid expands to one :class:`RunSpec` per dataset x model x method x scenario x seed, plus one
``dense`` run per dataset x model x seed (the baseline, which ``post_training`` reuses instead of
training again). A run's id is readable and stable: ``{dataset}-{model}-{method}-{scenario}-s{seed}-
{hash8}``, where the hash covers every resolved parameter that can change the run's results (see
:data:`RESULT_KEYS`), so editing the protocol gives new ids and never mixes results of two protocols.

Defaults follow the primary study (Douzandeh Zenoozi et al., Frontiers in Computer Science 2025):
Adam, lr 1e-4, batch 64, 50 epochs, ``swap_fraction`` 0.2, no fine-tuning after post-training pruning.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ParamsError",
    "StudyParams",
    "RunSpec",
    "DEFAULTS",
    "KEYS",
    "RESULT_KEYS",
    "EXECUTORS",
    "STUDIES",
    "OPTIMIZERS",
    "TRAINING_FORMS",
    "COMPACTABLE_METHODS",
    "training_form",
    "load_params",
    "expand_grid",
    "dense_twin",
    "study_dir",
]


class ParamsError(ValueError):
    """A study file or override that cannot be run; the message is one line naming the problem."""


EXECUTORS: tuple[str, ...] = ("local", "dask")  # settings: helpers.executors.validate_executor
#: ``study_kind`` values: the primary study (this module's grid) or a companion study (``helpers.companion``).
STUDIES: tuple[str, ...] = ("primary", "criteria", "granularity")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
#: ``training_form`` values; see :func:`training_form`.
TRAINING_FORMS: tuple[str, ...] = ("compacted", "masked")
#: Keys that ``model_options`` may set per model (a model's training budget).
MODEL_OPTION_KEYS: tuple[str, ...] = ("seeds", "epochs", "batch_size", "train_subset", "val_subset")
#: Methods that can train compacted: fixed masks (pre_training, post_training fine-tuning) exactly,
#: evolving masks (in_training, set) rebuilt after every swap (helpers.pruning.EpochCompaction).
COMPACTABLE_METHODS: tuple[str, ...] = ("pre_training", "post_training", "in_training", "set")

# Every accepted key with its default; ``None`` marks "no limit / not set". Keys without a default
# (``name``, ``datasets``, ``models``) are required.
DEFAULTS: dict[str, Any] = {
    "methods": ["pre_training", "in_training", "post_training", "set"],
    "scenarios": ["uniform", "mixed", "linear_only"],
    "seeds": [0],
    "epochs": 50,
    "batch_size": 64,
    "eval_batch_size": 256,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "optimizer": "adam",
    "swap_fraction": 0.2,
    "finetune_epochs": 0,
    # How pruned runs train: "compacted" trains the physically smaller network (for fixed masks exactly
    # equivalent; in_training / set rebuild it after every swap), "masked" the full one with zeros (the
    # paper's way). Resolved per run (helpers.config.training_form); dense and linear_only: masked.
    # A list ([masked, compacted]) runs both forms side by side; the form then enters the run id.
    "training_form": "compacted",
    # set's per-layer budgets: "scenario" (each layer keeps the scenario's fraction; the paper) or
    # "erk" (Mocanu's ER / Evci's ERK densities under the same budget in weights; an extension).
    "set_allocation": "scenario",
    "image_size": None,
    "train_subset": None,
    "val_subset": None,
    "test_subset": None,
    "data_seed": 0,
    "data_root": None,
    "dataset_options": {},
    # Per-model training budgets, e.g. {vgg16: {train_subset: 3000}}: every method of a model trains on
    # its model's budget (MODEL_OPTION_KEYS), so runs stay comparable within a model.
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
    # Companion studies (helpers.companion; ignored by the primary study). ``finetune`` is their
    # SGD fine-tuning after one-shot pruning (Lajić et al. 2025); the primary study's post_training
    # uses ``finetune_epochs`` with its own optimizer instead. ``finetune.epochs`` null: 10 epochs for
    # up to 10 classes, 20 above (helpers.criteria.default_finetune_epochs).
    "study_kind": "primary",  # not `study`: notebooks import helpers.study under that name
    "criteria": ["greedy_output_norm", "l1", "bn_slimming", "random", "taylor"],
    "filter_sparsity": 0.4,
    "slimming_lambda": 1e-4,
    "calibration_size": 64,
    "granularities": ["weight", "unstructured", "neuron", "structured", "layer"],
    "budgets": [0.5],
    "finetune": {"epochs": None, "lrs": [1e-3, 1e-4, 1e-5], "batch_size": 32, "momentum": 0.9, "hflip": True,
                 "rotation_degrees": 15.0},
    # Companion studies (issue 15): greedy_output_norm's re-scoring (helpers.criteria.GREEDY_RESCORE) and
    # the companion dense training's learning-rate schedule (helpers.companion.DENSE_LR_SCHEDULES).
    "greedy_rescore": "once",
    "dense_lr_schedule": "constant",
    "out": "outputs",
}
REQUIRED: tuple[str, ...] = ("name", "datasets", "models")
KEYS: tuple[str, ...] = REQUIRED + tuple(DEFAULTS)
_NESTED_KEYS = {k: tuple(v) for k, v in DEFAULTS.items() if isinstance(v, dict) and v}

# Parameters that can change a run's results, hence enter its run_id hash. ``threads``,
# ``eval_batch_size``, ``data_root``, ``keep_models``, ``checkpoint_every_s``, ``executor`` and ``out`` only change where or
# how fast a run happens. Method-specific keys are added per method in :func:`_result_params`.
RESULT_KEYS: tuple[str, ...] = (
    "dataset", "model", "method", "conv_sparsity", "linear_sparsity", "seed", "epochs", "batch_size",
    "lr", "weight_decay", "optimizer", "image_size", "train_subset", "val_subset", "test_subset",
    "data_seed", "dataset_options", "augment", "device", "inference", "energy",
)  # fmt: skip

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class StudyParams:
    """A validated study: the resolved parameters (defaults filled in) as a plain dict.

    Attributes:
        values: every key of :data:`KEYS`, JSON-serialisable; scenarios are resolved to
            ``{"name", "conv", "linear"}`` mappings.
    """

    values: Mapping[str, Any]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the resolved parameters (what is saved with every run)."""
        return copy.deepcopy(dict(self.values))

    @property
    def study_dir(self) -> Path:
        """``<out>/<name>``: where this study's runs, tables, figures and notebooks live."""
        return Path(self.values["out"]) / self.values["name"]


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: everything :func:`helpers.runner.run_one` needs, nothing else.

    Attributes:
        run_id: ``{dataset}-{model}-{method}-{scenario}-s{seed}-{hash8}``.
        dataset, model, method, scenario, seed: the run's place in the grid (``scenario`` is
            ``"none"`` for ``dense`` runs).
        params: the run's resolved parameters (JSON-serialisable): the study's protocol keys plus
            ``dataset``, ``model``, ``method``, ``scenario``, ``conv_sparsity``,
            ``linear_sparsity``, ``seed``.
        dense_run_id: for ``post_training``, the id of the dense run whose trained model it prunes;
            ``None`` otherwise.
    """

    run_id: str
    dataset: str
    model: str
    method: str
    scenario: str
    seed: int
    params: Mapping[str, Any] = field(repr=False)
    dense_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-serialisable data (saved as ``params.json`` in the run folder)."""
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "model": self.model,
            "method": self.method,
            "scenario": self.scenario,
            "seed": self.seed,
            "dense_run_id": self.dense_run_id,
            "params": copy.deepcopy(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            run_id=data["run_id"],
            dataset=data["dataset"],
            model=data["model"],
            method=data["method"],
            scenario=data["scenario"],
            seed=int(data["seed"]),
            params=dict(data["params"]),
            dense_run_id=data.get("dense_run_id"),
        )


# ----------------------------------------------------------------------------------------------
# Loading and validation


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
    _check_key(parts[0], KEYS, "key")
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
        _check_key(parts[1], _NESTED_KEYS[parts[0]], f"key in {parts[0]}")
        section = raw.get(parts[0])
        if not isinstance(section, dict):
            section = {}
        section[parts[1]] = value
        raw[parts[0]] = section
    else:
        nested = ", ".join(f"{k}.<key>" for k in _NESTED_KEYS)
        raise ParamsError(f"override key {key!r} is not settable; use a top-level key or one of {nested}")


def _check_key(key: Any, valid: Sequence[str], what: str) -> None:
    if key in valid:
        return
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ParamsError(f"unknown {what} {key!r}; {hint}(valid keys: {', '.join(valid)})")


def _validate(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    for key in raw:
        _check_key(key, KEYS, "key")
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
                _check_key(sub, tuple(default), f"key in {key}")
            value = {**copy.deepcopy(default), **value}
        out[key] = value
    out["name"] = raw["name"]
    out["datasets"] = raw["datasets"]
    out["models"] = raw["models"]

    # Lazy imports: these modules are heavy (torch) and config must stay importable on its own.
    from helpers import data as data_mod
    from helpers import models as models_mod
    from helpers import pruning

    name = out["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParamsError(f"name must be a folder-safe string (letters, digits, _ . -), got {name!r}")
    out["datasets"] = _names("datasets", out["datasets"], data_mod.DATASETS)
    out["models"] = _names("models", out["models"], models_mod.MODELS)
    out["methods"] = _names("methods", out["methods"], pruning.METHODS)
    out["scenarios"] = _scenarios(out["scenarios"], pruning)
    out["seeds"] = _int_list("seeds", out["seeds"], minimum=0)

    out["epochs"] = _int("epochs", out["epochs"], minimum=1)
    out["batch_size"] = _int("batch_size", out["batch_size"], minimum=2)
    out["eval_batch_size"] = _int("eval_batch_size", out["eval_batch_size"], minimum=1)
    out["lr"] = _float("lr", out["lr"], minimum=0.0, strict=True)
    out["weight_decay"] = _float("weight_decay", out["weight_decay"], minimum=0.0)
    out["optimizer"] = _choice("optimizer", out["optimizer"], OPTIMIZERS)
    out["swap_fraction"] = _float("swap_fraction", out["swap_fraction"], minimum=0.0, maximum=1.0)
    out["finetune_epochs"] = _int("finetune_epochs", out["finetune_epochs"], minimum=0)
    out["training_form"] = _training_forms(out["training_form"])
    out["set_allocation"] = _choice("set_allocation", out["set_allocation"], pruning.SET_ALLOCATIONS)
    out["image_size"] = _optional_int("image_size", out["image_size"], minimum=1)
    smallest = max(models_mod.min_input_size(m) for m in out["models"])
    if out["image_size"] is not None and out["image_size"] < smallest:
        raise ParamsError(
            f"image_size {out['image_size']} is below the models' minimum input {smallest} px; "
            f"use image_size >= {smallest} or null (pad small images to the minimum)"
        )
    out["train_subset"] = _optional_int("train_subset", out["train_subset"], minimum=2)
    out["val_subset"] = _optional_int("val_subset", out["val_subset"], minimum=2)
    out["test_subset"] = _optional_int("test_subset", out["test_subset"], minimum=2)
    out["data_seed"] = _int("data_seed", out["data_seed"], minimum=0)
    if out["data_root"] is not None and not isinstance(out["data_root"], str):
        raise ParamsError(f"data_root must be a folder path or null, got {out['data_root']!r}")
    out["dataset_options"] = _dataset_options(out["dataset_options"], out["datasets"], data_mod)
    out["model_options"] = _model_options(out["model_options"], out["models"])
    aug = out["augment"]
    aug["hflip"] = _bool("augment.hflip", aug["hflip"])
    aug["rotation_degrees"] = _float("augment.rotation_degrees", aug["rotation_degrees"], minimum=0.0, maximum=180.0)
    out["device"] = _device(out["device"])
    out["threads"] = _optional_int("threads", out["threads"], minimum=1)
    if out["threads"] is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        out["threads"] = max(1, len(usable))
    inf = out["inference"]
    inf["samples"] = _int("inference.samples", inf["samples"], minimum=1)
    inf["batch_sizes"] = _int_list("inference.batch_sizes", inf["batch_sizes"], minimum=1)
    inf["warmup"] = _int("inference.warmup", inf["warmup"], minimum=0)
    inf["threads"] = _optional_int("inference.threads", inf["threads"], minimum=1)
    if inf["threads"] is None:
        inf["threads"] = out["threads"]
    out["energy"]["estimate"] = _bool("energy.estimate", out["energy"]["estimate"])
    out["keep_models"] = _bool("keep_models", out["keep_models"])
    out["checkpoint_every_s"] = _float("checkpoint_every_s", out["checkpoint_every_s"], minimum=0.0)
    _companion(out)
    from helpers.executors import validate_executor

    out["executor"] = validate_executor(out["executor"])
    if not isinstance(out["out"], str) or not out["out"]:
        raise ParamsError(f"out must be a folder path, got {out['out']!r}")
    return {k: out[k] for k in KEYS}


def _training_forms(value: Any) -> str | list[str]:
    """One form (a string, as before) or several distinct forms in the given order (a list)."""
    if isinstance(value, (list, tuple)):
        forms = list(dict.fromkeys(_choice("training_form", v, TRAINING_FORMS) for v in value))
        if not forms:
            raise ParamsError(f"training_form is an empty list; give one of {', '.join(TRAINING_FORMS)} or a list of them")
        return forms[0] if len(forms) == 1 else forms
    return _choice("training_form", value, TRAINING_FORMS)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _int(key: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{key} must be an integer, got {value!r} ({_type_name(value)})")
    if minimum is not None and value < minimum:
        raise ParamsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _optional_int(key: str, value: Any, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{key} must be an integer or null, got {value!r} ({_type_name(value)})")
    return _int(key, value, minimum=minimum)


def _float(
    key: str, value: Any, *, minimum: float | None = None, maximum: float | None = None, strict: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamsError(f"{key} must be a finite number, got {value!r} ({_type_name(value)})")
    value = float(value)
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = "greater than" if strict else "at least"
        raise ParamsError(f"{key} must be {bound} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParamsError(f"{key} must be at most {maximum}, got {value}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamsError(f"{key} must be true or false, got {value!r} ({_type_name(value)})")
    return value


def _choice(key: str, value: Any, accepted: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in accepted:
        close = difflib.get_close_matches(str(value), accepted, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"unknown {key} {value!r}{hint}; expected one of {', '.join(accepted)}")
    return value


def _as_list(key: str, value: Any) -> list[Any]:
    if isinstance(value, (str, int, dict)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParamsError(f"{key} must be a non-empty list, got {value!r}")
    return value


def _names(key: str, value: Any, accepted: Sequence[str]) -> list[str]:
    items = _as_list(key, value)
    single = key[:-1] if key.endswith("s") else key
    out: list[str] = []
    for item in items:
        name = _choice(single, item, accepted)
        if name not in out:
            out.append(name)
    return out


def _int_list(key: str, value: Any, *, minimum: int) -> list[int]:
    items = _as_list(key, value)
    out = [_int(key, v, minimum=minimum) for v in items]
    if len(set(out)) != len(out):
        raise ParamsError(f"{key} has repeated values {out}; list each once")
    return out


def _scenarios(value: Any, pruning: Any) -> list[dict[str, Any]]:
    items = _as_list("scenarios", value)
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict) and set(item) >= {"conv", "linear"} and "name" in item:
            item = {"conv": item["conv"], "linear": item["linear"]}
        try:
            scenario = pruning.parse_scenario(item)
        except (ValueError, TypeError) as exc:
            raise ParamsError(f"scenarios: {' '.join(str(exc).split())}") from None
        resolved = {"name": scenario.name, "conv": float(scenario.conv), "linear": float(scenario.linear)}
        if resolved not in out:
            out.append(resolved)
    return out


def _dataset_options(value: Any, datasets: Sequence[str], data_mod: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"dataset_options must map a dataset name to its options, got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    reserved = ("train_subset", "val_subset", "test_subset")
    for name, options in value.items():
        if name not in datasets:
            raise ParamsError(
                f"dataset_options names {name!r}, which is not in datasets ({', '.join(datasets)}); "
                "add it to datasets or remove its options"
            )
        if not isinstance(options, dict):
            raise ParamsError(f"dataset_options.{name} must be a mapping of options, got {options!r}")
        accepted = tuple(k for k in data_mod.DATASET_OPTIONS[name] if k not in reserved)
        for key in options:
            if key in reserved:
                raise ParamsError(
                    f"dataset_options.{name}.{key}: set {key} at the top level (it applies to every dataset)"
                )
            _check_key(key, accepted, f"option of dataset {name}")
        out[name] = dict(options)
    return out


def _model_options(value: Any, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"model_options must map a model name to its options, got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, options in value.items():
        if name not in models:
            raise ParamsError(f"model_options names {name!r}, which is not in models ({', '.join(models)}); "
                              "remove it or add the model")
        if not isinstance(options, dict):
            raise ParamsError(f"model_options.{name} must be a mapping of options, got {options!r}")
        checked: dict[str, Any] = {}
        for key, option in options.items():
            _check_key(key, MODEL_OPTION_KEYS, f"key in model_options.{name}")
            if key == "seeds":
                checked[key] = _int_list(f"model_options.{name}.seeds", option, minimum=0)
                continue
            minimum = {"epochs": 1, "batch_size": 2}.get(key, 2)
            checked[key] = (_int if key in ("epochs", "batch_size") else _optional_int)(
                f"model_options.{name}.{key}", option, minimum=minimum)
        out[name] = checked
    return out


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ParamsError(f"unknown device {value!r}; expected cpu, cuda or cuda:N")
    return value


def _companion(out: dict[str, Any]) -> None:
    """Validate the study kind and the companion studies' keys (checked whatever the study, so a
    profile never carries a silently wrong value)."""
    from helpers import companion

    out["study_kind"] = _choice("study_kind", out["study_kind"], STUDIES)
    out["criteria"] = list(dict.fromkeys(
        _choice("criterion", c, companion.STUDY_CRITERIA) for c in _as_list("criteria", out["criteria"])
    ))
    out["filter_sparsity"] = _float("filter_sparsity", out["filter_sparsity"], minimum=0.0, maximum=0.95, strict=True)
    out["slimming_lambda"] = _float("slimming_lambda", out["slimming_lambda"], minimum=0.0, strict=True)
    out["calibration_size"] = _int("calibration_size", out["calibration_size"], minimum=2)
    out["granularities"] = list(dict.fromkeys(
        _choice("granularity", g, companion.GRANULARITIES) for g in _as_list("granularities", out["granularities"])
    ))
    budgets = [_float("budgets", b, minimum=0.0, maximum=0.99, strict=True) for b in _as_list("budgets", out["budgets"])]
    if len(set(budgets)) != len(budgets):
        raise ParamsError(f"budgets has repeated values {budgets}; list each once")
    out["budgets"] = budgets
    ft = out["finetune"]
    ft["epochs"] = _optional_int("finetune.epochs", ft["epochs"], minimum=0)
    lrs = _as_list("finetune.lrs", ft["lrs"])
    ft["lrs"] = [_float("finetune.lrs", lr, minimum=0.0, strict=True) for lr in lrs]
    ft["batch_size"] = _int("finetune.batch_size", ft["batch_size"], minimum=2)
    ft["momentum"] = _float("finetune.momentum", ft["momentum"], minimum=0.0, maximum=0.999)
    ft["hflip"] = _bool("finetune.hflip", ft["hflip"])
    ft["rotation_degrees"] = _float("finetune.rotation_degrees", ft["rotation_degrees"], minimum=0.0, maximum=180.0)
    # issue 15 keys
    from helpers.criteria import GREEDY_RESCORE

    out["greedy_rescore"] = _choice("greedy_rescore", out["greedy_rescore"], GREEDY_RESCORE)
    out["dense_lr_schedule"] = _choice("dense_lr_schedule", out["dense_lr_schedule"], companion.DENSE_LR_SCHEDULES)
    if out["study_kind"] == "criteria":
        needs_bn = [c for c in out["criteria"] if c.startswith("bn_slimming")]
        no_bn = [m for m in out["models"] if m in companion.MODELS_WITHOUT_BATCHNORM]
        if needs_bn and no_bn:
            raise ParamsError(
                f"criteria {', '.join(needs_bn)} rank filters by BatchNorm scales, but model {no_bn[0]} has no "
                f"BatchNorm; use vgg16_bn instead of vgg16, or drop {', '.join(needs_bn)} from criteria"
            )


def study_dir(params: StudyParams, out: str | os.PathLike | None = None) -> Path:
    """``<out>/<name>`` for ``params``; ``out`` overrides ``params.out``."""
    return Path(out if out is not None else params["out"]) / params["name"]


# ----------------------------------------------------------------------------------------------
# The grid


def training_form(requested: str, method: str, conv_sparsity: float) -> str:
    """The form a run trains in: ``compacted`` where it is requested and shrinks the network, else ``masked``.

    Only removed filters shrink a network (conv sparsity > 0); ``dense`` has none. Fixed masks
    (``pre_training``, ``post_training``'s fine-tuning) train their compacted network once built,
    exactly as the masked one; ``in_training`` and ``set`` rebuild it after every swap
    (:class:`helpers.pruning.EpochCompaction`, which says how that differs from masked training).
    """
    if requested == "compacted" and method in COMPACTABLE_METHODS and conv_sparsity > 0:
        return "compacted"
    return "masked"


def _result_params(run: Mapping[str, Any]) -> dict[str, Any]:
    keys = list(RESULT_KEYS)
    if run["method"] != "dense":
        keys.append("training_form")
    if run["method"] in ("in_training", "set"):
        keys.append("swap_fraction")
    if run["method"] == "set":
        keys.append("set_allocation")
    if run["method"] == "post_training":
        keys.append("finetune_epochs")
    return {k: run[k] for k in keys}


def _run_id(run: Mapping[str, Any], *, form_in_id: bool = False) -> str:
    blob = json.dumps(_result_params(run), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    form = f"-{run['training_form']}" if form_in_id else ""
    return f"{run['dataset']}-{run['model']}-{run['method']}-{run['scenario']}{form}-s{run['seed']}-{digest}"


_GRID_KEYS = ("name", "datasets", "models", "methods", "scenarios", "seeds", "out")
_PROTOCOL_KEYS = tuple(k for k in KEYS if k not in _GRID_KEYS)


def _make_spec(
    params: StudyParams, dataset: str, model: str, method: str, scenario: Mapping[str, Any], seed: int,
    form: str | None = None,
) -> RunSpec:
    run: dict[str, Any] = {k: copy.deepcopy(params[k]) for k in _PROTOCOL_KEYS}
    run.update(
        dataset=dataset,
        dataset_options=copy.deepcopy(params["dataset_options"].get(dataset, {})),
        model=model,
        method=method,
        scenario=scenario["name"],
        conv_sparsity=float(scenario["conv"]),
        linear_sparsity=float(scenario["linear"]),
        seed=seed,
    )
    budget = {k: v for k, v in run.pop("model_options").get(model, {}).items() if k != "seeds"}
    run.update(budget)  # the model's budget replaces the study's
    requested = params["training_form"]
    several = isinstance(requested, list)
    run["training_form"] = training_form(form or (requested[0] if several else requested), method,
                                         float(scenario["conv"]))
    dense_run_id = None
    if method == "post_training":
        dense_run_id = _make_spec(params, dataset, model, "dense", _DENSE_SCENARIO, seed).run_id
    return RunSpec(
        run_id=_run_id(run, form_in_id=several and method != "dense"),
        dataset=dataset,
        model=model,
        method=method,
        scenario=scenario["name"],
        seed=seed,
        params=run,
        dense_run_id=dense_run_id,
    )


_DENSE_SCENARIO = {"name": "none", "conv": 0.0, "linear": 0.0}


def expand_grid(params: StudyParams) -> list[RunSpec]:
    """Every run of the study, dense runs first (``post_training`` runs reuse them).

    Returns:
        One spec per dataset x model x seed for ``dense`` and one per dataset x model x method x
        scenario x seed for each pruning method, in a stable order: by dataset, model, seed, with
        the dense run before the runs that depend on it. Empty for a companion study
        (``study_kind: criteria`` or ``granularity``), whose runs :func:`helpers.companion.plan` lists.
    """
    if params["study_kind"] != "primary":  # planned and run by helpers.companion (its own run kinds)
        return []
    specs: list[RunSpec] = []
    methods = [m for m in params["methods"] if m != "dense"]
    forms = params["training_form"] if isinstance(params["training_form"], list) else [params["training_form"]]
    for dataset in params["datasets"]:
        for model in params["models"]:
            for seed in params["model_options"].get(model, {}).get("seeds", params["seeds"]):
                specs.append(_make_spec(params, dataset, model, "dense", _DENSE_SCENARIO, seed))
                for method in methods:
                    for scenario in params["scenarios"]:
                        seen: set[str] = set()  # a form that resolves to one already planned is the same run
                        for form in forms:
                            spec = _make_spec(params, dataset, model, method, scenario, seed, form)
                            if spec.params["training_form"] not in seen:
                                seen.add(spec.params["training_form"])
                                specs.append(spec)
    return specs


def dense_twin(spec: RunSpec) -> RunSpec:
    """The dense run a ``post_training`` spec reuses (same dataset, model, seed and protocol)."""
    if spec.method != "post_training":
        raise ValueError(f"only post_training runs reuse a dense run; {spec.run_id} is {spec.method}")
    run = {k: copy.deepcopy(v) for k, v in spec.params.items()}
    run.update(method="dense", scenario="none", conv_sparsity=0.0, linear_sparsity=0.0, training_form="masked")
    twin = RunSpec(
        run_id=_run_id(run), dataset=spec.dataset, model=spec.model, method="dense", scenario="none",
        seed=spec.seed, params=run,
    )  # fmt: skip
    if spec.dense_run_id is not None and twin.run_id != spec.dense_run_id:
        raise ValueError(f"dense twin of {spec.run_id} has id {twin.run_id}, expected {spec.dense_run_id}")
    return twin
