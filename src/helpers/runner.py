"""Run a study's grid: plan, execute each run (idempotent, resumable), collect the tables.

The flow is one way (see DESIGN.md): :func:`helpers.config.expand_grid` plans the runs;
:func:`run_one` executes one :class:`~helpers.config.RunSpec` as a pure function of the spec and the
study folder; :func:`helpers.results.collect` rebuilds the tables from the run folders. The local
executor runs the specs in order, each in a fresh process by default (dense runs come before the
``post_training`` runs that reuse them); since :func:`run_one` needs nothing else, the Dask executor distributes the same
specs, one task per run (:mod:`helpers.executors`; the study file's ``executor`` picks one).

A run works in ``<study>/runs/.work/<run_id>/`` and, once finished, that folder is renamed to
``<study>/runs/<run_id>/`` in one atomic step, ``result.json`` being the last file written into it.
So a folder under ``runs/`` is always complete, a finished run is skipped on the next call, and a
killed run resumes from the checkpoint of its last finished epoch (temporary files of an interrupted
write are removed first). The work folder holds ``checkpoint.pt`` (model, optimizer, method state,
history and RNG state after the last finished epoch; loaded with ``weights_only=True``) while training,
then ``trained.pt`` (the history) next to ``model.pt`` once training is over, so an interruption during
testing or inference does not retrain; both are deleted before the folder is finished. A run that raises leaves ``error.json`` in its work folder, is reported as
``failed`` and retried next time; a run whose loss diverges is finished with status ``diverged``.

Damaged files never block a study (:mod:`helpers.files`). A checkpoint (or ``trained.pt``) that cannot
be read or does not fit the run is moved to ``runs/.damaged/<run_id>-<time>/`` with a warning naming it,
and the run trains again from epoch 0; nothing else is touched. A finished folder with a file that
cannot be read (:func:`helpers.results.read_run_folder`) is moved there as a whole by :func:`is_finished`,
so the run counts as not finished and the same command runs it again. A file that cannot be written
(disk full, quota) leaves the previous one intact and fails the run with a one-line message naming the
path (:class:`helpers.files.WriteFailedError`); the next call retries it.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import shutil
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.claims import write_claims
from helpers.config import ParamsError, RunSpec, StudyParams, dense_twin, expand_grid, load_params, study_dir
from helpers.files import DamagedFileError, atomic_write, load_torch, scrub_unsafe_advice, set_aside
from helpers.measure import (
    EnergyMeter,
    balanced_accuracy,
    benchmark_inference,
    binary_metrics,
    count_params,
    cuda_index,
    file_size_mb,
    macro_auc,
    majority_accuracy,
    peak_memory_scope,
)
from helpers.results import (
    collect,
    environment,
    read_json,
    run_folder_damage,
    summarize_rows,
    write_csv_atomic,
    write_json_atomic,
)
from helpers.train import (
    Data,
    FitResult,
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    seed_everything,
)

__all__ = [
    "run_study",
    "run_one",
    "plan",
    "preflight",
    "check_device_available",
    "is_finished",
    "run_dir",
    "work_dir",
    "prepare_data",
    "record_failure",
    "failure_message",
    "finish_run",
    "clean_partial_files",
    "load_trained",
    "retry_without_checkpoint",
]

log = logging.getLogger(__name__)

SUBDIRS: tuple[str, ...] = ("runs", "results", "figures", "notebooks")
_MAX_LOGIT_IMAGES = 256


def run_dir(study: str | os.PathLike, run_id: str) -> Path:
    """The finished folder of a run: ``<study>/runs/<run_id>``."""
    return Path(study) / "runs" / run_id


def work_dir(study: str | os.PathLike, run_id: str) -> Path:
    """The folder a run works in until it is finished: ``<study>/runs/.work/<run_id>``."""
    return Path(study) / "runs" / ".work" / run_id


def is_finished(study: str | os.PathLike, run_id: str) -> bool:
    """Whether the run's finished folder exists, with its ``result.json``, and every file of it reads.

    A finished folder with a damaged file (:func:`helpers.results.read_run_folder`: ``result.json``,
    ``params.json``, ``epochs.csv``, ``inference.csv``, ``predictions.npz``, a model file, ...) is moved
    to ``runs/.damaged/<run_id>-<time>/`` with one warning naming it, and the run counts as not finished,
    so the same command runs it again.
    """
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


def plan(params: StudyParams) -> list[RunSpec]:
    """The study's runs, in execution order (:func:`helpers.config.expand_grid`)."""
    return expand_grid(params)


