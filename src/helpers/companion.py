"""The companion studies as two kinds of study: pruning criteria (notebook 05, :data:`CRITERIA_KIND`) and
pruning granularity (notebook 06, :data:`GRANULARITY_KIND`), on the primary study's data, models and tables.

A study file with ``study_kind: criteria`` or ``granularity`` is planned by :func:`plan` and run, one
:func:`run_one` per run, by its executor, like the primary grid; each kind validates its own keys
(:func:`validate_criteria`, :func:`validate_granularity`). Runs live in the run folders of
:mod:`helpers.lifecycle`, so :func:`helpers.results.collect` builds the same tables. Kinds of run:

- ``dense`` (scenario ``none``): the model to prune, trained with the primary protocol keys (``epochs``,
  ``optimizer``, ``lr``, ...), resumable; ``dense_lr_schedule: cosine`` anneals ``lr`` to 0 (:func:`dense_lr`).
  For ``bn_slimming_l1`` a second dense model (scenario ``slimming<lambda>``) is trained with network
  slimming's L1 penalty ``slimming_lambda * sum |gamma|`` on every BatchNorm scale (Liu et al., *Learning
  efficient convolutional networks through network slimming*, ICCV 2017; :func:`slimming_penalty`). Its
  ``model.pt`` stays (the other runs load it), its test metrics go to ``runs`` and its CPU measurement
  (variant ``dense``) to ``inference``: the baseline of both studies.
- ``criteria`` (scenario ``conv<filter_sparsity>_linear0``; after Lajić, Peer and Emeršič, *Exploring the
  differences in pruning methods for convolutional neural networks*, 2025): remove ``filter_sparsity``
  (0.4) of the filters of every conv group of the dense model in one shot with the run's ``criterion``,
  fine-tune with SGD (``finetune``: lr 1e-3, 1e-4, 1e-5 over equal thirds, batch 32, momentum 0.9,
  rotation and horizontal flip; 10 epochs up to 10 classes, 20 above;
  :func:`helpers.criteria.run_criteria_experiment`). ``runs`` gets the accuracy before pruning, after it
  and after fine-tuning; ``epochs`` the fine-tuning (phase ``finetune``); ``inference`` the compacted model.
- ``granularity`` (scenario ``budget<b>``; after Gurram, Sindhura and Bandari, *A study on neural network
  pruning techniques for efficient model deployment*, 2025): remove the fraction ``b`` of the dense model's
  prunable parameters at the run's ``granularity`` (:func:`helpers.granularity.apply_granularity`),
  fine-tune as above (``weight`` / ``unstructured`` re-apply their mask after every step) and measure the
  deployable form (:func:`helpers.granularity.measure_granularity`: CSR for ``weight`` / ``unstructured``,
  compacted tensors otherwise). A granularity with nothing to remove in a model (``neuron`` in a ResNet)
  finishes with status ``not_applicable`` and the reason in ``error``.

Measurements are on the CPU at batch 1 after ``inference.warmup`` untimed images, over ``inference.samples``
images with ``inference.threads`` threads (``inference.batch_sizes`` is unused); energy is not measured
(``energy_source`` ``unavailable``). Pruned models are not kept; dense models are, whatever ``keep_models`` says.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers import pruning
from helpers.criteria import CRITERIA, GREEDY_RESCORE, default_finetune_epochs, finetune, run_criteria_experiment
from helpers.granularity import (
    GRANULARITIES,
    NoRemovableUnitError,
    apply_granularity,
    measure_granularity,
    prunable_layers,
)
from helpers.lifecycle import begin_run, finish, is_finished, run_dir, trained_model
from helpers.measure import EnergyMeter, count_params, macro_auc, sum_energy
from helpers.models import build_model
from helpers.params import (
    RESULT_KEYS,
    ParamsError,
    RunSpec,
    StudyKind,
    StudyParams,
    as_list,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_int,
)
from helpers.results import read_json, summarize_rows, write_csv_atomic
from helpers.rundata import prepare_data
from helpers.train import Data, FitResult, evaluate, fit, make_optimizer, seed_everything
from helpers.transforms import augmenter

__all__ = [
    "CRITERIA_KIND",
    "GRANULARITY_KIND",
    "STUDY_CRITERIA",
    "DENSE_LR_SCHEDULES",
    "GRANULARITIES",
    "MODELS_WITHOUT_BATCHNORM",
    "CRITERIA_DEFAULTS",
    "GRANULARITY_DEFAULTS",
    "validate_criteria",
    "validate_granularity",
    "plan",
    "run_one",
    "failure_ids",
    "slimming_hooks",
    "slimming_penalty",
    "dense_lr",
]

log = logging.getLogger(__name__)

#: Criteria of the criteria study: :data:`helpers.criteria.CRITERIA` plus ``bn_slimming_l1``, network
#: slimming proper: ``bn_slimming`` applied to a dense model trained with the L1 penalty on gamma.
STUDY_CRITERIA: tuple[str, ...] = CRITERIA + ("bn_slimming_l1",)
#: Models of :data:`helpers.models.MODELS` without BatchNorm (no gamma for ``bn_slimming``).
MODELS_WITHOUT_BATCHNORM: tuple[str, ...] = ("vgg16",)
#: ``dense_lr_schedule`` values: ``lr`` throughout, or cosine-annealed to 0 over ``epochs`` (per epoch).
DENSE_LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")

#: Keys both companion studies read: the SGD fine-tuning after pruning (``finetune.epochs`` null:
#: helpers.criteria.default_finetune_epochs) and the dense training's :data:`DENSE_LR_SCHEDULES`.
_SHARED_DEFAULTS: dict[str, Any] = {
    "finetune": {"epochs": None, "lrs": [1e-3, 1e-4, 1e-5], "batch_size": 32, "momentum": 0.9, "hflip": True,
                 "rotation_degrees": 15.0},
    "dense_lr_schedule": "constant",
}
#: The criteria study's keys with their defaults (``greedy_rescore``: helpers.criteria.GREEDY_RESCORE).
CRITERIA_DEFAULTS: dict[str, Any] = {
    "criteria": ["greedy_output_norm", "l1", "bn_slimming", "random", "taylor"],
    "filter_sparsity": 0.4,
    "slimming_lambda": 1e-4,
    "calibration_size": 64,
    "greedy_rescore": "once",
    **_SHARED_DEFAULTS,
}
#: The granularity study's keys with their defaults.
GRANULARITY_DEFAULTS: dict[str, Any] = {
    "granularities": ["weight", "unstructured", "neuron", "structured", "layer"],
    "budgets": [0.5],
    **_SHARED_DEFAULTS,
}

# Keys that name the grid rather than one run's protocol; not copied into a run's parameters.
_GRID_KEYS = ("name", "datasets", "models", "methods", "scenarios", "seeds", "out", "criteria", "granularities", "budgets")


# ---------------------------------------------------------------------------------------------- schema


def _validate_shared(out: dict[str, Any]) -> None:
    ft = out["finetune"]
    ft["epochs"] = check_optional_int("finetune.epochs", ft["epochs"], minimum=0)
    lrs = as_list("finetune.lrs", ft["lrs"])
    ft["lrs"] = [check_float("finetune.lrs", lr, minimum=0.0, strict=True) for lr in lrs]
    ft["batch_size"] = check_int("finetune.batch_size", ft["batch_size"], minimum=2)
    ft["momentum"] = check_float("finetune.momentum", ft["momentum"], minimum=0.0, maximum=0.999)
    ft["hflip"] = check_bool("finetune.hflip", ft["hflip"])
    ft["rotation_degrees"] = check_float("finetune.rotation_degrees", ft["rotation_degrees"], minimum=0.0, maximum=180.0)
    out["dense_lr_schedule"] = check_choice("dense_lr_schedule", out["dense_lr_schedule"], DENSE_LR_SCHEDULES)


def validate_criteria(out: dict[str, Any]) -> None:
    """Check the criteria study's keys in the resolved parameters ``out`` (in place)."""
    out["criteria"] = list(dict.fromkeys(
        check_choice("criterion", c, STUDY_CRITERIA) for c in as_list("criteria", out["criteria"])
    ))  # fmt: skip
    out["filter_sparsity"] = check_float("filter_sparsity", out["filter_sparsity"], minimum=0.0, maximum=0.95, strict=True)
    out["slimming_lambda"] = check_float("slimming_lambda", out["slimming_lambda"], minimum=0.0, strict=True)
    out["calibration_size"] = check_int("calibration_size", out["calibration_size"], minimum=2)
    _validate_shared(out)
    out["greedy_rescore"] = check_choice("greedy_rescore", out["greedy_rescore"], GREEDY_RESCORE)
    if out["study_kind"] == "criteria":
        needs_bn = [c for c in out["criteria"] if c.startswith("bn_slimming")]
        no_bn = [m for m in out["models"] if m in MODELS_WITHOUT_BATCHNORM]
        if needs_bn and no_bn:
            raise ParamsError(
                f"criteria {', '.join(needs_bn)} rank filters by BatchNorm scales, but model {no_bn[0]} has no "
                f"BatchNorm; use vgg16_bn instead of vgg16, or drop {', '.join(needs_bn)} from criteria"
            )


