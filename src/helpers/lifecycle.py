"""One run's folder, from start to finish, for every kind of study: work folder, checkpoint, resume,
failure record, partial-file cleanup and the atomic finish.

A run works in ``<study>/runs/.work/<run_id>/`` (:func:`begin_run`), renamed once finished to
``<study>/runs/<run_id>/`` in one atomic step, ``result.json`` written last (:func:`finish`): a folder
under ``runs/`` is always complete and skipped next time (:func:`is_finished`). The work folder holds
``checkpoint.pt`` (model, optimizer, method, history and RNG state after the last finished epoch) while
training, then ``trained.pt`` (the history) and ``model.pt`` (:func:`trained_model`), so a killed run
resumes from its last epoch and an interruption after training does not retrain. A run that raises
leaves ``error.json`` (:func:`record_failure`), shows as ``failed`` and is retried next time.

Damaged files never block a study (:mod:`helpers.files`): an unreadable or unfitting checkpoint or
``trained.pt``, or a finished folder with an unreadable file, is moved to
``runs/.damaged/<run_id>-<time>/`` with a warning, and the run trains again from epoch 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from helpers import pruning
from helpers.files import DamagedFileError, load_torch, scrub_unsafe_advice, set_aside
from helpers.params import RunSpec
from helpers.results import environment, run_folder_damage, write_json_atomic
from helpers.train import FitResult, load_checkpoint, save_checkpoint

__all__ = [
    "SUBDIRS",
    "run_dir",
    "work_dir",
    "is_finished",
    "begin_run",
    "trained_model",
    "finish",
    "finish_run",
    "record_failure",
    "failure_message",
    "clean_partial_files",
    "load_trained",
    "retry_without_checkpoint",
]

log = logging.getLogger(__name__)

#: The folders of a study: ``<study>/{runs,results,figures,notebooks}``.
SUBDIRS: tuple[str, ...] = ("runs", "results", "figures", "notebooks")


def run_dir(study: str | os.PathLike, run_id: str) -> Path:
    """The finished folder of a run: ``<study>/runs/<run_id>``."""
    return Path(study) / "runs" / run_id


def work_dir(study: str | os.PathLike, run_id: str) -> Path:
    """The folder a run works in until it is finished: ``<study>/runs/.work/<run_id>``."""
    return Path(study) / "runs" / ".work" / run_id


def is_finished(study: str | os.PathLike, run_id: str) -> bool:
    """Whether the run's finished folder exists, with its ``result.json``, and every file of it reads
    (:func:`helpers.results.read_run_folder`). A damaged one is moved to ``runs/.damaged/<run_id>-<time>/``
    with a warning, and the run counts as not finished."""
    folder = run_dir(study, run_id)
    if not (folder / "result.json").is_file():
        return False
    damage = run_folder_damage(folder)
    if damage is None:
        return True
    try:
        moved = set_aside(study, run_id, folder)
    except FileNotFoundError:  # moved concurrently by another worker
        return False
    log.warning("damaged run folder %s (%s): moved to %s; the run will run again", folder, damage, moved)
    return False


def begin_run(spec: RunSpec, study: Path) -> Path:
    """Open the run's work folder: create it, remove what an interrupted attempt left, set the run's
    torch threads, write ``params.json`` and ``environment.json``. Returns the work folder."""
    p = spec.params
    work = work_dir(study, spec.run_id)
    work.mkdir(parents=True, exist_ok=True)
    clean_partial_files(work)
    torch.set_num_threads(p["threads"])
    write_json_atomic(work / "params.json", spec.to_dict())
    write_json_atomic(work / "environment.json", environment(p["threads"], inference_threads=p["inference"]["threads"]))
    return work


def trained_model(study: Path, spec: RunSpec, work: Path, train: Callable[[], tuple[torch.nn.Module, FitResult]],
                  device: torch.device, meta: Mapping[str, Any]) -> tuple[torch.nn.Module | None, FitResult]:  # fmt: skip
    """The run's trained model (``None`` when diverged) and training result: from ``trained.pt`` and
    ``model.pt`` when training finished before an interruption, else ``train()`` (resuming from
    ``checkpoint.pt``, :func:`retry_without_checkpoint`), after which ``model.pt`` (masks are its zeros;
    not when diverged) and ``trained.pt`` are written and the checkpoint removed."""
    model_path = work / "model.pt"
    result = load_trained(study, spec.run_id, work)
    if result is not None:
        return (None if result.diverged else pruning.load_model(model_path).to(device)), result
    model, result = retry_without_checkpoint(study, spec.run_id, work, train)
    if not result.diverged:
        pruning.save_model(model, model_path, meta=dict(meta))
    save_checkpoint(work / "trained.pt", {
        "history": result.history, "diverged": result.diverged, "epochs_completed": result.epochs_completed,
        "best": result.best,
    })  # fmt: skip
    (work / "checkpoint.pt").unlink(missing_ok=True)
    return (None if result.diverged else model), result


def finish(study: Path, spec: RunSpec, work: Path, row: Mapping[str, Any]) -> str:
    """Write ``result.json`` last (``trained.pt`` removed first) and rename the work folder into place.
    Returns the row's status."""
    (work / "trained.pt").unlink(missing_ok=True)
    write_json_atomic(work / "result.json", dict(row))
    finish_run(work, run_dir(study, spec.run_id))
    return row["status"]


