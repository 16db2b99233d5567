"""Run a study of any kind: plan, execute each run (idempotent, resumable) on the study's executor,
collect the tables.

The flow is one way (DESIGN.md): :func:`helpers.config.load_params` validates the study file; the study's
kind (:mod:`helpers.studies`) plans the runs; the executor (:mod:`helpers.executors`) calls the kind's
``run_one`` per unfinished run (a pure function of its spec and the study folder, :mod:`helpers.lifecycle`);
:func:`helpers.results.collect` rebuilds the tables from the run folders, and the kind's ``finish`` follows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.config import load_params
from helpers.executors import make_executor
from helpers.lifecycle import SUBDIRS, is_finished
from helpers.params import RunSpec, StudyParams, study_dir
from helpers.results import collect, write_json_atomic
from helpers.rundata import check_datasets, check_device_available
from helpers.studies import kind

__all__ = ["run_study", "plan"]


def plan(params: StudyParams) -> list[RunSpec]:
    """The study's runs, in execution order (its kind's ``plan``)."""
    return kind(params["study_kind"]).plan(params)


def run_study(
    params: StudyParams | Mapping[str, Any] | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Run every unfinished run of the study on its ``executor`` and rebuild its tables from the run folders.
    Idempotent: finished runs are skipped, interrupted runs resume from their last checkpoint, failed
    runs (``error.json``, status ``failed``) are retried.

    Args:
        params: validated parameters, or a mapping / YAML path for :func:`helpers.config.load_params`.
        out: output root overriding ``params["out"]``.
        progress: show tqdm bars (only on a terminal).

    Returns:
        The study folder ``<out>/<name>``.

    Raises:
        ParamsError: invalid parameters, an unavailable device or a dataset that cannot be loaded
            (nothing is written then).
    """
    if not isinstance(params, StudyParams):
        params = load_params(params)
    study_kind = kind(params["study_kind"])
    study = study_dir(params, out)
    executor = make_executor(params["executor"])
    specs = study_kind.plan(params)
    # What validation cannot see, before anything is written: the device (unless the runs execute on
    # other machines, e.g. the GPU nodes of a Dask cluster) and every dataset (downloading where allowed).
    if not executor.remote:
        check_device_available(params["device"])
    check_datasets(specs)
    for sub in SUBDIRS:
        (study / sub).mkdir(parents=True, exist_ok=True)
    resolved = params.to_dict()
    if out is not None:
        resolved["out"] = str(out)
    write_json_atomic(study / "params.json", resolved)
    pending = [spec for spec in specs if not is_finished(study, spec.run_id)]
    desc = f"study {params['name']}" if study_kind.name == "primary" else f"{study_kind.name} study {params['name']}"
    executor.run(pending, study, task=study_kind, progress=progress, desc=desc)
    collect(study, run_ids=[s.run_id for s in specs])
    if study_kind.finish is not None:
        study_kind.finish(study)
    return study