# ---------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def _load_splits_cached(dataset: str, key: str) -> dict[str, Any]:
    """The dataset's splits; the decoded JPEG datasets stay on disk (``DiskImages``, read by batch or chunk)."""
    from helpers import data as data_mod

    opts = json.loads(key)
    return data_mod.load_splits(
        dataset,
        root=opts["data_root"],
        size=opts["image_size"],
        seed=opts["data_seed"],
        download=True,
        on_disk=data_mod.dataset_reader(dataset) in data_mod.ON_DISK_READERS,
        train_subset=opts["train_subset"],
        val_subset=opts["val_subset"],
        test_subset=opts["test_subset"],
        **opts["dataset_options"],
    )


def _split_key(run: Mapping[str, Any]) -> str:
    keys = ("data_root", "image_size", "data_seed", "train_subset", "val_subset", "test_subset", "dataset_options")
    return json.dumps({k: run[k] for k in keys}, sort_keys=True)


#: ``stream: auto`` streams when the prepared float32 splits would take more than this fraction of the
#: memory available now (and, for a CUDA device, of the device's memory).
STREAM_MEMORY_FRACTION = 0.5


def _available_memory_bytes(device: str) -> float:
    """The memory prepared tensors may use: the host's available memory, and the device's on CUDA."""
    try:
        import psutil

        limit = float(psutil.virtual_memory().available)
    except ImportError:  # psutil is a dependency; /proc is the fallback on Linux
        limit = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        limit = min(limit, float(torch.cuda.get_device_properties(index).total_memory))
    return limit


def _streams(splits: Mapping[str, Any], min_size: int, stream: Any, device: str) -> bool:
    """Whether the run streams its batches (``stream`` true), or holds prepared floats (false);
    ``auto``: stream when the float32 splits would exceed :data:`STREAM_MEMORY_FRACTION` of the memory."""
    from helpers.data import check_stream
    from helpers.transforms import prepared_shape

    stream = check_stream(stream)
    if stream != "auto":
        return bool(stream)
    distinct = {id(split): split for split in splits.values()}.values()  # val may be test (VisA paper)
    nbytes = sum(4 * math.prod(prepared_shape(split.images.shape, min_size)) for split in distinct)
    return nbytes > STREAM_MEMORY_FRACTION * _available_memory_bytes(device)


@functools.lru_cache(maxsize=4)
def _prepared(dataset: str, key: str, min_size: int, stream: bool = False) -> Data:
    from helpers.transforms import StreamedImages, channel_stats, prepare_images

    splits = _load_splits_cached(dataset, key)
    mean, std = channel_stats(splits["train"].images)
    prep: dict[int, Any] = {}
    for split in splits.values():  # once per distinct split (VisA's paper protocol: val is test)
        if id(split) not in prep:
            make = StreamedImages if stream else prepare_images
            prep[id(split)] = make(split.images, min_size=min_size, mean=mean, std=std)
    x = {name: prep[id(split)] for name, split in splits.items()}
    return Data(
        train_x=x["train"], train_y=splits["train"].labels.long(),
        val_x=x["val"], val_y=splits["val"].labels.long(),
        test_x=x["test"], test_y=splits["test"].labels.long(),
        num_classes=len(splits["train"].classes),
    )  # fmt: skip


