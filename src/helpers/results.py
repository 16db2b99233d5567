"""The study's results: tidy tables rebuilt from the run folders, and the one place their columns are documented.

Every run writes its own folder ``<study>/runs/<run_id>/`` (see :mod:`helpers.lifecycle`):

- ``params.json``: the run's resolved parameters (:meth:`helpers.config.RunSpec.to_dict`).
- ``environment.json``: package versions, CPU, threads, GPU, git commit (:func:`environment`).
- ``epochs.csv``: the run's rows of the ``epochs`` table.
- ``inference.csv``: the run's rows of the ``inference`` table (absent for diverged runs).
- ``predictions.npz``: test-set class probabilities ``probs`` [N, K], ``labels`` [N] and ``preds``
  [N], so any metric can be recomputed later.
- ``model.pt`` / ``model_compacted.pt``: the final masked model and its compacted twin
  (:func:`helpers.pruning.save_model`), and for pruned runs ``model_hooked.pt``, the masked model in
  ``torch.nn.utils.prune``'s form (:func:`helpers.pruning.save_hooked`); dropped after inference when
  ``keep_models`` is false, except for dense runs' ``model.pt``, which ``post_training`` reuses.
- ``result.json``: the run's row of the ``runs`` table. Written last: its presence marks the run
  finished (the folder is renamed into place atomically, so a folder under ``runs/`` is complete).

:func:`collect` rebuilds ``<study>/results/{runs,epochs,inference}.csv`` from those folders (one
writer: the process that calls it), so concurrent runs never write the same file; :func:`load_tables`
reads them back for the notebooks. :data:`COLUMNS` documents every column.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import files

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "ID_COLUMNS",
    "TABLES",
    "RUN_STATUSES",
    "ENERGY_SOURCES",
    "collect",
    "load_tables",
    "write_json_atomic",
    "write_csv_atomic",
    "read_json",
    "read_run_folder",
    "run_folder_damage",
    "environment",
    "summarize_rows",
    "FILE_MODE",
]

TABLES: tuple[str, ...] = ("runs", "epochs", "inference")
ID_COLUMNS: tuple[str, ...] = ("run_id", "dataset", "model", "method", "scenario", "seed")

#: ``status`` values of the runs table.
RUN_STATUSES: dict[str, str] = {
    "completed": "trained, tested and measured",
    "diverged": "the training loss became NaN or infinite; the history up to that epoch is kept, no test or inference",
    "failed": "raised an error (message in `error`); not finished, so the next `train` retries it",
    "not_applicable": (
        "companion granularity study: the model has no unit of that granularity (neuron pruning of a ResNet, "
        "whose only linear layer is the classifier); the reason is in `error`, nothing is measured"
    ),
}

_COMPANION = "companion studies (helpers.companion)"


#: ``energy_source`` values (every energy figure carries one; ``energy_j`` is NaN for ``unavailable``).
ENERGY_SOURCES: dict[str, str] = {
    "zeus-gpu": "measured by Zeus through NVML on the run's GPU (GPU energy only)",
    "zeus-cpu-rapl": "measured by Zeus through Intel/AMD RAPL (CPU packages plus DRAM where exposed)",
    "estimate-codecarbon-cpu": (
        "NOT a measurement: CodeCarbon's CPU power model (RAPL when readable, else the CPU's TDP "
        "scaled by its load, else a constant), integrated over the window; only with energy.estimate"
    ),
    "unavailable": "no meter found (Zeus saw no GPU and no RAPL); energy_j is NaN, never 0",
}

_ENERGY = "energy in joules over the window; NaN when energy_source is 'unavailable'"
_SOURCE = f"where the energy figure comes from: {', '.join(ENERGY_SOURCES)} (see results.ENERGY_SOURCES)"
_PEAK = (
    "peak memory of the phase in MiB (2^20 bytes): on a GPU the CUDA caching allocator's peak "
    "(torch.cuda.max_memory_allocated, reset at the phase start); on a CPU the process's peak resident "
    "set size, sampled every 10 ms by a background thread (psutil) and including the phase's start value"
)

#: Every column of every table, with its meaning and unit. Tests hold the tables to this.
COLUMNS: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "stable id: {dataset}-{model}-{method}-{scenario}-s{seed}-{hash8 of the resolved parameters}",
        "dataset": "dataset name (helpers.data.DATASETS)",
        "model": "model name (helpers.models.MODELS)",
        "method": "dense, pre_training, in_training, post_training or set",
        "scenario": "uniform, mixed, linear_only, conv<x>_linear<y>; 'none' for dense runs",
        "seed": "seed of the model initialisation, mask and batch order",
        "status": f"{', '.join(RUN_STATUSES)} (see results.RUN_STATUSES)",
        "epochs_completed": (
            "training epochs done; for post_training the reused dense run's epochs plus finetune_epochs"
        ),
        "conv_sparsity_target": "fraction of conv output filters the scenario removes",
        "linear_sparsity_target": "fraction of linear weights the scenario removes",
        "conv_filter_sparsity": "achieved fraction of conv output filters that are entirely zero (final model)",
        "linear_weight_sparsity": "achieved fraction of linear weights that are zero (final model)",
        "conv_weight_sparsity": (
            "achieved fraction of conv weights that are zero (final model); equals the conv target for "
            "every method, while set's conv_filter_sparsity differs by design: its Erdős–Rényi budget is "
            "measured in weights, small layers keep more of their filters (helpers.pruning.masks)"
        ),
        "overall_sparsity": "achieved fraction of zero parameters over all parameters (final model)",
        "params_total": "parameters of the (masked) model, zeros included",
        "params_nonzero": "non-zero parameters of the final (masked) model",
        "train_time_s": (
            "seconds spent in training phases (validation excluded); for post_training the reused dense "
            "run's training plus its own fine-tuning: the cost of obtaining the pruned model"
        ),
        "train_energy_j": (
            "energy of the training phases in joules (sum over epochs; post_training adds the dense "
            "run's as for train_time_s); NaN when unavailable"
        ),
        "train_energy_source": _SOURCE,
        "peak_memory_mb": (
            "largest peak_memory_mb of the run's training phases (see epochs.peak_memory_mb); what it covers "
            "is in peak_memory_scope"
        ),
        "peak_memory_scope": (
            "what peak_memory_mb covers: own-process (CPU; a fresh process of its own, the local executor's "
            "default), shared-process (CPU; a process that ran other runs before) or cuda-allocator (GPU; the "
            "allocator peak of the run's device, reset per phase); see measure.PEAK_MEMORY_SCOPES"
        ),
        "device_index": (
            "CUDA index of the GPU the run trained on, whose energy and memory the figures are (device 'cuda' "
            "resolves to the current CUDA device, which a Dask worker sets per run); empty on the CPU"
        ),
        "train_flops": (
            "theoretical, machine-independent training cost: the sum of epochs.train_flops (backward = 2 x "
            "forward, as RigL counts; one MAC counted once); masked training counts the full network (its zeros "
            "are computed), compacted training the smaller one, rebuilt per epoch for in_training / set. "
            "post_training adds the dense run's, as train_time_s"
        ),
        "test_accuracy": "top-1 accuracy on the test split of the final model",
        "test_precision": "macro-averaged precision on the test split (classes without predictions count 0)",
        "test_recall": "macro-averaged recall on the test split",
        "test_f1": "macro-averaged F1 on the test split",
        "test_auc": (
            "macro one-vs-rest ROC AUC of the softmax probabilities on the test split (as the MedMNIST "
            "tables report); NaN if the test subset lacks a class"
        ),
        "test_balanced_accuracy": (
            "mean per-class recall on the test split (equals test_recall when every class is present); "
            "the accuracy a constant answer cannot inflate on imbalanced data such as VisA"
        ),
        "test_majority_accuracy": (
            "accuracy of always answering the test split's most frequent class: the floor test_accuracy "
            "must beat (VisA: about 0.89)"
        ),
        "test_anomaly_precision": "two-class data (VisA): precision of the anomaly class (label 1); empty otherwise",
        "test_anomaly_recall": "two-class data (VisA): recall of the anomaly class; empty otherwise",
        "test_anomaly_f1": "two-class data (VisA): F1 of the anomaly class; empty otherwise",
        "test_anomaly_auroc": "two-class data (VisA): ROC AUC of the anomaly probability; empty otherwise",
        "test_loss": "mean cross-entropy on the test split",
        "test_samples": "images in the test split used",
        "best_epoch": (
            "epoch (1-based) whose validation accuracy was the best; the final epoch for post_training "
            "without fine-tuning (one pruned model), whose epochs count after the dense run's"
        ),
        "best_val_accuracy": "validation accuracy at best_epoch (NaN for post_training without fine-tuning)",
        **{
            f"test_{m}_best": (
                f"test_{m} of the model as it was at best_epoch (scored when that epoch validated, so no second "
                "checkpoint is kept): the paper's Table 1 reports this 'best accuracy'"
            )
            for m in ("accuracy", "precision", "recall", "f1", "auc", "balanced_accuracy")
        },
        **{
            f"inference_macs_{v}": (
                f"multiply-accumulates of one image through the {v} inference variant (inference.macs at that "
                "variant; the theoretical cost beside its measured latency)"
                + ("; empty for dense runs, which have no pruning hooks" if v == "hooked" else "")
            )
            for v in ("masked", "hooked", "compacted")
        },
        "reused_run_id": "post_training: the dense run whose trained model was pruned; empty otherwise",
        "set_allocation": (
            "set runs: scenario (every layer keeps the scenario's fraction; the paper) or erk (ER / ERK "
            "per-layer densities under the same weight budget; an extension); empty for other methods"
        ),
        "training_form": (
            "compacted (the network without its removed filters was trained: exactly equivalent for the "
            "fixed masks of pre_training and post_training fine-tuning; rebuilt after every swap for "
            "in_training and set, see helpers.pruning.CompactedTraining) or masked (the full network with "
            "zeros, the paper's way); the study file's training_form, resolved per run"
        ),
        "device": "training device (cpu, cuda, cuda:N)",
        "error": "failed runs: the error message; not_applicable runs: the reason; empty otherwise",
        # Companion studies (`method` dense, criteria or granularity; `reused_run_id` the dense run a pruned
        # run started from). Empty (NaN) for primary runs and for the other companion study's columns.
        "study_kind": "criteria or granularity (the study file's `study_kind`); empty for primary runs",
        "criterion": (
            "criteria study: the filter-selection criterion (greedy_output_norm, l1, bn_slimming, "
            "bn_slimming_l1 = bn_slimming on a model trained with the L1 penalty on gamma, random, taylor); "
            "empty otherwise"
        ),
        "granularity": (
            "granularity study: weight, unstructured, neuron, structured or layer (helpers.granularity); empty otherwise"
        ),
        "slimming_lambda": (
            f"{_COMPANION}: lambda of the L1 penalty on BatchNorm scales the dense model was trained with "
            "(network slimming, Liu et al. 2017); 0 without"
        ),
        "filter_sparsity": "criteria study: fraction of the filters of every conv group removed in one shot (0.4)",
        "accuracy_before": f"{_COMPANION}: test accuracy of the dense model before pruning",
        "accuracy_pruned": f"{_COMPANION}: test accuracy right after pruning, before fine-tuning",
        "accuracy_finetuned": f"{_COMPANION}: test accuracy after fine-tuning (equals test_accuracy)",
        "loss_before": "criteria study: test cross-entropy before pruning",
        "loss_pruned": f"{_COMPANION}: test cross-entropy right after pruning",
        "loss_finetuned": f"{_COMPANION}: test cross-entropy after fine-tuning",
        "filters_total": "criteria study: conv output filters of the dense model (all conv layers)",
        "filters_removed": "criteria study: conv output filters physically removed",
        "params_before": "criteria study: parameters of the dense model",
        "params_after": "criteria study: parameters of the pruned (compacted) model",
        "macs_before": "criteria study: multiply-accumulates of one image through the dense model",
        "macs_after": "criteria study: multiply-accumulates of one image through the pruned model",
        "selection_time_s": "criteria study: seconds to score and select the filters and compact the model",
        "finetune_time_s": f"{_COMPANION}: seconds of fine-tuning (also in train_time_s for pruned runs)",
        "budget": "granularity study: target fraction of prunable parameters (conv and linear weights) removed",
        "budget_achieved": (
            "granularity study: fraction of the dense model's prunable parameters gone from the deployed model "
            "(counted in it: remaining weights, non-zero ones for weight / unstructured)"
        ),
        "budget_reached": "granularity study: |budget_achieved - budget| within budget_tolerance",
        "budget_tolerance": "granularity study: the closest the granularity's unit size allows (half a unit)",
        "max_removable_fraction": (
            "granularity study: the most of the prunable parameters the granularity can remove from the model "
            "(layer pruning of VGG16 stops near 0.1)"
        ),
        "unit": "granularity study: what is removed: weight, neuron, filter or layer",
        "units_total": "granularity study: removable units of the model",
        "units_removed": "granularity study: units removed",
        "params_prunable_total": "granularity study: conv and linear weights of the dense model",
        "params_prunable_removed": "granularity study: of those, removed by the plan (next-layer slices included)",
        "removed_layers": "granularity study, layer: removed blocks or convolutions, ';'-separated",
        "note": "granularity study: warnings of the plan (e.g. a budget above what the granularity can remove)",
    },
    "epochs": {
        "run_id": "the run (see runs.run_id)",
        "epoch": "1-based epoch number (post_training: its fine-tuning epochs)",
        "phase": (
            "train or val; finetune for the companion studies' pruned runs (SGD fine-tuning after one-shot "
            "pruning, on the training split as seen during the epoch, augmented)"
        ),
        "loss": "mean cross-entropy over the phase's samples (train: as seen during the epoch, in train mode)",
        "accuracy": "top-1 accuracy over the phase's samples",
        "precision": "macro-averaged precision",
        "recall": "macro-averaged recall",
        "f1": "macro-averaged F1",
        "time_s": (
            "wall seconds of the phase (train excludes validation and checkpointing and includes the epoch's "
            "swap, which runs after validation; a compacted run's includes setup_time_s)"
        ),
        "setup_time_s": (
            "compacted training (runs.training_form): seconds of this train phase (included in time_s) spent "
            "building the compacted network (first epoch for pre_training / post_training; every epoch for "
            "in_training / set, rebuilt after each swap) and writing it back into the full-size model (every "
            "epoch); empty for masked training. Runs before 2026-12-03 counted a fixed mask's setup once"
        ),
        "energy_j": _ENERGY,
        "energy_source": _SOURCE,
        "peak_memory_mb": _PEAK,
        "train_flops": (
            "train rows: forward + backward multiply-accumulates of the epoch, 3 x the MACs of one image through "
            "the network that trained this epoch x the images trained on (see runs.train_flops); empty for val"
        ),
        "lr": "finetune rows: the epoch's learning rate (1e-3, 1e-4, 1e-5 over equal thirds)",
    },
    "inference": {
        "run_id": "the run (see runs.run_id)",
        "variant": (
            "masked (the trained model, zeros baked into plain weights and still computed), hooked (pruned runs: the "
            "same weights in torch.nn.utils.prune's form, weight_orig and weight_mask with a forward pre-hook per "
            "pruned layer, as the paper's pruned models were; helpers.pruning.hooked) or compacted (pruned filters "
            "physically removed); companion studies: dense (the baseline), compacted (criteria runs; neuron / "
            "structured / layer granularity) or masked (weight / unstructured granularity, dense tensors with zeros)"
        ),
        "device": "inference device (always cpu, as in the study)",
        "threads": "torch intra-op threads during inference",
        "batch_size": "images per forward pass",
        "samples": "timed images (after warm-up); ceil(samples / batch_size) timed batches",
        "warmup": "untimed warm-up batches before timing",
        "memory_format": (
            "layout the model ran in: contiguous or channels_last, whichever measured faster on this CPU "
            "right after loading (part of the warm-up; see measure.choose_memory_format)"
        ),
        "latency_ms_mean": "mean latency per image in ms (batch time / batch size), model load excluded",
        "latency_ms_p50": "median latency per image in ms",
        "latency_ms_p95": "95th percentile latency per image in ms",
        "load_time_s": "seconds to load the model from disk",
        "energy_j": (
            "energy in joules of the whole measurement, model load from disk + warm-up + timed batches; "
            "NaN when energy_source is 'unavailable'"
        ),
        "energy_source": _SOURCE,
        "params_total": (
            "parameters of this variant (the compacted model has fewer; a CSR linear layer counts at its dense "
            "shape; hooked counts weight_orig, not its mask)"
        ),
        "params_nonzero": "non-zero parameters of this variant",
        "model_size_mb": "size of the saved model file on disk in MiB (2^20 bytes)",
        "macs": (
            "multiply-accumulates of one forward pass at batch 1 through conv and linear layers as this variant "
            "runs them (pruning.count_macs); masked and hooked equal the dense model's, since their zeros are "
            "still computed; a CSR linear layer counts only its stored weights"
        ),
        "max_abs_logit_diff": (
            "compacted and hooked: the largest |logit difference| from the masked model over the test images "
            "(float32 round-off), reloaded from their files; NaN for masked (the reference)"
        ),
        "linear_formats": (
            "compact JSON object, linear layer name -> dense or csr: the format each nn.Linear ran in. masked: "
            "all dense (as trained); compacted: csr where a torch.sparse CSR matmul measured faster than the "
            "dense one on this machine at the first inference batch size and threads (layers with >= 50 % "
            "zero weights; see pruning.choose_linear_formats; the timings are in model_compacted.pt's meta)"
        ),
        "sparse_linear_layers": (
            "number of linear layers that ran as CSR (csr entries of linear_formats); params_total counts them "
            "at their dense shape, params_nonzero and macs their stored weights"
        ),
        # Companion studies (helpers.granularity.measure_granularity): model_size_mb is the torch.save
        # file of the state in size_format; energy is not measured there (energy_source unavailable).
        "size_format": (
            f"{_COMPANION}: the format model_size_mb is measured in: dense, compacted, or csr-int32 (weight / "
            "unstructured: conv and linear weights in CSR with int32 indices wherever that is smaller)"
        ),
        "size_mb_dense_file": f"{_COMPANION}: size in MiB of the plain torch.save of the state dict, for comparison",
        "latency_format": f"{_COMPANION}: how latency_ms_* ran: dense, compacted or masked-dense kernels",
        "latency_ms_sparse_linear": (
            "granularity study, weight / unstructured: mean latency per image in ms with the linear layers as "
            "CSR matrices (PyTorch has no sparse convolution on the CPU); NaN otherwise"
        ),
        "macs_nonzero": f"{_COMPANION}: multiply-accumulates with a non-zero weight (what a sparse kernel would do)",
        "params_prunable": f"{_COMPANION}: conv and linear weights of the measured model",
        "params_prunable_nonzero": f"{_COMPANION}: of those, the non-zero ones",
    },
}


#: Mode of files written through a temporary file (see :data:`helpers.files.FILE_MODE`).
FILE_MODE = files.FILE_MODE


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON with :func:`helpers.files.atomic_write` (never half-written)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default, allow_nan=True)
    files.atomic_write(Path(path), lambda fh: fh.write(text + "\n"))


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV (no index) with :func:`helpers.files.atomic_write`."""
    files.atomic_write(Path(path), lambda fh: frame.to_csv(fh, index=False))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        helpers.files.DamagedFileError: it exists but is not JSON (cut short, overwritten, edited).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError:
        reason = "not text (overwritten or garbled)"
    raise files.DamagedFileError(f"{path} cannot be read: {reason}", path, reason)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def environment(threads: int | None = None, *, inference_threads: int | None = None) -> dict[str, Any]:
    """What a run ran on: versions, CPU, threads (training and inference), GPU, git commit (``environment.json``)."""
    import torch  # lazy: about 1 s, and plots and claims import this module to read tables only

    gpu = None
    if torch.cuda.is_available():
        gpu = {
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    packages = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "torch-pruning", "zeus", "codecarbon")
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "inference_threads": inference_threads,
        "gpu": gpu,
        "packages": {p: _version(p) for p in packages},
        "pruning_study": _version("pruning-study"),
        **_git_commit(),
    }


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS[table]})


