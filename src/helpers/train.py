"""The training loop: plain ``train_one_epoch`` / ``evaluate`` functions and a resumable :func:`fit`.

Shaped after torchvision's ``references/classification``: one function per phase, and a checkpoint
dict written after every epoch that a resume picks up. The pruning method's hooks (:mod:`helpers.pruning`)
run where the contract puts them: ``after_step`` after every ``optimizer.step()``, ``on_epoch_end`` after
each epoch's training and validation (so validation never sees units a swap just re-initialised; the
swap counts as training), ``on_train_end`` by the caller after :func:`fit`.

Speed (close to a minimal PyTorch loop): prepared float tensors (or a ``StreamedImages`` giving the same
batches) indexed by a seeded ``torch.randperm`` per epoch; loss and confusion counts accumulate as tensors
(no per-step ``.item()`` synchronisation); evaluation runs at a larger batch under ``torch.inference_mode``;
Adam is fused where available.

Reproducibility: epoch ``e``'s batch order (and augmentation) comes from a generator seeded with
``(seed, e)`` and the global RNG state (dropout) is checkpointed, so a resumed run retraces the
uninterrupted one on the same machine.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # tqdm.auto warns in a Jupyter kernel without ipywidgets; bars are off there anyway
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

from helpers.measure import EnergyMeter, PeakMemory, classification_metrics, sum_energy
from helpers.files import DamagedFileError, atomic_write, load_torch

__all__ = [
    "Data",
    "seed_everything",
    "make_optimizer",
    "epoch_generator",
    "train_one_epoch",
    "evaluate",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "resume_from_checkpoint",
    "CHECKPOINT_KEYS",
    "FitResult",
]


@dataclass
class Data:
    """A dataset ready for training, per split: int64 labels and float images (pre-padded, normalised),
    a tensor ``N x C x H x W`` or, for data too large to hold as floats, a
    :class:`helpers.transforms.StreamedImages` that returns the same tensor for the same index."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def to(self, device: torch.device | str) -> Data:
        """The same data on ``device``."""
        fields = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Data(**fields, num_classes=self.num_classes)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` (fused where the device supports it) or ``sgd`` (momentum 0.9)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):  # fused unsupported for this device / dtype
            return cls(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of adam, adamw, sgd")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of epoch ``epoch`` (0-based): batch order and augmentation."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _confusion(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    counts = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    num_classes: int,
    generator: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
) -> dict[str, float]:
    """Train one epoch (``model`` in train mode) over ``images`` in a random order; masks re-applied after
    every step. A final batch of a single image is skipped (BatchNorm cannot train on it).

    Args:
        method: the pruning method (:class:`helpers.pruning.PruningMethod`), whose ``after_step`` runs
            after every optimizer step; ``None`` for plain fine-tuning.
        images: float images ``[N, C, H, W]`` on the model's device, or a ``StreamedImages`` returning
            batches there; ``labels`` int64 ``[N]`` on the same device.
        generator: CPU generator of the batch order (and of ``augment``).
        augment: optional ``f(batch, generator) -> batch``.
        penalty: optional ``f(model) -> scalar`` added to the loss that is minimised (e.g. network
            slimming's L1 on BatchNorm scales); the returned ``loss`` stays the cross-entropy.
        after_step: optional ``f(model)`` called after every optimizer step, after the method's.

    Returns:
        ``loss`` (mean cross-entropy, NaN/inf if training diverged), ``accuracy``, ``precision``,
        ``recall``, ``f1`` (macro), ``samples``.
    """
    model.train()
    device = images.device
    n = images.shape[0]
    order = torch.randperm(n, generator=generator)
    if isinstance(images, torch.Tensor):  # in memory: index on the device; streamed: the rows are read on the CPU
        order = order.to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    seen = 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < 2:
            continue
        x, y = images[idx], labels[idx]
        if augment is not None:
            x = augment(x, generator)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        total = loss + penalty(model) if penalty is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if method is not None:
            method.after_step(model, optimizer)
        if after_step is not None:
            after_step(model)
        loss_sum += loss.detach() * y.shape[0]
        confusion += _confusion(y, logits.detach().argmax(1), num_classes)
        seen += y.shape[0]
    if seen == 0:
        raise ValueError(f"no training batch of at least 2 images in a split of {n}; use more training images")
    metrics = classification_metrics(confusion.cpu())
    return {"loss": float(loss_sum) / seen, **metrics, "samples": seen}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    num_classes: int,
) -> tuple[dict[str, float], torch.Tensor]:
    """Score ``model`` (in eval mode) on ``images`` (a float tensor or a ``StreamedImages``), in order.

    Returns:
        ``(metrics, probs)``: metrics ``loss``, ``accuracy``, ``precision``, ``recall``, ``f1``,
        ``samples``; ``probs`` the softmax class probabilities ``[N, K]`` as float32 on the CPU.
    """
    model.eval()
    n = images.shape[0]
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    probs = []
    for start in range(0, n, batch_size):
        logits = model(images[start : start + batch_size]).float()
        loss_sum += F.cross_entropy(logits, labels[start : start + batch_size], reduction="sum")
        probs.append(logits.softmax(1))
    prob = torch.cat(probs).cpu() if probs else torch.empty(0, num_classes)
    confusion = _confusion(labels.cpu(), prob.argmax(1), num_classes) if n else torch.zeros(num_classes, num_classes)
    metrics = classification_metrics(confusion)
    return {"loss": float(loss_sum) / max(n, 1), **metrics, "samples": n}, prob


_clock = time.monotonic  # the checkpoint interval's clock (a test replaces it)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` atomically (:func:`helpers.files.atomic_write`); raises
    :class:`helpers.files.WriteFailedError` (naming the path) when it cannot be written (disk full, ...),
    leaving the previous checkpoint unchanged."""
    atomic_write(Path(path), lambda fh: torch.save(dict(state), fh), mode="wb")


#: Keys every checkpoint of :func:`fit` holds.
CHECKPOINT_KEYS: tuple[str, ...] = ("model", "method", "epoch", "history", "rng")


def load_checkpoint(path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU) that
    holds the ``required`` keys.

    Raises:
        FileNotFoundError: there is no such file.
        helpers.files.DamagedFileError: it cannot be read, or lacks a required key; the message names
            the file and never suggests loading it unsafely.
    """
    state = load_torch(path, what="checkpoint")
    if not isinstance(state, dict):
        raise _incompatible(path, f"holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in required if k not in state]
    if missing:
        raise _incompatible(path, f"has no {', '.join(missing)} (written by another version?)")
    return state


def _incompatible(path: str | os.PathLike, reason: str) -> DamagedFileError:
    return DamagedFileError(f"checkpoint {path} is incompatible: {reason}", path, reason)


def resume_from_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, method: Any,
                           device: torch.device, compaction: Any = None) -> tuple[int, list[dict[str, Any]], bool, dict[str, Any] | None]:  # fmt: skip
    """Restore a :func:`fit` checkpoint into ``model``, ``optimizer``, ``method`` and the RNGs; returns
    ``(epochs done, history, diverged, best)`` (``best`` as in :class:`FitResult`).

    With ``compaction`` (:class:`helpers.pruning.CompactedTraining`), a checkpoint holding the compacted
    network instead of the full-size one (a fixed mask's, as written before 2026-12-03) is read through it.

    Raises:
        helpers.files.DamagedFileError: the checkpoint cannot be read or does not fit this run (another
            architecture, method or version); ``model``, ``optimizer`` and ``method`` may then be partly
            restored, so build them again before training from scratch.
    """
    state = load_checkpoint(path, required=CHECKPOINT_KEYS)
    try:
        method.load_state_dict(state["method"])
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if compaction is not None and any(shapes.get(k) != getattr(v, "shape", None) for k, v in state["model"].items()):
            compaction.load_compacted(model, optimizer, state["model"], state.get("optimizer"))
        else:
            model.load_state_dict(state["model"])
            if state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
        method.apply(model)
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = [dict(row) for row in state["history"]]
        epoch = int(state["epoch"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        reason = f"does not fit this run's model, optimizer or method ({type(exc).__name__})"
        raise _incompatible(path, reason) from None
    return epoch, history, bool(state.get("diverged", False)), state.get("best")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch and phase (``epoch`` 1-based, ``phase`` train/val, the metrics,
            ``time_s``, ``energy_j``, ``energy_source``, ``peak_memory_mb``, swap statistics).
        diverged: whether the training loss became NaN or infinite (training stopped there).
        epochs_completed: epochs whose training finished with a finite loss.
        best: with ``score_best``, the ``epoch`` (1-based) of the best validation accuracy, that
            ``val_accuracy`` and what ``score_best`` returned for that epoch's network (not called
            when it is the last, whose network is the final model); ``None`` without ``score_best``.
    """

    history: list[dict[str, Any]]
    diverged: bool
    epochs_completed: int
    best: dict[str, Any] | None = None


@contextmanager
def _window(device: torch.device, meter: EnergyMeter) -> Iterator[SimpleNamespace]:
    """One measured phase: its ``start``, then ``seconds`` (once the device is done), ``energy``, ``memory``."""
    with PeakMemory(device) as memory, meter.measure() as energy:
        window = SimpleNamespace(start=time.perf_counter(), energy=energy, memory=memory)
        yield window
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        window.seconds = time.perf_counter() - window.start


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: Any,
    data: Data,
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    meter: EnergyMeter,
    checkpoint_path: str | os.PathLike | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    checkpoint_last: bool = True,
    checkpoint_every_s: float = 0.0,
    progress: bool = True,
    description: str = "epochs",
    compaction: Any = None,
    score_best: Callable[[nn.Module], Mapping[str, Any]] | None = None,
    macs: Callable[[nn.Module], int] | None = None,
) -> FitResult:
    """Train for ``epochs`` epochs, validating after each; resumable.

    Per epoch: train, validate the network as trained, then let ``method`` swap (``on_epoch_end``; its
    time, energy and peak memory count as that epoch's training); then the checkpoint (:data:`CHECKPOINT_KEYS`,
    ``optimizer``, ``best``, ``cuda_rng``, ``diverged``) is written atomically to ``checkpoint_path``,
    without the optimizer state after the last epoch. If the file exists when ``fit`` starts, the run
    resumes after its last finished epoch (:func:`resume_from_checkpoint`; a checkpoint that cannot be
    read or does not fit raises :class:`helpers.files.DamagedFileError`). A non-finite training loss
    stops training and marks the result diverged.

    Args:
        model: the model, on ``data``'s device, with ``method.on_init`` already applied.
        data: the splits (train and val are used).
        epochs: total epochs (including those already done in a checkpoint).
        seed: seeds each epoch's generator (:func:`epoch_generator`).
        meter: energy meter for the phases.
        checkpoint_path: where the checkpoint lives; None disables checkpointing.
        checkpoint_last: also checkpoint after the last (or a diverged) epoch; False when the caller
            saves the final state itself.
        checkpoint_every_s: checkpoint only once this many seconds have passed since the last one (or
            since ``fit`` began); 0: every epoch. A killed run loses at most this long plus one epoch; a
            VGG16 checkpoint with Adam's state is about 1.6 GB, so short runs need not write any.
        augment: optional batch augmentation ``f(batch, generator)``.
        progress: show a tqdm bar (only on a terminal), labelled ``description``.
        compaction: optional :class:`helpers.pruning.CompactedTraining`: every epoch trains the method's
            compacted network (built once for a fixed mask, after every swap for an evolving one), while
            ``model`` and ``optimizer`` stay the full-size record (swaps, checkpoints, the final model).
            Building and writing back count as training time (per epoch ``setup_time_s``).
        score_best: optional ``f(network) -> metrics``, called outside the timed phases whenever an
            epoch's validation accuracy beats every earlier one's; gives ``FitResult.best`` (the paper's
            Table 1 reports the best accuracy; scoring then saves a second full-size checkpoint per run).
        macs: optional ``f(network) -> MACs of one image's forward pass``: each train row then gets
            ``train_flops`` = 3 x those MACs (a backward is twice a forward's work, as RigL, Evci et al.
            2020, counts) x the images trained that epoch, on the network that trained it, counted
            outside the timed windows.
    """
    device = data.train_x.device
    history: list[dict[str, Any]] = []
    start_epoch = 0
    diverged = False
    best: dict[str, Any] | None = None
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        start_epoch, history, diverged, best = resume_from_checkpoint(
            checkpoint_path, model, optimizer, method, device, compaction=compaction
        )
    bar = tqdm(total=epochs, initial=start_epoch, desc=description, leave=False, disable=None if progress else True)
    epoch = start_epoch
    net, net_optimizer, hooks = model, optimizer, method  # what trains: the model, or its compacted twin
    counted: tuple[nn.Module | None, int] = (None, 0)  # (network, its MACs per image): recounted when it changes
    last_checkpoint = _clock()
    try:
        while epoch < epochs and not diverged:
            generator = epoch_generator(seed, epoch)
            with _window(device, meter) as phase:
                setup = 0.0
                if compaction is not None and net is model:
                    net, net_optimizer, hooks = compaction.build(model, optimizer)
                    setup += time.perf_counter() - phase.start
                train = train_one_epoch(
                    net, net_optimizer, hooks, data.train_x, data.train_y, batch_size=batch_size,
                    num_classes=data.num_classes, generator=generator, augment=augment,
                )  # fmt: skip
                diverged = not math.isfinite(train["loss"])
                if compaction is not None:
                    mark = time.perf_counter()
                    compaction.write_back(model, optimizer, net, net_optimizer, hooks)
                    setup += time.perf_counter() - mark
            train_row = _row(epoch, "train", train, phase)
            trained_net = net  # the swap below may rebuild net for the next epoch
            rows = [train_row]
            if not diverged:
                # Validation scores the network as trained this epoch, before any swap re-initialises units.
                with _window(device, meter) as phase:
                    val, _ = evaluate(
                        net, data.val_x, data.val_y, batch_size=eval_batch_size, num_classes=data.num_classes
                    )
                rows.append(_row(epoch, "val", val, phase))
                if score_best is not None and (best is None or val["accuracy"] > best["val_accuracy"]):
                    best = {"epoch": epoch + 1, "val_accuracy": float(val["accuracy"])}
                    if epoch + 1 < epochs:  # the last epoch's network is the final model, which the caller scores
                        best.update(score_best(net))
                # The swap (and the compacted network's rebuild) is training work, added to the train row.
                with _window(device, meter) as phase:
                    swaps = dict(method.on_epoch_end(model, optimizer, epoch, epochs))
                    if compaction is not None and (swaps.get("filters_swapped") or swaps.get("weights_swapped")):
                        net, net_optimizer, hooks = compaction.build(model, optimizer)  # the new mask's network
                        setup += time.perf_counter() - phase.start
                _add_window(train_row, phase)
                train_row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in swaps.items()})
            if compaction is not None:
                train_row["setup_time_s"] = float(setup)
            if macs is not None:
                if counted[0] is not trained_net:
                    counted = (trained_net, int(macs(trained_net)))
                train_row["train_flops"] = float(3 * counted[1] * int(train["samples"]))
            history.extend(rows)
            epoch += 1
            last = epoch >= epochs or diverged
            due = last or _clock() - last_checkpoint >= checkpoint_every_s
            if checkpoint_path is not None and (checkpoint_last or not last) and due:
                last_checkpoint = _clock()
                save_checkpoint(
                    checkpoint_path,
                    {
                        "model": model.state_dict(),
                        "optimizer": None if last else (
                            optimizer.state_dict() if compaction is None
                            else compaction.optimizer_state(model, optimizer, net, net_optimizer, hooks)
                        ),
                        "method": method.state_dict(),
                        "epoch": epoch,
                        "history": history,
                        "best": best,
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "diverged": diverged,
                    },
                )
            bar.update(1)
            bar.set_postfix(loss=f"{train['loss']:.3g}", val_acc=f"{rows[-1]['accuracy']:.3f}")
    finally:
        bar.close()
    completed = sum(1 for row in history if row["phase"] == "train" and math.isfinite(row["loss"]))
    return FitResult(history=history, diverged=diverged, epochs_completed=completed, best=best)


def _add_window(row: dict[str, Any], window: SimpleNamespace) -> None:
    """Add a second measured window (the swap) to a phase's row: time and energy add, peaks take the max."""
    row["time_s"] = float(row["time_s"]) + float(window.seconds)
    swap = {"energy_j": window.energy.energy_j, "energy_source": str(window.energy.source)}
    row["energy_j"], row["energy_source"] = sum_energy([row, swap])  # NaN unless both measured by one meter
    peak = float(window.memory.peak_mb)
    if math.isfinite(peak):
        row["peak_memory_mb"] = max(float(row["peak_memory_mb"]), peak) if math.isfinite(row["peak_memory_mb"]) else peak


def _row(epoch: int, phase: str, metrics: Mapping[str, float], window: SimpleNamespace) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "phase": phase,
        "loss": float(metrics["loss"]),
        "accuracy": float(metrics["accuracy"]),
        "precision": float(metrics["precision"]),
        "recall": float(metrics["recall"]),
        "f1": float(metrics["f1"]),
        "time_s": float(window.seconds),
        "energy_j": float(window.energy.energy_j),
        "energy_source": str(window.energy.source),
        "peak_memory_mb": float(window.memory.peak_mb),
    }
