"""Measurements: energy windows, peak memory, classification metrics and CPU inference benchmarks.

Energy. :class:`EnergyMeter` measures a window of code with Zeus (You, Chung, Chowdhury, NSDI 2023;
``zeus.monitor.ZeusMonitor``): a GPU through NVML's energy counter, a CPU through RAPL. Where Zeus finds
neither, it silently returns an empty (or all-zero) measurement; the meter records that as ``NaN`` with
``energy_source = "unavailable"``, so a 0 is never reported as a measurement. With ``estimate=True`` it
records CodeCarbon's CPU power model instead (``codecarbon.OfflineEmissionsTracker``, offline, writing
nothing), labelled ``estimate-codecarbon-cpu``. On ``cuda`` the meter reads the GPU the run uses
(:func:`cuda_index`) and every reading carries its index.

Memory. :class:`PeakMemory` reports a phase's peak in MiB: on a GPU the CUDA caching allocator's peak
(``torch.cuda.max_memory_allocated``, reset at the phase start) of the run's device; on a CPU the
process's peak resident set size, sampled every 10 ms by a background thread with psutil (``ru_maxrss``
only grows over the process's life, so it cannot give a per-phase peak). That includes whatever earlier
work left in the process's allocator, so the CPU figure is a run's own only when the run has its process
to itself (the local executor's default, :mod:`helpers.executors`; see :data:`PEAK_MEMORY_SCOPES`).

Metrics follow scikit-learn's definitions; :func:`benchmark_inference` follows timm's ``benchmark.py``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

__all__ = [
    "sum_energy",
    "EnergyReading",
    "EnergyMeter",
    "PeakMemory",
    "classification_metrics",
    "macro_auc",
    "balanced_accuracy",
    "majority_accuracy",
    "binary_metrics",
    "benchmark_inference",
    "MEMORY_FORMATS",
    "choose_memory_format",
    "count_params",
    "file_size_mb",
    "cuda_index",
    "PEAK_MEMORY_SCOPES",
    "claim_process",
    "peak_memory_scope",
]

log = logging.getLogger(__name__)

_MIB = float(2**20)
_J_PER_KWH = 3.6e6


@dataclass
class EnergyReading:
    """One energy window's result: ``energy_j`` (joules, NaN when nothing was measured), ``source``
    (``zeus-gpu``, ``zeus-cpu-rapl``, ``estimate-codecarbon-cpu`` or ``unavailable``), ``time_s`` (wall
    seconds of the window) and ``device_index`` (the GPU whose energy this is; ``None`` for the CPU)."""

    energy_j: float = math.nan
    source: str = "unavailable"
    time_s: float = math.nan
    device_index: int | None = None


_ZEUS_MONITORS: dict[str, Any] = {}
_CODECARBON: dict[str, Any] = {}


def _zeus_monitor(kind: str) -> Any:
    """One ZeusMonitor per process and kind (creating one probes NVML / RAPL, ~1 s)."""
    if kind not in _ZEUS_MONITORS:
        logging.getLogger("zeus").setLevel(logging.ERROR)  # e.g. "amdsmi not found" on every import
        try:
            from zeus.monitor import ZeusMonitor  # lazy: an optional meter, slow to import; only when energy is measured

            gpu = kind == "gpu"
            monitor = ZeusMonitor(cpu_indices=[], approx_instant_energy=True) if gpu else ZeusMonitor(gpu_indices=[])
        except Exception as exc:  # noqa: BLE001 - any failure to probe means "no meter"
            log.warning("Zeus could not start (%s); energy is unavailable", exc)
            monitor = None
        _ZEUS_MONITORS[kind] = monitor
    return _ZEUS_MONITORS[kind]


def _codecarbon_tracker() -> Any:
    if "tracker" not in _CODECARBON:
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        from codecarbon import OfflineEmissionsTracker  # lazy: heavy (pandas, requests); only for labelled estimates

        # Offline (no network), no output files, process-level CPU share; country only affects CO2.
        _CODECARBON["tracker"] = OfflineEmissionsTracker(
            country_iso_code="USA",
            output_methods=[],
            log_level="error",
            allow_multiple_runs=True,
            tracking_mode="process",
            measure_power_secs=1,
        )
        _CODECARBON["lock"] = threading.Lock()
    return _CODECARBON["tracker"]


def cuda_index(device: str | torch.device) -> int | None:
    """The CUDA index that work on ``device`` runs on: its own index, else the current CUDA device.

    ``torch.device("cuda")`` means the *current* device (``torch.cuda.set_device``, which a Dask worker
    sets per run), not GPU 0. ``None`` for a non-CUDA device.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else int(torch.cuda.current_device())