def prepare_data(spec: RunSpec) -> Data:
    """The run's splits on the CPU, normalised with the training split's channel statistics and padded
    to the model's minimum input (cached per process).

    Two forms with the same values batch for batch: float tensors in memory (the fast path), or,
    for data too large for that (the full MVTec set), :class:`helpers.transforms.StreamedImages`
    that prepare each batch from the uint8 rows (read from the decoded file for the JPEG datasets) when it is
    read, so resident memory does not grow with the number of images. The dataset option ``stream``
    chooses: ``auto`` (default: stream when the floats would take more than
    :data:`STREAM_MEMORY_FRACTION` of the available memory), ``true`` or ``false``.
    """
    from helpers.models import min_input_size

    key, min_size = _split_key(spec.params), min_input_size(spec.model)
    option = spec.params["dataset_options"].get("stream", "auto")
    stream = _streams(_load_splits_cached(spec.dataset, key), min_size, option, spec.params["device"])
    if stream:
        log.info("%s: streaming batches from the %s images on disk", spec.run_id, spec.dataset)
    return _prepared(spec.dataset, key, min_size, stream)


def check_device_available(device: str) -> None:
    """Raise :class:`ParamsError` when ``device`` (``cpu``, ``cuda`` or ``cuda:N``) is not on this machine."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ParamsError(
                f"device {device!r} is not available on this machine (CUDA devices: "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); use --set device=cpu"
            )


def preflight(params: StudyParams, *, check_device: bool = True) -> None:
    """Check what validation cannot see, before anything is written: the device exists and every
    dataset loads (downloading where allowed).

    Args:
        params: the study.
        check_device: check the device on this machine (not when the runs execute on others, e.g.
            on the GPU nodes of a Dask cluster).

    Raises:
        ParamsError: naming the device or dataset and the fix.
    """
    if check_device:
        check_device_available(params["device"])
    seen = set()
    for spec in plan(params):
        key = (spec.dataset, _split_key(spec.params))
        if key in seen:
            continue
        seen.add(key)
        try:
            _load_splits_cached(*key)
        except (OSError, ValueError, TypeError) as exc:
            raise ParamsError(f"dataset {spec.dataset!r} cannot be loaded: {' '.join(str(exc).split())}") from None


# ---------------------------------------------------------------------------------------------- study


def run_study(
    params: StudyParams | Mapping[str, Any] | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Run every unfinished run of the study and rebuild its tables.

    Idempotent: finished runs are skipped, interrupted runs resume from their last checkpoint,
    failed runs are retried. The study's ``executor`` runs them here, in order, or as Dask tasks
    (:mod:`helpers.executors`); either way the tables are rebuilt from the run folders at the end.

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
    from helpers.executors import make_executor

    if not isinstance(params, StudyParams):
        params = load_params(params)
    if params["study_kind"] != "primary":  # the companion studies plan and run their own grids
        from helpers import companion

        return companion.run_study(params, out=out, progress=progress)
    study = study_dir(params, out)
    executor = make_executor(params["executor"])
    preflight(params, check_device=not executor.remote)
    for sub in SUBDIRS:
        (study / sub).mkdir(parents=True, exist_ok=True)
    resolved = params.to_dict()
    if out is not None:
        resolved["out"] = str(out)
    write_json_atomic(study / "params.json", resolved)
    specs = plan(params)
    pending = [spec for spec in specs if not is_finished(study, spec.run_id)]
    executor.run(pending, study, progress=progress, desc=f"study {params['name']}")
    collect(study, run_ids=[s.run_id for s in specs])
    write_claims(study)
    return study


def record_failure(spec: RunSpec, study: Path, exc: BaseException, *, ids: Mapping[str, Any] | None = None) -> None:
    """Leave ``error.json`` in the run's work folder: the run shows as ``failed`` and is retried next time.

    Call it from the ``except`` block that caught ``exc`` (the traceback is the one being handled). If
    ``error.json`` cannot be written either (the disk is full), that is logged and the run, unfinished,
    is still retried by the next call.

    Args:
        spec: the run.
        study: the study folder.
        exc: what it raised; its message (one line) becomes the row's ``error``.
        ids: the row's identifying columns instead of the primary study's (companion studies).
    """
    if ids is None:
        ids = {
            "run_id": spec.run_id, "dataset": spec.dataset, "model": spec.model, "method": spec.method,
            "scenario": spec.scenario, "seed": spec.seed,
            "conv_sparsity_target": spec.params["conv_sparsity"],
            "linear_sparsity_target": spec.params["linear_sparsity"],
        }  # fmt: skip
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


# ---------------------------------------------------------------------------------------------- one run


def clean_partial_files(folder: Path) -> None:
    """Remove temporary files of an interrupted write and the ``error.json`` of an earlier failed attempt."""
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    (folder / "error.json").unlink(missing_ok=True)


def load_trained(study: Path, run_id: str, work: Path) -> FitResult | None:
    """The training result a run left in ``trained.pt`` (training finished before an interruption).

    Returns:
        The result, or None when there is none, or when ``trained.pt`` or the work folder's ``model.pt``
        cannot be read: both are then moved to ``runs/.damaged/`` with a warning, and the run trains
        again from epoch 0.
    """
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


def retry_without_checkpoint(study: Path, run_id: str, work: Path, attempt: Any) -> Any:
    """``attempt()``; if it fails on a damaged or incompatible ``checkpoint.pt`` of ``work``, move the
    checkpoint to ``runs/.damaged/<run_id>-<time>/`` with a warning naming it and call ``attempt()``
    once more, which then trains from epoch 0.

    ``attempt`` must build everything it trains afresh (model, optimizer, method): a failed resume may
    have restored part of them.
    """
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


def run_one(spec: RunSpec, study: str | os.PathLike, *, progress: bool = False) -> str:
    """Execute one run (train, test, measure inference) and finish its folder atomically.

    Args:
        spec: the run.
        study: the study folder.
        progress: show the epoch bar (only on a terminal).

    Returns:
        ``"skipped"`` (already finished), ``"completed"`` or ``"diverged"``.
    """
    from helpers import pruning

    study = Path(study)
    if is_finished(study, spec.run_id):
        return "skipped"
    p = spec.params
    work = work_dir(study, spec.run_id)
    work.mkdir(parents=True, exist_ok=True)
    clean_partial_files(work)
    torch.set_num_threads(p["threads"])
    write_json_atomic(work / "params.json", spec.to_dict())
    write_json_atomic(work / "environment.json", environment(p["threads"], inference_threads=p["inference"]["threads"]))

    device = torch.device(p["device"])
    meter = EnergyMeter(device, estimate=p["energy"]["estimate"])
    cpu_data = prepare_data(spec)
    data = cpu_data.to(device) if device.type != "cpu" else cpu_data
    new_method = functools.partial(
        pruning.make_method,
        spec.method,
        None if spec.method == "dense" else {"conv": p["conv_sparsity"], "linear": p["linear_sparsity"]},
        swap_fraction=p["swap_fraction"],
        seed=spec.seed,
        finetune_epochs=p["finetune_epochs"] if spec.method == "post_training" else 0,
        set_allocation=p.get("set_allocation", "erk"),  # run folders written before the key were erk
    )
    reused = None
    if spec.method == "post_training":
        dense = dense_twin(spec)
        if not is_finished(study, dense.run_id):  # also sets a damaged dense folder aside: it runs again
            run_one(dense, study, progress=progress)
        reused = read_json(run_dir(study, dense.run_id) / "result.json")
        if reused["status"] != "completed":
            raise RuntimeError(
                f"dense run {dense.run_id} {reused['status']} (see {run_dir(study, dense.run_id) / 'result.json'}); "
                "post_training needs a trained dense model: change the protocol (lr, epochs) or drop post_training"
            )
    model_path, trained_path = work / "model.pt", work / "trained.pt"
    trained = load_trained(study, spec.run_id, work)  # training finished before an interruption
    if trained is not None:
        result = trained
        model = None if result.diverged else pruning.load_model(model_path).to(device)
    else:
        model, result = retry_without_checkpoint(
            study, spec.run_id, work, lambda: _train(spec, study, new_method(), data, meter, work, progress)
        )
        if not result.diverged:
            pruning.save_model(model, model_path, meta=_meta(spec))
        # The final model is model.pt (masks are its zeros); the method's state is no longer needed.
        save_checkpoint(trained_path, {
            "history": result.history, "diverged": result.diverged, "epochs_completed": result.epochs_completed,
            "best": result.best,
        })  # fmt: skip
        (work / "checkpoint.pt").unlink(missing_ok=True)
    history = [{"run_id": spec.run_id, **r} for r in result.history]
    write_csv_atomic(work / "epochs.csv", summarize_rows(history, "epochs"))

    row = _run_row(spec, result, reused)
    if result.diverged:
        row["status"] = "diverged"
    else:
        row.update(_test(spec, model, data, work))
        row.update(_best(spec, result, row, reused))
        row.update(pruning.summarize_sparsity(model))
        row["conv_weight_sparsity"] = _conv_weight_sparsity(model)
        inference = _inference(spec, model, cpu_data, work, model_path)
        write_csv_atomic(work / "inference.csv", summarize_rows(inference, "inference"))
        row.update({f"inference_macs_{r['variant']}": r["macs"] for r in inference})
        if not p["keep_models"]:  # dense models stay: post_training runs reuse them
            (work / "model_compacted.pt").unlink(missing_ok=True)
            (work / "model_hooked.pt").unlink(missing_ok=True)
            if spec.method != "dense":
                model_path.unlink(missing_ok=True)
    trained_path.unlink(missing_ok=True)
    write_json_atomic(work / "result.json", row)
    finish_run(work, run_dir(study, spec.run_id))
    return row["status"]


def _train(spec: RunSpec, study: Path, method: Any, data: Data, meter: EnergyMeter, work: Path,
           progress: bool) -> tuple[torch.nn.Module, FitResult]:  # fmt: skip
    """Build (or, for post_training, load and prune the dense model) and train; resumes from the checkpoint."""
    from helpers import pruning
    from helpers.models import build_model

    p = spec.params
    device = data.train_x.device
    if spec.method == "post_training":
        model = pruning.load_model(run_dir(study, dense_twin(spec).run_id) / "model.pt").to(device)
        method.on_init(model)
        method.on_train_end(model)  # prune the trained dense model; fine-tuning (if any) keeps the masks
        epochs = p["finetune_epochs"]
    else:
        seed_everything(spec.seed)
        model = build_model(spec.model, data.num_classes, data.train_x.shape[1]).to(device)
        method.on_init(model)
        epochs = p["epochs"]
    result = FitResult(history=[], diverged=False, epochs_completed=0)
    if epochs > 0:
        trained, hooks, setup_s, compaction = model, method, 0.0, None
        make = functools.partial(make_optimizer, p["optimizer"], lr=p["lr"], weight_decay=p["weight_decay"])
        if p.get("training_form") == "compacted" and spec.method in ("in_training", "set"):
            # Evolving mask: each epoch trains the network of the current mask, rebuilt after swaps.
            compaction = pruning.EpochCompaction(method, data.train_x[:2], make)
        elif p.get("training_form") == "compacted":
            # Fixed mask: train the physically smaller network (exact; helpers.pruning.CompactedTraining).
            start = time.perf_counter()
            trained, cmap = pruning.compact_with_map(model, data.train_x[:2], masks=method.masks)
            hooks = pruning.CompactedTraining(method, cmap, model, trained)
            setup_s = time.perf_counter() - start
        optimizer = make(trained)
        result = fit(
            trained, optimizer, hooks, data, epochs=epochs, batch_size=p["batch_size"],
            eval_batch_size=p["eval_batch_size"], seed=spec.seed, meter=meter,
            checkpoint_path=work / "checkpoint.pt", checkpoint_last=False,
            checkpoint_every_s=p.get("checkpoint_every_s", 0.0), augment=_augmenter(p["augment"]),
            progress=progress, description=spec.run_id, compaction=compaction,
            score_best=lambda net: test_metrics(net, data, p["eval_batch_size"])[0],
            macs=lambda net: pruning.count_macs(net, data.train_x[:1]),
        )  # fmt: skip
        if hooks is not method:
            start = time.perf_counter()
            hooks.finish(trained)
            setup_s += time.perf_counter() - start
            _add_setup_time(result, setup_s)
        if not result.diverged and spec.method != "post_training":
            method.on_train_end(model)
    return model, result


def _add_setup_time(result: FitResult, seconds: float) -> None:
    """Count compaction and expansion as training: added to the first training epoch's time."""
    for row in result.history:
        if row["phase"] == "train":
            row["time_s"] = float(row["time_s"]) + seconds
            row["setup_time_s"] = float(seconds)
            return


