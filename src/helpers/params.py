"""The orchestration's vocabulary: a validated study (:class:`StudyParams`), one run (:class:`RunSpec`),
the plug-in interface of a kind of study (:class:`StudyKind`), :class:`ParamsError` and the value checks
every schema uses (each names the key, the bad value and what is accepted).

It imports nothing of the package, so the study kinds, the executors and :mod:`helpers.config` share it.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ParamsError",
    "StudyParams",
    "RunSpec",
    "StudyKind",
    "RESULT_KEYS",
    "study_dir",
    "check_key",
    "check_int",
    "check_optional_int",
    "check_float",
    "check_bool",
    "check_choice",
    "as_list",
    "check_names",
    "check_int_list",
]


class ParamsError(ValueError):
    """A study file or override that cannot be run; the message is one line naming the problem."""

# Parameters that can change a run's results, hence enter its run_id hash (each study kind adds its own, e.g.
# helpers.primary.result_params); the other keys (threads, executor, out, ...) change only where or how fast.
RESULT_KEYS: tuple[str, ...] = (
    "dataset", "model", "method", "conv_sparsity", "linear_sparsity", "seed", "epochs", "batch_size",
    "lr", "weight_decay", "optimizer", "image_size", "train_subset", "val_subset", "test_subset",
    "data_seed", "dataset_options", "augment", "device", "inference", "energy",
)  # fmt: skip


@dataclass(frozen=True)
class StudyParams:
    """A validated study: ``values``, every key of :data:`helpers.config.KEYS` (defaults filled in,
    JSON-serialisable; scenarios resolved to ``{"name", "conv", "linear"}`` mappings)."""

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
    """One run of the grid: everything a study kind's ``run_one`` needs, nothing else.

    Attributes:
        run_id: ``{dataset}-{model}-{method}-{scenario}-s{seed}-{hash8}``.
        dataset, model, method, scenario, seed: the run's place in the grid (``dense``: scenario ``"none"``).
        params: the resolved, JSON-serialisable parameters: the study's protocol keys plus the run's place
            and its ``conv_sparsity`` and ``linear_sparsity``.
        dense_run_id: the id of the dense run whose trained model it prunes, else ``None``.
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


@dataclass(frozen=True)
class StudyKind:
    """What a kind of study plugs in (registry: :mod:`helpers.studies`). Executors are handed it as their
    task and call only :attr:`run_one` and :attr:`failure_ids`.

    Attributes:
        name: the ``study_kind`` value.
        defaults: the kind's own keys with their defaults (merged into :data:`helpers.config.DEFAULTS`).
        validate: checks the kind's own keys in the resolved parameters, in place (for every study, whatever
            its kind, so a profile never carries a silently wrong value).
        plan: validated parameters -> the runs, in execution order (a run's ``dense_run_id`` before it).
        run_one: ``run_one(spec, study, progress=False) -> status``; executes one run, idempotently.
        failure_ids: a run's identifying columns for its ``error.json`` when it fails.
        notebooks: the kind's notebooks in ``notebooks/``, in the order ``python -m helpers study`` runs them.
        finish: called with the study folder after its tables are rebuilt (``None``: nothing more).
    """

    name: str
    defaults: Mapping[str, Any]
    validate: Callable[[dict[str, Any]], None]
    plan: Callable[[StudyParams], list[RunSpec]]
    run_one: Callable[..., str]
    failure_ids: Callable[[RunSpec], dict[str, Any]]
    notebooks: tuple[str, ...]
    finish: Callable[[Path], Any] | None = None


def study_dir(params: StudyParams, out: str | os.PathLike | None = None) -> Path:
    """``<out>/<name>`` for ``params``; ``out`` overrides ``params.out``."""
    return Path(out if out is not None else params["out"]) / params["name"]


# ---------------------------------------------------------------------------------------------- checks


def check_key(key: Any, valid: Sequence[str], what: str) -> None:
    """Raise :class:`ParamsError` naming ``key`` and the closest of ``valid`` when ``key`` is not one of them."""
    if key in valid:
        return
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ParamsError(f"unknown {what} {key!r}; {hint}(valid keys: {', '.join(valid)})")


def check_int(key: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{key} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ParamsError(f"{key} must be at least {minimum}, got {value}")
    return value


def check_optional_int(key: str, value: Any, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{key} must be an integer or null, got {value!r} ({type(value).__name__})")
    return check_int(key, value, minimum=minimum)


def check_float(
    key: str, value: Any, *, minimum: float | None = None, maximum: float | None = None, strict: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamsError(f"{key} must be a finite number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = "greater than" if strict else "at least"
        raise ParamsError(f"{key} must be {bound} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParamsError(f"{key} must be at most {maximum}, got {value}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamsError(f"{key} must be true or false, got {value!r} ({type(value).__name__})")
    return value


def check_choice(key: str, value: Any, accepted: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in accepted:
        close = difflib.get_close_matches(str(value), accepted, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"unknown {key} {value!r}{hint}; expected one of {', '.join(accepted)}")
    return value


def as_list(key: str, value: Any) -> list[Any]:
    if isinstance(value, (str, int, dict)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParamsError(f"{key} must be a non-empty list, got {value!r}")
    return value


def check_names(key: str, value: Any, accepted: Sequence[str]) -> list[str]:
    single = key[:-1] if key.endswith("s") else key
    return list(dict.fromkeys(check_choice(single, item, accepted) for item in as_list(key, value)))


def check_int_list(key: str, value: Any, *, minimum: int) -> list[int]:
    items = as_list(key, value)
    out = [check_int(key, v, minimum=minimum) for v in items]
    if len(set(out)) != len(out):
        raise ParamsError(f"{key} has repeated values {out}; list each once")
    return out