class EnergyMeter:
    """Measures the energy of code windows on ``device``, or says that it cannot.

    ``cuda`` / ``cuda:N``: the GPU's energy via NVML (:attr:`device_index`; ``cuda`` resolves to the
    current CUDA device at construction, see :func:`cuda_index`); ``cpu``: CPU package + DRAM energy via
    RAPL (``device_index`` None). With ``estimate``, where no meter is available, CodeCarbon's CPU model
    estimate is recorded instead of NaN. :attr:`source` is what :meth:`measure` windows will report
    (``unavailable`` when nothing can be measured).
    """

    def __init__(self, device: str | torch.device = "cpu", *, estimate: bool = False) -> None:
        self.device = torch.device(device)
        self.estimate = estimate
        self._monitor = None
        self._gpu_index: int | None = None
        self.device_index = cuda_index(self.device)
        if self.device.type == "cuda":
            monitor = _zeus_monitor("gpu")
            if monitor is not None and self.device_index in monitor.gpu_indices:
                self._monitor, self._gpu_index, self.source = monitor, self.device_index, "zeus-gpu"
        elif self.device.type == "cpu":
            monitor = _zeus_monitor("cpu")
            if monitor is not None and monitor.cpu_indices:
                self._monitor, self.source = monitor, "zeus-cpu-rapl"
        if self._monitor is None:
            self.source = "estimate-codecarbon-cpu" if estimate else "unavailable"

    @contextmanager
    def measure(self) -> Iterator[EnergyReading]:
        """Measure the ``with`` block; the yielded :class:`EnergyReading` is filled in on exit."""
        reading = EnergyReading(source=self.source, device_index=self.device_index)
        start = time.perf_counter()
        if self._monitor is not None:
            key = f"helpers-{uuid.uuid4().hex}"
            self._monitor.begin_window(key)
            try:
                yield reading
            finally:
                result = self._monitor.end_window(key)
                reading.time_s = time.perf_counter() - start
                reading.energy_j, reading.source = self._zeus_energy(result)
        elif self.source == "estimate-codecarbon-cpu":
            tracker = _codecarbon_tracker()
            with _CODECARBON["lock"]:  # CodeCarbon tracks one task at a time
                tracker.start_task(f"helpers-{uuid.uuid4().hex}")
                try:
                    yield reading
                finally:
                    data = tracker.stop_task()
                    reading.time_s = time.perf_counter() - start
                    cpu_kwh = getattr(data, "cpu_energy", None) if data is not None else None
                    if cpu_kwh is None or not math.isfinite(cpu_kwh) or cpu_kwh <= 0:
                        reading.energy_j, reading.source = math.nan, "unavailable"
                    else:
                        reading.energy_j = float(cpu_kwh) * _J_PER_KWH
        else:
            try:
                yield reading
            finally:
                reading.time_s = time.perf_counter() - start

    def _zeus_energy(self, result: Any) -> tuple[float, str]:
        if self._gpu_index is not None:
            values = [result.gpu_energy.get(self._gpu_index)] if result.gpu_energy else []
        else:
            values = list((result.cpu_energy or {}).values()) + list((result.dram_energy or {}).values())
        values = [float(v) for v in values if v is not None]
        total = sum(values)
        # Zeus returns empty or all-zero readings where it has no counter; that is not a measurement.
        if not values or not math.isfinite(total) or total <= 0:
            return math.nan, "unavailable"
        return total, self.source