def finish_run(work: Path, final: Path) -> None:
    """Rename the work folder (``result.json`` written last) to the finished folder in one atomic step.

    A folder already at ``final`` that is not a readable finished run (a partial copy, a damaged folder)
    is moved to ``runs/.damaged/`` first; one that is (another worker finished the run) wins, and the
    work folder is removed.
    """
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
    work_root = work.parent
    try:
        work_root.rmdir()  # only when empty
    except OSError:
        pass


def _augmenter(options: Mapping[str, Any]) -> Any:
    if not options["hflip"] and options["rotation_degrees"] == 0:
        return None
    from helpers.transforms import augment_batch

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(
            x, generator=generator, hflip=options["hflip"], rotation_degrees=options["rotation_degrees"]
        )

    return augment


def _meta(spec: RunSpec) -> dict[str, Any]:
    return {"run_id": spec.run_id, "model": spec.model, "dataset": spec.dataset, "method": spec.method,
            "scenario": spec.scenario, "seed": spec.seed}  # fmt: skip


def _sum_energy(rows: list[Mapping[str, Any]]) -> tuple[float, str]:
    if not rows:
        return math.nan, "unavailable"
    sources = {r["energy_source"] for r in rows}
    values = [float(r["energy_j"]) for r in rows]
    # A sum is only a measurement if every window was measured, by the same meter.
    if len(sources) != 1 or "unavailable" in sources or not all(math.isfinite(v) for v in values):
        return math.nan, "unavailable"
    return float(sum(values)), sources.pop()