def validate_granularity(out: dict[str, Any]) -> None:
    """Check the granularity study's keys in the resolved parameters ``out`` (in place)."""
    out["granularities"] = list(dict.fromkeys(
        check_choice("granularity", g, GRANULARITIES) for g in as_list("granularities", out["granularities"])
    ))  # fmt: skip
    budgets = [check_float("budgets", b, minimum=0.0, maximum=0.99, strict=True) for b in as_list("budgets", out["budgets"])]
    if len(set(budgets)) != len(budgets):
        raise ParamsError(f"budgets has repeated values {budgets}; list each once")
    out["budgets"] = budgets
    _validate_shared(out)


# ---------------------------------------------------------------------------------------------- plan


def _run_id(run: Mapping[str, Any], label: str) -> str:
    keys = list(RESULT_KEYS) + ["study_kind", "slimming_lambda"]
    if run["method"] == "criteria":
        keys += ["criterion", "filter_sparsity", "calibration_size", "finetune"]
    elif run["method"] == "granularity":
        keys += ["granularity", "budget", "finetune"]
    if run.get("dense_lr_schedule", "constant") != "constant":
        keys.append("dense_lr_schedule")
    if run["method"] == "criteria" and run["criterion"] == "greedy_output_norm" and run.get("greedy_rescore", "once") != "once":
        keys.append("greedy_rescore")
    blob = json.dumps({k: run[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    return f"{run['dataset']}-{run['model']}-{label}-{run['scenario']}-s{run['seed']}-{digest}"


def _spec(params: StudyParams, dataset: str, model: str, seed: int, method: str, scenario: str, label: str,
          dense_run_id: str | None = None, **extra: Any) -> RunSpec:  # fmt: skip
    run = {k: copy.deepcopy(v) for k, v in params.to_dict().items() if k not in _GRID_KEYS}
    run.update(
        dataset=dataset,
        dataset_options=copy.deepcopy(params["dataset_options"].get(dataset, {})),
        model=model,
        seed=seed,
        method=method,
        scenario=scenario,
        conv_sparsity=0.0,
        linear_sparsity=0.0,
        slimming_lambda=0.0,
        criterion="",
        granularity="",
        budget=0.0,
    )
    run.update(extra)
    return RunSpec(
        run_id=_run_id(run, label), dataset=dataset, model=model, method=method, scenario=scenario, seed=seed,
        params=run, dense_run_id=dense_run_id,
    )  # fmt: skip


def _dense(params: StudyParams, dataset: str, model: str, seed: int, slimming_lambda: float = 0.0) -> RunSpec:
    scenario = f"slimming{slimming_lambda:g}" if slimming_lambda > 0 else "none"
    return _spec(params, dataset, model, seed, "dense", scenario, "dense", slimming_lambda=slimming_lambda)


def plan(params: StudyParams) -> list[RunSpec]:
    """The companion study's runs in execution order: per dataset x model x seed, the dense run(s) first,
    then the runs that prune them (one per criterion, or per granularity x budget). ValueError for a
    primary study (use :func:`helpers.primary.expand_grid`)."""
    kind = params["study_kind"]
    if kind not in ("criteria", "granularity"):
        raise ValueError(f"study {kind!r} is not a companion study; expected criteria or granularity")
    specs: list[RunSpec] = []
    for dataset in params["datasets"]:
        for model in params["models"]:
            for seed in params["seeds"]:
                if kind == "criteria":
                    lams = {c: params["slimming_lambda"] if c == "bn_slimming_l1" else 0.0 for c in params["criteria"]}
                    dense = {lam: _dense(params, dataset, model, seed, lam) for lam in dict.fromkeys(lams.values())}
                    specs.extend(dense.values())
                    sparsity = params["filter_sparsity"]
                    for criterion, lam in lams.items():
                        specs.append(_spec(
                            params, dataset, model, seed, "criteria", f"conv{sparsity:g}_linear0", criterion,
                            dense[lam].run_id, criterion=criterion, conv_sparsity=sparsity, slimming_lambda=lam,
                            filter_sparsity=sparsity,
                        ))  # fmt: skip
                else:
                    dense = _dense(params, dataset, model, seed)
                    specs.append(dense)
                    for granularity in params["granularities"]:
                        for budget in params["budgets"]:
                            specs.append(_spec(
                                params, dataset, model, seed, "granularity", f"budget{budget:g}", granularity,
                                dense.run_id, granularity=granularity, budget=budget,
                            ))  # fmt: skip
    return specs


def failure_ids(spec: RunSpec) -> dict[str, Any]:
    """A failed companion run's identifying columns in ``runs.csv``."""
    p = spec.params
    return {
        "run_id": spec.run_id, "dataset": spec.dataset, "model": spec.model, "method": spec.method,
        "scenario": spec.scenario, "seed": spec.seed, "study_kind": p["study_kind"], "criterion": p["criterion"],
        "granularity": p["granularity"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- one run


def run_one(spec: RunSpec, study: str | os.PathLike, *, progress: bool = False) -> str:
    """Execute one run of :func:`plan` in the folder ``study`` and finish its run folder atomically;
    ``progress`` shows the dense run's epoch bar (only on a terminal).

    Returns:
        ``"skipped"`` (already finished), ``"completed"``, ``"diverged"`` or ``"not_applicable"``.
    """
    study = Path(study)
    if is_finished(study, spec.run_id):
        return "skipped"
    p = spec.params
    work = begin_run(spec, study)
    cpu_data = prepare_data(spec)
    device = torch.device(p["device"])
    data = cpu_data.to(device) if device.type != "cpu" else cpu_data
    if spec.method == "dense":
        row, inference = _run_dense(spec, study, work, data, progress)
    else:
        dense_dir = run_dir(study, spec.dense_run_id)
        # is_finished also sets a damaged dense folder aside; the next call trains it again
        dense_row = read_json(dense_dir / "result.json") if is_finished(study, spec.dense_run_id) else {}
        if dense_row.get("status") != "completed":
            raise RuntimeError(
                f"dense run {spec.dense_run_id} has not completed (see {dense_dir}); {spec.run_id} needs its trained "
                "model: run the same command again, which runs the dense run first"
            )
        model = pruning.load_model(dense_dir / "model.pt").to(device)
        run = _run_criterion if spec.method == "criteria" else _run_granularity
        row, inference = run(spec, work, model, data, dense_row)
    if inference:
        write_csv_atomic(work / "inference.csv", summarize_rows(inference, "inference"))
    torch.set_num_threads(p["threads"])
    return finish(study, spec, work, row)


def _gammas(model: torch.nn.Module) -> list[torch.Tensor]:
    """The scales (``weight``) of every affine BatchNorm layer of ``model``."""
    bns = (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    return [m.weight for m in bns if m.weight is not None]


def slimming_hooks(model: torch.nn.Module, slimming_lambda: float) -> list[Any]:
    """Add network slimming's sub-gradient ``slimming_lambda * sign(gamma)`` to the gradient of every
    BatchNorm scale (Liu et al. 2017): training then minimises ``loss + slimming_lambda * sum |gamma|``.
    Returns the hook handles; call ``handle.remove()`` on each to stop.
    """
    return [w.register_hook(lambda grad, w=w: grad + slimming_lambda * torch.sign(w.detach())) for w in _gammas(model)]


class _Hooked:
    """Wraps a pruning method: subclasses extend ``after_step`` or ``on_epoch_end``; the rest is the method's."""

    def __init__(self, method: Any) -> None:
        self._method = method

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)


class _DecoupledSlimming(_Hooked):
    def __init__(self, method: Any, gammas: list[torch.Tensor], slimming_lambda: float) -> None:
        super().__init__(method)
        self._gammas, self._lambda = gammas, slimming_lambda

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        lr = optimizer.param_groups[0]["lr"]
        for gamma in self._gammas:
            gamma.sub_(lr * self._lambda * torch.sign(gamma))
        self._method.after_step(model, optimizer)


class _Scheduled(_Hooked):
    def __init__(self, method: Any, lr: float, schedule: str) -> None:
        super().__init__(method)
        self._lr, self._schedule = lr, schedule

    def on_epoch_end(self, model: torch.nn.Module, optimizer: Any, epoch: int, epochs: int) -> Any:
        out = self._method.on_epoch_end(model, optimizer, epoch, epochs)
        if optimizer is not None and epoch + 1 < epochs:  # the next epoch's rate, saved with the checkpoint
            for group in optimizer.param_groups:
                group["lr"] = dense_lr(self._lr, epoch + 1, epochs, self._schedule)
        return out


def dense_lr(lr: float, epoch: int, epochs: int, schedule: str = "constant") -> float:
    """The companion dense training's learning rate in 0-based ``epoch``: ``lr`` (``constant``) or
    ``lr * (1 + cos(pi * epoch / epochs)) / 2`` (``cosine``, Loshchilov & Hutter's SGDR without restarts)."""
    if schedule not in DENSE_LR_SCHEDULES:
        raise ValueError(f"unknown dense_lr_schedule {schedule!r}; expected one of {', '.join(DENSE_LR_SCHEDULES)}")
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def slimming_penalty(
    model: torch.nn.Module, slimming_lambda: float, optimizer: torch.optim.Optimizer, method: Any
) -> tuple[Any, list[Any]]:
    """Network slimming's L1 penalty ``slimming_lambda * sum |gamma|`` on every BatchNorm scale of ``model``,
    applied as the SGD step Liu et al. (2017) took.

    With ``torch.optim.SGD`` the sub-gradient ``lambda * sign(gamma)`` joins each gamma's gradient before the
    step (:func:`slimming_hooks`; momentum and weight decay act on it as in their code). Adam and AdamW
    divide every gradient by its running RMS, so the same sub-gradient would move gamma by about ``lr``
    whatever ``lambda`` is; for them the penalty is applied after each step instead:
    ``gamma -= lr * lambda * sign(gamma)`` at the optimizer's current rate (like AdamW's decoupled decay).

    Returns:
        ``(method, handles)``: the pruning ``method`` for the training loop (wrapped to take the decoupled
        step unless SGD) and the gradient hooks (empty unless SGD; ``handle.remove()`` each after training).
    """
    if isinstance(optimizer, torch.optim.SGD):
        return method, slimming_hooks(model, slimming_lambda)
    return _DecoupledSlimming(method, _gammas(model), slimming_lambda), []


def _test_row(model: torch.nn.Module, data: Data, batch_size: int) -> dict[str, Any]:
    metrics, probs = evaluate(model, data.test_x, data.test_y, batch_size=batch_size, num_classes=data.num_classes)
    labels = data.test_y.cpu().numpy()
    return {
        "test_accuracy": metrics["accuracy"], "test_precision": metrics["precision"], "test_recall": metrics["recall"],
        "test_f1": metrics["f1"], "test_auc": macro_auc(labels, probs.numpy().astype(np.float32)),
        "test_loss": metrics["loss"], "test_samples": metrics["samples"],
    }  # fmt: skip


def _measure(spec: RunSpec, model: torch.nn.Module, data: Data, kind: str, variant: str) -> dict[str, Any]:
    """The inference row of ``model`` (moved to the CPU): size on disk, latency per image, MACs."""
    inf = spec.params["inference"]
    images = data.test_x[: max(1, min(inf["samples"], data.test_x.shape[0]))].cpu()
    measured = measure_granularity(model, kind, images, samples=inf["samples"], warmup=inf["warmup"],
                                   threads=inf["threads"])  # fmt: skip
    return {
        "run_id": spec.run_id, "variant": variant, "device": "cpu", "threads": measured["threads"], "batch_size": 1,
        "samples": inf["samples"], "warmup": inf["warmup"], "latency_ms_mean": measured["latency_ms_mean"],
        "latency_ms_p50": measured["latency_ms_p50"], "latency_ms_p95": measured["latency_ms_p95"],
        "energy_j": math.nan, "energy_source": "unavailable", "params_total": measured["params_total"],
        "params_nonzero": measured["params_nonzero"], "model_size_mb": measured["size_mb"], "macs": measured["macs"],
        "max_abs_logit_diff": math.nan, "size_format": measured["size_format"],
        "size_mb_dense_file": measured["size_mb_dense_file"], "latency_format": measured["latency_format"],
        "latency_ms_sparse_linear": measured["latency_ms_sparse_linear"], "macs_nonzero": measured["macs_nonzero"],
        "params_prunable": measured["params_prunable"], "params_prunable_nonzero": measured["params_prunable_nonzero"],
    }  # fmt: skip


def _train_dense(spec: RunSpec, work: Path, data: Data, progress: bool) -> tuple[torch.nn.Module, FitResult]:
    """Build and train the dense model (with network slimming's penalty where asked); resumes from the checkpoint."""
    p = spec.params
    device = data.train_x.device
    seed_everything(spec.seed)
    model = build_model(spec.model, data.num_classes, data.train_x.shape[1]).to(device)
    method = pruning.make_method("dense", None, seed=spec.seed)
    method.on_init(model)
    optimizer = make_optimizer(p["optimizer"], model, lr=p["lr"], weight_decay=p["weight_decay"])
    handles: list[Any] = []
    if p["slimming_lambda"] > 0:
        method, handles = slimming_penalty(model, p["slimming_lambda"], optimizer, method)
    method = _Scheduled(method, p["lr"], p.get("dense_lr_schedule", "constant"))
    try:
        result = fit(
            model, optimizer, method, data, epochs=p["epochs"], batch_size=p["batch_size"],
            eval_batch_size=p["eval_batch_size"], seed=spec.seed,
            meter=EnergyMeter(device, estimate=p["energy"]["estimate"]), checkpoint_path=work / "checkpoint.pt",
            checkpoint_last=False, augment=augmenter(p["augment"]), progress=progress, description=spec.run_id,
        )  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    return model, result


def _run_dense(spec: RunSpec, study: Path, work: Path, data: Data,
               progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    p = spec.params
    meta = {"run_id": spec.run_id, "model": spec.model, "dataset": spec.dataset, "method": "dense", "seed": spec.seed}
    model, result = trained_model(study, spec, work, lambda: _train_dense(spec, work, data, progress),
                                  data.train_x.device, meta)  # fmt: skip
    write_csv_atomic(work / "epochs.csv", summarize_rows([{"run_id": spec.run_id, **r} for r in result.history], "epochs"))
    train_rows = [r for r in result.history if r["phase"] == "train"]
    energy, source = sum_energy(train_rows)
    peaks = [r["peak_memory_mb"] for r in train_rows if math.isfinite(r["peak_memory_mb"])]
    row = {
        **failure_ids(spec), "status": "diverged" if result.diverged else "completed",
        "epochs_completed": result.epochs_completed, "conv_sparsity_target": 0.0, "linear_sparsity_target": 0.0,
        "train_time_s": float(sum(r["time_s"] for r in train_rows)), "train_energy_j": energy,
        "train_energy_source": source, "peak_memory_mb": max(peaks) if peaks else math.nan,
        "slimming_lambda": p["slimming_lambda"], "reused_run_id": "", "device": p["device"], "error": "",
    }  # fmt: skip
    inference = []
    if not result.diverged:
        row.update(_test_row(model, data, p["eval_batch_size"]))
        row.update(pruning.summarize_sparsity(model))
        row["accuracy_before"] = row["test_accuracy"]
        inference.append(_measure(spec, model, data, "dense", "dense"))
    return row, inference


def _finetune_rows(spec: RunSpec, history: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"run_id": spec.run_id, "epoch": h["epoch"], "phase": "finetune", "loss": h["loss"], "accuracy": h["accuracy"],
         "energy_j": math.nan, "energy_source": "unavailable", "lr": h["lr"]}
        for h in history
    ]  # fmt: skip


def _finetune_epochs(spec: RunSpec, data: Data) -> int:
    epochs = spec.params["finetune"]["epochs"]
    return default_finetune_epochs(data.num_classes) if epochs is None else epochs


def _run_criterion(spec: RunSpec, work: Path, model: torch.nn.Module, data: Data,
                   dense_row: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    p, ft = spec.params, spec.params["finetune"]
    criterion = p["criterion"]
    result, pruned = run_criteria_experiment(
        model, data, "bn_slimming" if criterion == "bn_slimming_l1" else criterion, sparsity=p["filter_sparsity"],
        finetune_epochs=_finetune_epochs(spec, data), lrs=tuple(ft["lrs"]), batch_size=ft["batch_size"],
        momentum=ft["momentum"], rotation_degrees=ft["rotation_degrees"], hflip=ft["hflip"],
        calibration_size=p["calibration_size"], eval_batch_size=p["eval_batch_size"], seed=spec.seed,
        model_name=spec.model, return_model=True, greedy_rescore=p.get("greedy_rescore", "once"),
    )  # fmt: skip
    write_csv_atomic(work / "epochs.csv", summarize_rows(_finetune_rows(spec, result["history"]), "epochs"))
    total, nonzero = count_params(pruned)
    row = {
        **failure_ids(spec), "status": "completed", "epochs_completed": result["finetune_epochs"],
        "conv_sparsity_target": p["filter_sparsity"], "linear_sparsity_target": 0.0,
        "conv_filter_sparsity": result["filters_removed"] / result["filters_total"],
        "params_total": total, "params_nonzero": nonzero,
        "train_time_s": result["finetune_time_s"], "train_energy_j": math.nan, "train_energy_source": "unavailable",
        "peak_memory_mb": math.nan, **_test_row(pruned, data, p["eval_batch_size"]),
        "reused_run_id": spec.dense_run_id, "device": p["device"], "error": "",
        "slimming_lambda": p["slimming_lambda"], "filter_sparsity": p["filter_sparsity"],
        "accuracy_before": result["accuracy_before"], "accuracy_pruned": result["accuracy_pruned"],
        "accuracy_finetuned": result["accuracy_finetuned"], "loss_before": result["loss_before"],
        "loss_pruned": result["loss_pruned"], "loss_finetuned": result["loss_finetuned"],
        "filters_total": result["filters_total"], "filters_removed": result["filters_removed"],
        "params_before": result["params_before"], "params_after": result["params_after"],
        "macs_before": result["macs_before"], "macs_after": result["macs_after"],
        "selection_time_s": result["selection_time_s"], "finetune_time_s": result["finetune_time_s"],
    }  # fmt: skip
    return row, [_measure(spec, pruned, data, "structured", "compacted")]


def _run_granularity(spec: RunSpec, work: Path, model: torch.nn.Module, data: Data,
                     dense_row: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    p, ft = spec.params, spec.params["finetune"]
    granularity = p["granularity"]
    base = {
        **failure_ids(spec), "conv_sparsity_target": math.nan, "linear_sparsity_target": math.nan, "budget": p["budget"],
        "reused_run_id": spec.dense_run_id, "device": p["device"], "accuracy_before": dense_row["test_accuracy"],
        "train_energy_j": math.nan, "train_energy_source": "unavailable",
    }  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pruned, info = apply_granularity(model, granularity, p["budget"], data.train_x[:2])
        except NoRemovableUnitError as exc:
            return {**base, "status": "not_applicable", "epochs_completed": 0, "error": " ".join(str(exc).split())}, []
    note = "; ".join(" ".join(str(w.message).split()) for w in caught)
    pruned_metrics, _ = evaluate(pruned, data.test_x, data.test_y, batch_size=p["eval_batch_size"],
                                 num_classes=data.num_classes)  # fmt: skip
    masks = None
    if info["format"] == "masked-dense":  # keep the removed weights at zero while fine-tuning
        masks = [(m.weight, m.weight != 0) for _, m in prunable_layers(pruned)]

    def reapply(_model: torch.nn.Module) -> None:
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask)

    start = time.perf_counter()
    history = finetune(
        pruned, data.train_x, data.train_y, epochs=_finetune_epochs(spec, data), lrs=tuple(ft["lrs"]),
        batch_size=ft["batch_size"], momentum=ft["momentum"], hflip=ft["hflip"],
        rotation_degrees=ft["rotation_degrees"], seed=spec.seed, after_step=reapply if masks else None,
    )  # fmt: skip
    finetune_time = time.perf_counter() - start
    pruned.eval()
    write_csv_atomic(work / "epochs.csv", summarize_rows(_finetune_rows(spec, history), "epochs"))
    total, nonzero = count_params(pruned)
    test = _test_row(pruned, data, p["eval_batch_size"])
    row = {
        **base, "status": "completed", "epochs_completed": len(history), "params_total": total,
        "params_nonzero": nonzero, "train_time_s": finetune_time, "peak_memory_mb": math.nan, **test,
        "error": "", "note": note, "accuracy_pruned": pruned_metrics["accuracy"], "loss_pruned": pruned_metrics["loss"],
        "accuracy_finetuned": test["test_accuracy"], "loss_finetuned": test["test_loss"],
        "finetune_time_s": finetune_time, "unit": info["unit"], "budget_achieved": info["achieved_measured"],
        "budget_reached": bool(info["budget_reached"]), "budget_tolerance": info["tolerance"],
        "max_removable_fraction": info["max_removable_fraction"], "units_total": info["units_total"],
        "units_removed": info["units_removed"], "params_prunable_total": info["params_prunable_total"],
        "params_prunable_removed": info["params_prunable_removed"],
        "removed_layers": ";".join(info["removed_layers"] or []),
    }  # fmt: skip
    variant = "compacted" if info["format"] == "compacted" else "masked"
    return row, [_measure(spec, pruned, data, granularity, variant)]


#: The criteria study as a kind of study (:mod:`helpers.studies`): notebook 05.
CRITERIA_KIND = StudyKind(
    name="criteria", defaults=CRITERIA_DEFAULTS, validate=validate_criteria, plan=plan, run_one=run_one,
    failure_ids=failure_ids, notebooks=("05_criteria.ipynb",),
)
#: The granularity study as a kind of study (:mod:`helpers.studies`): notebook 06.
GRANULARITY_KIND = StudyKind(
    name="granularity", defaults=GRANULARITY_DEFAULTS, validate=validate_granularity, plan=plan, run_one=run_one,
    failure_ids=failure_ids, notebooks=("06_granularity.ipynb",),
)