def _ordered(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The documented columns first, in :data:`COLUMNS` order, then any id columns joined in."""
    for col in COLUMNS[table]:
        if col not in frame.columns:
            frame[col] = pd.NA
    extra = [c for c in frame.columns if c not in COLUMNS[table]]
    return frame[list(COLUMNS[table]) + extra]


def _run_folders(study_dir: Path, run_ids: Iterable[str] | None) -> list[Path]:
    runs = study_dir / "runs"
    if not runs.is_dir():
        return []
    wanted = None if run_ids is None else set(run_ids)
    folders = [p for p in sorted(runs.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if wanted is not None:
        folders = [p for p in folders if p.name in wanted]
    return [p for p in folders if (p / "result.json").is_file()]


def _damaged(path: Path, reason: str) -> files.DamagedFileError:
    return files.DamagedFileError(f"{path} cannot be read: {reason}", path, reason)


def _read_json_object(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    value = read_json(path)
    if not isinstance(value, dict):
        raise _damaged(path, f"holds a JSON {type(value).__name__}, not an object")
    missing = [k for k in required if k not in value]
    if missing:
        raise _damaged(path, f"has no {', '.join(missing)}")
    return value


def _read_run_csv(path: Path, run_id: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise _damaged(path, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, files.describe_read_error(exc)) from None
    if "run_id" not in frame.columns:
        raise _damaged(path, "has no run_id column (overwritten?)")
    others = set(frame["run_id"].astype(str)) - {run_id}
    if others:
        raise _damaged(path, f"holds rows of other runs ({sorted(others)[0]})")
    return frame


def _check_predictions(path: Path) -> None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"probs", "labels", "preds"} - set(npz.files)
            if missing:
                raise _damaged(path, f"has no {', '.join(sorted(missing))}")
            for name in ("probs", "labels", "preds"):
                npz[name]  # reads and CRC-checks the member
    except files.DamagedFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy / zipfile raise many types for a damaged file
        raise _damaged(path, files.describe_read_error(exc)) from None


def _check_model_file(path: Path) -> None:
    payload = files.load_torch(path, what="model file", mmap=True)  # whole-file check without reading tensors
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise _damaged(path, "not a model file of helpers.pruning.save_model")


def read_run_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], list[pd.DataFrame]]:
    """Read a finished run folder, checking each of its files that is present (``result.json`` must be):
    ``params.json``, ``environment.json``, ``epochs.csv``, ``inference.csv``, ``predictions.npz``,
    ``model.pt`` and ``model_compacted.pt``.

    Returns:
        ``(row, [epochs, inference])``: the run's ``result.json`` row and its ``epochs.csv`` /
        ``inference.csv`` frames (an empty frame where the file is absent).

    Raises:
        helpers.files.DamagedFileError: a file cannot be read or is not what it should be (``.path`` names
            it). Such a run is not finished: :func:`helpers.lifecycle.is_finished` moves the folder to
            ``runs/.damaged/`` and the same command runs it again.
    """
    folder = Path(folder)
    result = folder / "result.json"
    row = _read_json_object(result, ("run_id", "status"))
    if row["run_id"] != folder.name:
        raise _damaged(result, f"belongs to run {row['run_id']!r}, not to its folder's run")
    for name in ("params.json", "environment.json"):
        if (folder / name).is_file():
            _read_json_object(folder / name)
    frames = []
    for name in ("epochs.csv", "inference.csv"):
        path = folder / name
        frames.append(_read_run_csv(path, folder.name) if path.is_file() else pd.DataFrame())
    if (folder / "predictions.npz").is_file():
        _check_predictions(folder / "predictions.npz")
    for name in ("model.pt", "model_compacted.pt"):
        if (folder / name).is_file():
            _check_model_file(folder / name)
    return row, frames


def run_folder_damage(folder: str | os.PathLike) -> str | None:
    """Why a finished run folder cannot be used (``"<file>: <what is wrong>"``), or None when it reads."""
    try:
        read_run_folder(folder)
    except files.DamagedFileError as exc:
        return f"{exc.path.name}: {exc.reason}"
    return None


def _failed_rows(study_dir: Path, run_ids: Iterable[str] | None, finished: set[str]) -> list[dict[str, Any]]:
    work = study_dir / "runs" / ".work"
    if not work.is_dir():
        return []
    wanted = None if run_ids is None else set(run_ids)
    rows = []
    for folder in sorted(work.iterdir()):
        error = folder / "error.json"
        if folder.name in finished or not error.is_file() or (wanted is not None and folder.name not in wanted):
            continue
        try:
            rows.append(_read_json_object(error, ("run_id", "status")))
        except (files.DamagedFileError, OSError) as exc:  # the run is unfinished anyway: the next call retries it
            log.warning("skipping %s: %s; the run is retried by the next call", error, exc)
    return rows


def collect(study_dir: str | os.PathLike, run_ids: Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Rebuild ``<study>/results/{runs,epochs,inference}.csv`` from the run folders and return the three
    tables as written (``epochs`` and ``inference`` with the run's id columns joined in for plotting).

    A damaged run folder (:func:`read_run_folder` fails) is left out with one warning naming it (the
    runner moves such a folder to ``runs/.damaged/`` and runs the run again).

    Args:
        study_dir: the study folder (``<out>/<name>``).
        run_ids: keep only these runs (the current grid); all finished runs when None. Failed runs
            (an ``error.json`` in their unfinished work folder) appear in ``runs`` with status ``failed``.

    Raises:
        helpers.files.WriteFailedError: a table cannot be written (disk full, ...); the previous table
            is unchanged.
    """
    study_dir = Path(study_dir)
    run_rows: list[dict[str, Any]] = []
    epoch_frames: list[pd.DataFrame] = []
    inference_frames: list[pd.DataFrame] = []
    for folder in _run_folders(study_dir, run_ids):
        try:
            row, (epochs, inference) = read_run_folder(folder)
        except files.DamagedFileError as exc:
            log.warning(
                "left out of the tables: damaged run folder %s (%s: %s); the next `train` moves it to runs/%s "
                "and runs it again", folder, exc.path.name, exc.reason, files.DAMAGED_DIR,
            )  # fmt: skip
            continue
        run_rows.append(row)
        for frame, frames in ((epochs, epoch_frames), (inference, inference_frames)):
            if len(frame):
                frames.append(frame)
    run_rows.extend(_failed_rows(study_dir, run_ids, {r["run_id"] for r in run_rows}))
    runs = _ordered(pd.DataFrame(run_rows), "runs") if run_rows else _empty("runs")
    ids = runs[list(ID_COLUMNS)]
    tables = {"runs": runs}
    for table, frames in (("epochs", epoch_frames), ("inference", inference_frames)):
        frame = pd.concat(frames, ignore_index=True) if frames else _empty(table)
        frame = _ordered(frame, table)
        frame = frame.drop(columns=[c for c in ID_COLUMNS[1:] if c in frame.columns])
        frame = frame.merge(ids, on="run_id", how="left")
        tables[table] = _ordered(frame, table)
    results = study_dir / "results"
    if results.is_dir():  # temporary files of a collect that was killed mid-write (single writer by design)
        for stale in results.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    for table, frame in tables.items():
        write_csv_atomic(results / f"{table}.csv", frame)
    return tables


def load_tables(study_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The study's tables ``{"runs", "epochs", "inference"}`` as DataFrames, read from ``<study>/results/*.csv``,
    or rebuilt from the run folders (:func:`collect`) when any is missing or cannot be read."""
    study_dir = Path(study_dir)
    paths = {t: study_dir / "results" / f"{t}.csv" for t in TABLES}
    if not all(p.is_file() for p in paths.values()):
        if not (study_dir / "runs").is_dir():
            raise FileNotFoundError(
                f"no results under {study_dir}; run the study first: python -m helpers train PARAMS.yaml"
            )
        return collect(study_dir)
    tables = {}
    for table, path in paths.items():
        try:
            tables[table] = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            log.warning("table %s cannot be read (%s); rebuilding the tables from the run folders", path,
                        files.describe_read_error(exc))  # fmt: skip
            return collect(study_dir)
    return tables


def summarize_rows(rows: Iterable[Mapping[str, Any]], table: str) -> pd.DataFrame:
    """Rows as a DataFrame with the documented columns of ``table`` first (used for per-run CSVs)."""
    frame = pd.DataFrame(list(rows))
    return _empty(table) if frame.empty else _ordered(frame, table)