def _run_row(spec: RunSpec, result: FitResult, reused: Mapping[str, Any] | None) -> dict[str, Any]:
    p = spec.params
    train_rows = [r for r in result.history if r["phase"] == "train"]
    train_time = float(sum(r["time_s"] for r in train_rows))
    energy, source = _sum_energy(train_rows)
    peaks = [r["peak_memory_mb"] for r in train_rows if math.isfinite(r["peak_memory_mb"])]
    flops = [float(r.get("train_flops", math.nan)) for r in train_rows]  # NaN: an epoch recorded before the column
    train_flops = float(sum(flops)) if all(math.isfinite(f) for f in flops) else math.nan
    epochs_completed = result.epochs_completed
    if reused is not None:
        epochs_completed += int(reused["epochs_completed"])
        train_time += float(reused["train_time_s"])
        if train_rows:
            same = source == reused["train_energy_source"] and source != "unavailable"
            energy = energy + float(reused["train_energy_j"]) if same else math.nan
            source = source if same else "unavailable"
        else:
            energy, source = float(reused["train_energy_j"]), reused["train_energy_source"]
        if reused.get("peak_memory_mb") is not None and math.isfinite(float(reused["peak_memory_mb"])):
            peaks.append(float(reused["peak_memory_mb"]))
        # the cost of obtaining the pruned model, as train_time_s (NaN for dense runs written before the column)
        train_flops += float(reused.get("train_flops", math.nan))
    return {
        "run_id": spec.run_id,
        "dataset": spec.dataset,
        "model": spec.model,
        "method": spec.method,
        "scenario": spec.scenario,
        "seed": spec.seed,
        "status": "completed",
        "epochs_completed": epochs_completed,
        "conv_sparsity_target": p["conv_sparsity"],
        "linear_sparsity_target": p["linear_sparsity"],
        "train_time_s": train_time,
        "train_energy_j": energy,
        "train_energy_source": source,
        "peak_memory_mb": max(peaks) if peaks else math.nan,
        "peak_memory_scope": peak_memory_scope(spec.run_id, p["device"]),
        "device_index": cuda_index(p["device"]),
        "train_flops": train_flops,
        "reused_run_id": spec.dense_run_id or "",
        "set_allocation": p.get("set_allocation", "erk") if spec.method == "set" else "",
        "training_form": p.get("training_form", "masked"),
        "device": p["device"],
        "error": "",
    }