def finish_run(work: Path, final: Path) -> None:
    """Rename the work folder to the finished folder ``final`` in one atomic step. A damaged folder already
    at ``final`` is moved to ``runs/.damaged/`` first; a readable one (another worker finished the run)
    wins, and the work folder is removed."""
    study = final.parent.parent
    if final.exists() and run_folder_damage(final) is not None:
        moved = set_aside(study, final.name, final)
        log.warning("run folder %s was incomplete or damaged: moved to %s", final, moved)
    try:
        os.rename(work, final)
    except OSError:
        if (final / "result.json").is_file():  # finished concurrently by another worker
            shutil.rmtree(work, ignore_errors=True)
        else:
            raise
    try:
        work.parent.rmdir()  # only when empty
    except OSError:
        pass


def record_failure(spec: RunSpec, study: Path, exc: BaseException, ids: Mapping[str, Any]) -> None:
    """Leave ``error.json`` in the run's work folder: the run shows as ``failed`` and is retried next time.

    Call it from the ``except`` block that caught ``exc`` (whose message becomes the row's ``error``; the
    traceback is the one being handled). ``ids`` are the row's identifying columns (the kind's
    ``failure_ids``). If ``error.json`` cannot be written (disk full), that is logged."""
    row = {
        **ids, "status": "failed", "device": spec.params["device"], "error": failure_message(exc),
        "traceback": scrub_unsafe_advice(traceback.format_exc()),
    }  # fmt: skip
    work = work_dir(study, spec.run_id)
    try:
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / "error.json", row)
    except OSError as write_exc:
        log.error("run %s: %s (its failure is not recorded; the next call retries it)", spec.run_id, write_exc)


def failure_message(exc: BaseException) -> str:
    """A failed run's ``error``: the exception's type and message on one line, without any library
    advice to load a file unsafely."""
    return f"{type(exc).__name__}: {scrub_unsafe_advice(' '.join(str(exc).split()))}"


def clean_partial_files(folder: Path) -> None:
    """Remove temporary files of an interrupted write and the ``error.json`` of an earlier failed attempt."""
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    (folder / "error.json").unlink(missing_ok=True)


def load_trained(study: Path, run_id: str, work: Path) -> FitResult | None:
    """The training result a run left in ``trained.pt``, or None when there is none or it or ``model.pt``
    cannot be read (both are then moved to ``runs/.damaged/`` with a warning: the run trains again)."""
    trained_path, model_path = work / "trained.pt", work / "model.pt"
    if not trained_path.is_file():
        return None
    try:
        state = load_checkpoint(trained_path, required=("history", "diverged", "epochs_completed"))
        result = FitResult(history=[dict(r) for r in state["history"]], diverged=bool(state["diverged"]),
                           epochs_completed=int(state["epochs_completed"]), best=state.get("best"))  # fmt: skip
        if not result.diverged:
            load_torch(model_path, what="model file", mmap=True)
        return result
    except (DamagedFileError, FileNotFoundError, TypeError, ValueError) as exc:
        moved = [set_aside(study, run_id, path) for path in (trained_path, model_path) if path.is_file()]
        log.warning("run %s: %s; moved %s aside to %s; training restarts from epoch 0", run_id,
                    ' '.join(str(exc).split()), "trained.pt and model.pt" if len(moved) == 2 else "trained.pt",
                    moved[0].parent if moved else "runs/.damaged")  # fmt: skip
        return None


def retry_without_checkpoint(study: Path, run_id: str, work: Path, attempt: Callable[[], Any]) -> Any:
    """``attempt()``; if it fails on a damaged or incompatible ``checkpoint.pt`` of ``work``, move that to
    ``runs/.damaged/`` with a warning and call ``attempt()`` again, which trains from epoch 0. ``attempt``
    must build everything afresh (model, optimizer, method): a failed resume may have restored part of them."""
    checkpoint = work / "checkpoint.pt"
    try:
        return attempt()
    except DamagedFileError as exc:
        if exc.path != checkpoint or not checkpoint.is_file():
            raise
        moved = set_aside(study, run_id, checkpoint)
        log.warning("checkpoint %s cannot be used (%s): moved to %s; run %s restarts from epoch 0", checkpoint,
                    exc.reason, moved, run_id)  # fmt: skip
    return attempt()