class PeakMemory:
    """Peak memory of a ``with`` block in MiB, :attr:`peak_mb` after the block (how, per device: see the
    module docstring). ``device``: whose memory counts (``cuda`` is the current CUDA device, see
    :func:`cuda_index`; its index is :attr:`device_index`, ``None`` on the CPU); ``interval_s``: the CPU
    sampling period.
    """

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 0.01) -> None:
        self.device = torch.device(device)
        self.device_index = cuda_index(self.device)
        if self.device_index is not None:
            self.device = torch.device("cuda", self.device_index)
        self.interval_s = interval_s
        self.peak_mb = math.nan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_bytes = 0

    def _sample(self) -> None:
        process = psutil.Process(os.getpid())
        while not self._stop.is_set():
            self._peak_bytes = max(self._peak_bytes, process.memory_info().rss)
            self._stop.wait(self.interval_s)
        self._peak_bytes = max(self._peak_bytes, process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / _MIB
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = self._peak_bytes / _MIB


def classification_metrics(confusion: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 from a confusion matrix (rows: true, cols: predicted).

    Macro averages weigh every class equally; a class that is never predicted (or never present)
    contributes 0 to precision (recall), as scikit-learn's ``zero_division=0``. Classes absent from
    both the labels and the predictions are left out of the averages, as scikit-learn does.
    """
    cm = torch.as_tensor(confusion, dtype=torch.float64)
    total = cm.sum()
    if total == 0:
        return {"accuracy": math.nan, "precision": math.nan, "recall": math.nan, "f1": math.nan}
    tp = cm.diag()
    predicted = cm.sum(0)
    actual = cm.sum(1)
    present = (predicted + actual) > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), torch.zeros_like(tp))
    return {
        "accuracy": float(tp.sum() / total),
        "precision": float(precision[present].mean()),
        "recall": float(recall[present].mean()),
        "f1": float(f1[present].mean()),
    }


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC of class probabilities ``probs`` ``[N, K]`` (rows sum to 1) for the
    true classes ``labels`` ``[N]``; NaN when a class is missing from ``labels``."""
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn (with scipy) costs a second to import

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if len(np.unique(labels)) < k:
        return math.nan
    if k == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=list(range(k))))


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels`` (sklearn's balanced accuracy).

    With every class present this equals the macro recall; it has its own name because on imbalanced
    data (VisA: 89 % normal) it is the accuracy that a constant answer cannot inflate.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    recalls = [float((preds[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(recalls)) if recalls else math.nan


def majority_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always answering the most frequent class of ``labels``: the floor a model must beat."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return math.nan
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, *, positive: int = 1, prefix: str = "") -> dict[str, float]:
    """Precision, recall, F1 (argmax at 0.5) and AUROC of the ``positive`` class (VisA: 1, anomaly) of a
    two-class problem, from the true classes ``labels`` (0 / 1) and ``scores``, the positive class's
    probability per sample; keys ``precision``, ``recall``, ``f1``, ``auroc``, each after ``prefix``.
    """
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn (with scipy) costs a second to import

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    truth = labels == positive
    predicted = (scores > 0.5) if positive == 1 else (scores < 0.5)
    tp = float((truth & predicted).sum())
    precision = tp / float(predicted.sum()) if predicted.any() else 0.0
    recall = tp / float(truth.sum()) if truth.any() else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    auroc = float(roc_auc_score(truth, scores if positive == 1 else -scores)) if 0 < truth.sum() < truth.size else math.nan
    return {f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": f1, f"{prefix}auroc": auroc}


#: What a run's ``peak_memory_mb`` covers (``runs.peak_memory_scope``).
PEAK_MEMORY_SCOPES: dict[str, str] = {
    "own-process": (
        "CPU: the run had a fresh process of its own (the local executor spawns one per run), so its peak "
        "resident memory is its own: interpreter, libraries, its data and its training, nothing of other runs"
    ),
    "shared-process": (
        "CPU: the run shared its process with earlier runs (a Dask worker runs its runs in turn; the local "
        "executor with process_per_run: false); the figure can include what they left in the allocator"
    ),
    "cuda-allocator": (
        "GPU: the CUDA caching allocator's peak on the run's device (device_index), reset at every phase start; "
        "the run's own whatever ran before"
    ),
}

_PROCESS_OWNER: list[str] = []


def claim_process(run_id: str) -> None:
    """Mark this freshly started process as the run's own, so its CPU peak memory is the run's alone
    (called before the run by the executor that started the process, :mod:`helpers.executors`)."""
    _PROCESS_OWNER[:] = [run_id]


def peak_memory_scope(run_id: str, device: str | torch.device) -> str:
    """Which of :data:`PEAK_MEMORY_SCOPES` the run's peak memory on ``device`` has."""
    if torch.device(device).type == "cuda":
        return "cuda-allocator"
    return "own-process" if _PROCESS_OWNER == [run_id] else "shared-process"


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(total, nonzero)`` parameter counts of ``model``.

    A :class:`~helpers.pruning.sparse.SparseLinear` layer holds its weight as CSR buffers, not
    parameters: it counts at its dense shape in ``total`` (``out x in`` plus its bias) and its stored
    values and bias in ``nonzero``, so a model counts the same with its linear layers dense or CSR.
    """
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for module in model.modules():
        if hasattr(module, "crow_indices") and hasattr(module, "values") and hasattr(module, "in_features"):
            total += module.in_features * module.out_features
            nonzero += int(torch.count_nonzero(module.values.detach()))
            if getattr(module, "bias", None) is not None:
                total += module.bias.numel()
                nonzero += int(torch.count_nonzero(module.bias.detach()))
    return total, nonzero


def _percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q) * 1e3)


#: Layouts :func:`benchmark_inference` can run a model in; ``auto`` measures and takes the faster.
MEMORY_FORMATS: tuple[str, ...] = ("auto", "contiguous", "channels_last")
_TORCH_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _to_layout(model: nn.Module, x: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    fmt = _TORCH_FORMATS[layout]
    return model.to(memory_format=fmt), x.contiguous(memory_format=fmt)


def choose_memory_format(model: nn.Module, x: torch.Tensor, *, trials: int = 5) -> str:
    """The faster layout of ``model`` on input ``x`` on this CPU, ``"contiguous"`` or ``"channels_last"``,
    by the median of ``trials`` forward passes in each (after one untimed pass); the model is left in it.

    oneDNN's convolutions can be much faster channels-last (NHWC), above all for the thin layers of a
    compacted model, but not always (a dense VGG16 at 32 px is slower in it), hence the measurement.
    """
    if x.dim() != 4:
        return "contiguous"
    medians = {}
    for layout in ("contiguous", "channels_last"):
        # converted outside inference mode: parameters made inside it could never train again
        model, xl = _to_layout(model, x, layout)
        with torch.inference_mode():
            model(xl)
            times = []
            for _ in range(max(1, trials)):
                start = time.perf_counter()
                model(xl)
                times.append(time.perf_counter() - start)
        medians[layout] = float(np.median(times))
    best = min(medians, key=medians.get)
    _to_layout(model, x, best)
    return best


def benchmark_inference(
    load: Callable[[], nn.Module],
    images: torch.Tensor,
    *,
    batch_size: int = 1,
    samples: int = 100,
    warmup: int = 10,
    threads: int = 1,
    meter: EnergyMeter | None = None,
    memory_format: str = "auto",
) -> dict[str, Any]:
    """Time CPU inference of a model loaded from disk, timm-style (a fixed thread count, warm-up batches,
    ``time.perf_counter`` around each batch under ``torch.inference_mode``). The energy window spans
    ``load()``, the warm-up and the timed batches; the latency figures only the timed batches.

    Args:
        load: returns the model (e.g. ``lambda: load_model(path)``); it is put in eval mode.
        images: input images ``[N, C, H, W]``, cycled to fill the batches of ``batch_size``.
        samples: images to time; ``ceil(samples / batch_size)`` timed batches, after ``warmup`` untimed ones.
        threads: torch intra-op threads (restored afterwards).
        meter: energy meter (default: a CPU one).
        memory_format: ``"contiguous"``, ``"channels_last"``, or ``"auto"`` (default): measure both
            after loading (:func:`choose_memory_format`, part of the warm-up) and time the faster,
            as a deployment would.

    Returns:
        ``batch_size, samples, warmup, threads, memory_format, latency_ms_mean, latency_ms_p50,
        latency_ms_p95, load_time_s, energy_j, energy_source``, and ``model`` (the loaded model, for reuse).
    """
    if images.shape[0] == 0:
        raise ValueError("benchmark_inference needs at least one image")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"unknown memory_format {memory_format!r}; expected one of {', '.join(MEMORY_FORMATS)}")
    meter = meter or EnergyMeter("cpu")
    n_batches = max(1, math.ceil(samples / batch_size))
    reps = math.ceil(batch_size / images.shape[0])
    pool = images.repeat(reps, 1, 1, 1) if reps > 1 else images
    shift = [(i * batch_size) % images.shape[0] for i in range(min(n_batches, 8))]
    batches = [pool.roll(-s, 0)[:batch_size].contiguous() for s in shift]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with meter.measure() as energy:
            start = time.perf_counter()
            model = load().eval()
            load_time = time.perf_counter() - start
            layout = choose_memory_format(model, batches[0]) if memory_format == "auto" else memory_format
            model, _ = _to_layout(model, batches[0], layout)
            batches = [b.contiguous(memory_format=_TORCH_FORMATS[layout]) if b.dim() == 4 else b for b in batches]
            per_image: list[float] = []
            with torch.inference_mode():
                for i in range(warmup):
                    model(batches[i % len(batches)])
                for i in range(n_batches):
                    x = batches[i % len(batches)]
                    t0 = time.perf_counter()
                    model(x)
                    per_image.append((time.perf_counter() - t0) / x.shape[0])
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "batch_size": batch_size,
        "samples": n_batches * batch_size,
        "warmup": warmup,
        "threads": threads,
        "memory_format": layout,
        "latency_ms_mean": float(np.mean(per_image) * 1e3),
        "latency_ms_p50": _percentile_ms(per_image, 50),
        "latency_ms_p95": _percentile_ms(per_image, 95),
        "load_time_s": load_time,
        "energy_j": energy.energy_j,
        "energy_source": energy.source,
        "model": model,
    }


def file_size_mb(path: str | os.PathLike) -> float:
    """Size of a file on disk in MiB."""
    return Path(path).stat().st_size / _MIB


def sum_energy(rows: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    """The energy of several measured windows (rows with ``energy_j`` and ``energy_source``) and its source.

    A sum is only a measurement if every window was measured, by the same meter: otherwise (no rows, a
    window unavailable or not finite, two meters) it is ``(nan, "unavailable")``.
    """
    if not rows:
        return math.nan, "unavailable"
    sources = {r["energy_source"] for r in rows}
    values = [float(r["energy_j"]) for r in rows]
    if len(sources) != 1 or "unavailable" in sources or not all(math.isfinite(v) for v in values):
        return math.nan, "unavailable"
    return float(sum(values)), sources.pop()