@torch.no_grad()
def _conv_weight_sparsity(model: torch.nn.Module) -> float:
    """Fraction of zero conv weights: SET's budget is measured in weights, not filters."""
    total = zero = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            total += module.weight.numel()
            zero += int((module.weight == 0).sum())
    return zero / total if total else math.nan


#: The test metrics of ``runs.csv``; ``_best`` columns repeat them for the best-validation epoch's model.
TEST_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy")


def test_metrics(model: torch.nn.Module, data: Data, eval_batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    """The test split's metrics of ``model`` (``test_*`` keys) and its class probabilities ``[N, K]``.

    For two-class data (VisA: normal 0, anomaly 1) the anomaly class's own precision, recall, F1 and
    AUROC are added, since macro averages hide how a rare anomaly class fares.
    """
    metrics, probs = evaluate(model, data.test_x, data.test_y, batch_size=eval_batch_size, num_classes=data.num_classes)
    labels = data.test_y.cpu().numpy()
    probs_np = probs.numpy().astype(np.float32)
    out = {
        "test_accuracy": metrics["accuracy"],
        "test_precision": metrics["precision"],
        "test_recall": metrics["recall"],
        "test_f1": metrics["f1"],
        "test_auc": macro_auc(labels, probs_np),
        "test_balanced_accuracy": balanced_accuracy(labels, probs_np.argmax(1), data.num_classes),
        "test_loss": metrics["loss"],
        "test_samples": metrics["samples"],
    }
    if data.num_classes == 2:
        out.update(binary_metrics(labels, probs_np[:, 1], positive=1, prefix="test_anomaly_"))
    return out, probs_np


def _test(spec: RunSpec, model: torch.nn.Module, data: Data, work: Path) -> dict[str, Any]:
    metrics, probs_np = test_metrics(model, data, spec.params["eval_batch_size"])
    labels = data.test_y.cpu().numpy()
    atomic_write(work / "predictions.npz", lambda fh: np.savez(fh, probs=probs_np, labels=labels,
                                                                preds=probs_np.argmax(1)), mode="wb")
    metrics["test_majority_accuracy"] = majority_accuracy(labels)
    return metrics


def _best(spec: RunSpec, result: FitResult, final: Mapping[str, Any], reused: Mapping[str, Any] | None) -> dict[str, Any]:
    """The best-validation epoch and its model's test metrics (the paper's Table 1 "best accuracy").

    ``post_training`` without fine-tuning has one pruned model, so its best is its final model; with
    fine-tuning, the best epoch of the fine-tuning counts (epochs numbered after the dense run's).
    """
    best = result.best
    if best is None:  # no epoch trained here (post_training without fine-tuning)
        out = {"best_epoch": int(final.get("epochs_completed", 0)), "best_val_accuracy": math.nan}
        out.update({f"test_{m}_best": final[f"test_{m}"] for m in TEST_METRICS})
        return out
    offset = int(reused["epochs_completed"]) if reused is not None else 0
    out = {"best_epoch": int(best["epoch"]) + offset, "best_val_accuracy": float(best["val_accuracy"])}
    scored = best if "test_accuracy" in best else final  # the best epoch was the last: the final model
    out.update({f"test_{m}_best": float(scored[f"test_{m}"]) for m in TEST_METRICS})
    return out


def _inference(spec: RunSpec, model: torch.nn.Module, data: Data, work: Path, model_path: Path) -> list[dict[str, Any]]:
    """Benchmark the run's inference variants on the CPU (see measure.benchmark_inference).

    ``masked``: the model as trained, zeros baked into plain weights. ``hooked`` (pruned runs): the same
    weights in ``torch.nn.utils.prune``'s form, ``weight_orig`` and ``weight_mask`` with a forward pre-hook
    per pruned layer, as the paper's pruned models were (:mod:`helpers.pruning.hooked`). ``compacted``:
    the physically smaller twin (what would be deployed), each sparse linear layer dense or CSR,
    whichever measured faster here at the first inference batch size (pruning.choose_linear_formats);
    the choice is stored in its model file's meta and in the rows' linear_formats. Parameters and MACs
    are counted on each variant as it runs (a CSR layer counts its stored weights' MACs).
    """
    from helpers import pruning

    inf = spec.params["inference"]
    model = model.cpu().eval()
    images = data.test_x[: max(1, min(inf["samples"], data.test_x.shape[0]))]
    example = data.test_x[:1]
    compacted = pruning.compact(model, data.test_x[:2]).eval()
    first_batch = inf["batch_sizes"][0]
    batch = images.repeat(math.ceil(first_batch / images.shape[0]), 1, 1, 1)[:first_batch]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(inf["threads"])  # choose at the thread count the benchmark runs at
    try:
        choice = pruning.choose_linear_formats(compacted, batch)
    finally:
        torch.set_num_threads(previous_threads)
    compacted_path = work / "model_compacted.pt"
    meta = {**_meta(spec), "variant": "compacted", "linear_formats": choice}
    pruning.save_model(compacted, compacted_path, meta=meta)
    variants = [("masked", model, model_path, functools.partial(pruning.load_model, model_path))]
    if spec.method != "dense":
        hooked = pruning.to_hooked(copy.deepcopy(model))
        hooked_path = work / "model_hooked.pt"
        pruning.save_hooked(hooked, hooked_path, arch=spec.model, meta={**_meta(spec), "variant": "hooked"})
        variants.append(("hooked", hooked, hooked_path, functools.partial(pruning.load_hooked, hooked_path)))
    variants.append(("compacted", compacted, compacted_path, functools.partial(pruning.load_model, compacted_path)))
    with torch.inference_mode():
        probe = data.test_x[:_MAX_LOGIT_IMAGES]
        reference = model(probe)
    formats = {
        "masked": {name: "dense" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)},
        "compacted": {name: record["format"] for name, record in choice.items()},
    }
    formats["hooked"] = formats["masked"]
    meter = EnergyMeter("cpu", estimate=spec.params["energy"]["estimate"])
    rows = []
    layouts: dict[tuple[str, int], str] = {}
    for variant, net, path, load in variants:
        checked: dict[str, float] = {}
        total, nonzero = count_params(net)
        static = {
            "run_id": spec.run_id,
            "variant": variant,
            "device": "cpu",
            "params_total": total,
            "params_nonzero": nonzero,
            "model_size_mb": file_size_mb(path),
            "macs": int(pruning.count_macs(net, example)),
            "max_abs_logit_diff": math.nan,  # masked: the reference itself
            "linear_formats": json.dumps(formats[variant], separators=(",", ":")),
            "sparse_linear_layers": sum(fmt == "csr" for fmt in formats[variant].values()),
        }
        for batch_size in inf["batch_sizes"]:
            bench = benchmark_inference(
                load, images, batch_size=batch_size, samples=inf["samples"], warmup=inf["warmup"],
                threads=inf["threads"], meter=meter, memory_format=layouts.get((variant, batch_size), "auto"),
            )  # fmt: skip
            loaded = bench.pop("model")
            if variant == "masked":  # hooked has the same convolutions: the layout measured here holds for it
                layouts[("hooked", batch_size)] = bench["memory_format"]
            elif "max_abs_logit_diff" not in checked:
                # The model just loaded from its file and timed, back in the trained model's layout (the
                # same kernels), against the trained model: no second load from disk.
                loaded = loaded.to(memory_format=torch.contiguous_format)
                with torch.inference_mode():
                    checked["max_abs_logit_diff"] = float((loaded(probe) - reference).abs().max())
            rows.append({**static, **checked, **bench})
    torch.set_num_threads(spec.params["threads"])
    return rows
