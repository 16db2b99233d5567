"""The registry of the kinds of study: the one place that knows them.

The study file's ``study_kind`` key (the name old study files and folders use) picks one
:class:`~helpers.params.StudyKind`:

- ``primary``: the paper's grid (:data:`helpers.primary.KIND`; notebooks 01-04, 07);
- ``criteria``: pruning criteria at a matched filter budget (:data:`helpers.companion.CRITERIA_KIND`; notebook 05);
- ``granularity``: pruning granularities at matched budgets (:data:`helpers.companion.GRANULARITY_KIND`; notebook 06).

Each kind brings its keys and their validation, its plan, its ``run_one`` and its notebooks;
:mod:`helpers.config` asks :func:`validate_kinds` to check them, :mod:`helpers.runner` hands the kind to an executor.
"""

from __future__ import annotations

from typing import Any

from helpers import companion, primary
from helpers.params import StudyKind, check_choice

__all__ = ["KINDS", "DEFAULT_KIND", "kind", "kind_defaults", "validate_kinds"]

#: Every kind of study, by its ``study_kind`` value.
KINDS: dict[str, StudyKind] = {k.name: k for k in (primary.KIND, companion.CRITERIA_KIND, companion.GRANULARITY_KIND)}
#: The kind of a study file without ``study_kind``.
DEFAULT_KIND = primary.KIND.name


def kind(name: Any) -> StudyKind:
    """The kind of study named ``name`` (a ``study_kind`` value).

    Raises:
        ParamsError: naming the value, the closest kind and every kind.
    """
    return KINDS[check_choice("study_kind", name, tuple(KINDS))]


def kind_defaults() -> dict[str, Any]:
    """Every kind's own keys with their defaults (keys two kinds share have one default)."""
    merged: dict[str, Any] = {}
    for study_kind in KINDS.values():
        for key, value in study_kind.defaults.items():
            if key in merged and merged[key] != value:
                raise RuntimeError(f"study kinds disagree on the default of {key!r}")
            merged[key] = value
    return merged


def validate_kinds(out: dict[str, Any]) -> None:
    """Let every kind check its own keys in the resolved parameters ``out`` (in place), whatever the
    study's kind, so a profile never carries a silently wrong value."""
    done: set[int] = set()
    for study_kind in KINDS.values():
        if id(study_kind.validate) not in done:
            done.add(id(study_kind.validate))
            study_kind.validate(out)
