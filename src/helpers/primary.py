"""The primary study (Douzandeh Zenoozi et al. 2025), as a kind of study: its keys, its grid, its run.

- Keys (:data:`DEFAULTS`, checked by :func:`validate`; the shared keys are :mod:`helpers.config`'s).
- Plan (:func:`expand_grid`): one run per dataset x model x method x scenario x seed, plus the ``dense``
  baseline per dataset x model x seed, which ``post_training`` reuses. Run ids read
  ``{dataset}-{model}-{method}-{scenario}-s{seed}-{hash8}``, the hash covering every parameter that can
  change the results (:func:`result_params`), so a changed protocol never mixes with the old one's runs.
- Run (:func:`run_one`): train (resuming from the last checkpoint) in the form :func:`training_form` chose,
  test, measure inference of the masked, hooked and compacted variants (run folders: :mod:`helpers.lifecycle`).
- Notebooks 01-04 and 07; after the tables, the paper's claims are checked (:func:`helpers.claims.write_claims`).

Defaults follow the paper: Adam, lr 1e-4, batch 64, 50 epochs, ``swap_fraction`` 0.2, no fine-tuning
after post-training pruning.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers import pruning
from helpers.claims import write_claims
from helpers.lifecycle import begin_run, finish, is_finished, run_dir, trained_model
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
    sum_energy,
)
from helpers.files import atomic_write
from helpers.models import build_model
from helpers.params import (
    RESULT_KEYS,
    ParamsError,
    RunSpec,
    StudyKind,
    StudyParams,
    as_list,
    check_choice,
    check_float,
    check_int,
    check_names,
)
from helpers.results import read_json, summarize_rows, write_csv_atomic
from helpers.rundata import prepare_data
from helpers.train import Data, FitResult, evaluate, fit, make_optimizer, seed_everything
from helpers.transforms import augmenter

__all__ = [
    "KIND",
    "DEFAULTS",
    "TRAINING_FORMS",
    "TEST_METRICS",
    "validate",
    "expand_grid",
    "dense_twin",
    "training_form",
    "result_params",
    "run_one",
    "failure_ids",
    "test_metrics",
]

KIND_NAME = "primary"
#: ``training_form`` values; see :func:`training_form`.
TRAINING_FORMS: tuple[str, ...] = ("compacted", "masked")
_MAX_LOGIT_IMAGES = 256

#: The primary study's own keys with their defaults.
DEFAULTS: dict[str, Any] = {
    "methods": ["pre_training", "in_training", "post_training", "set"],
    "scenarios": ["uniform", "mixed", "linear_only"],
    "swap_fraction": 0.2,
    "finetune_epochs": 0,
    # "compacted" trains the physically smaller network, "masked" the full one with zeros (the paper's
    # way); resolved per run (training_form). A list ([masked, compacted]) runs both, the form in the run id.
    "training_form": "compacted",
    # set's per-layer budgets: "scenario" (each layer keeps the scenario's fraction; the paper) or
    # "erk" (Mocanu's ER / Evci's ERK densities under the same budget in weights; an extension).
    "set_allocation": "scenario",
}


# ---------------------------------------------------------------------------------------------- schema


def validate(out: dict[str, Any]) -> None:
    """Check the primary study's keys in the resolved parameters ``out`` (in place)."""
    out["methods"] = check_names("methods", out["methods"], pruning.METHODS)
    out["scenarios"] = _scenarios(out["scenarios"])
    out["swap_fraction"] = check_float("swap_fraction", out["swap_fraction"], minimum=0.0, maximum=1.0)
    out["finetune_epochs"] = check_int("finetune_epochs", out["finetune_epochs"], minimum=0)
    out["training_form"] = _training_forms(out["training_form"])
    out["set_allocation"] = check_choice("set_allocation", out["set_allocation"], pruning.SET_ALLOCATIONS)


def _scenarios(value: Any) -> list[dict[str, Any]]:
    items = as_list("scenarios", value)
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


def _training_forms(value: Any) -> str | list[str]:
    """One form (a string, as before) or several distinct forms in the given order (a list)."""
    if isinstance(value, (list, tuple)):
        forms = list(dict.fromkeys(check_choice("training_form", v, TRAINING_FORMS) for v in value))
        if not forms:
            raise ParamsError(f"training_form is an empty list; give one of {', '.join(TRAINING_FORMS)} or a list of them")
        return forms[0] if len(forms) == 1 else forms
    return check_choice("training_form", value, TRAINING_FORMS)


# ---------------------------------------------------------------------------------------------- plan


def training_form(requested: str, method: str, conv_sparsity: float) -> str:
    """The form a run trains in: ``compacted`` where it is requested and removes filters (a pruning method
    with conv sparsity > 0), else ``masked``. With fixed masks the compacted network trains exactly as the
    masked one; ``in_training`` and ``set`` rebuild it after every swap (:class:`helpers.pruning.CompactedTraining`).
    """
    if requested == "compacted" and pruning.method_class(method).prunes and conv_sparsity > 0:
        return "compacted"
    return "masked"


def result_params(run: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``run`` that enter its id: :data:`~helpers.params.RESULT_KEYS` and its method's own."""
    method = pruning.method_class(run["method"])
    keys = list(RESULT_KEYS)
    if method.prunes:
        keys.append("training_form")
    if method.evolves_mask:
        keys.append("swap_fraction")
    if run["method"] == "set":  # the one method with a choice of per-layer budgets
        keys.append("set_allocation")
    if method.prunes_after_training:
        keys.append("finetune_epochs")
    return {k: run[k] for k in keys}


def _run_id(run: Mapping[str, Any], *, form_in_id: bool = False) -> str:
    blob = json.dumps(result_params(run), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    form = f"-{run['training_form']}" if form_in_id else ""
    return f"{run['dataset']}-{run['model']}-{run['method']}-{run['scenario']}{form}-s{run['seed']}-{digest}"


_GRID_KEYS = ("name", "datasets", "models", "methods", "scenarios", "seeds", "out")


def _make_spec(
    params: StudyParams, dataset: str, model: str, method: str, scenario: Mapping[str, Any], seed: int,
    form: str | None = None,
) -> RunSpec:
    run: dict[str, Any] = {k: copy.deepcopy(v) for k, v in params.values.items() if k not in _GRID_KEYS}
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
    if pruning.method_class(method).prunes_after_training:
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
    """Every run of the study in a stable order (by dataset, model, seed; the dense run before the runs
    that reuse it). Empty for a companion study, whose runs :func:`helpers.companion.plan` lists."""
    if params["study_kind"] != KIND_NAME:  # another kind of study plans its own runs
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
    if not pruning.method_class(spec.method).prunes_after_training:
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


def failure_ids(spec: RunSpec) -> dict[str, Any]:
    """A failed run's identifying columns in ``runs.csv``."""
    return {
        "run_id": spec.run_id, "dataset": spec.dataset, "model": spec.model, "method": spec.method,
        "scenario": spec.scenario, "seed": spec.seed,
        "conv_sparsity_target": spec.params["conv_sparsity"],
        "linear_sparsity_target": spec.params["linear_sparsity"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- one run


def run_one(spec: RunSpec, study: str | os.PathLike, *, progress: bool = False) -> str:
    """Execute one run in the folder ``study`` (train, test, measure inference) and finish its run folder
    atomically; ``progress`` shows the epoch bar (only on a terminal).

    Returns:
        ``"skipped"`` (already finished), ``"completed"`` or ``"diverged"``.
    """
    study = Path(study)
    if is_finished(study, spec.run_id):
        return "skipped"
    p = spec.params
    work = begin_run(spec, study)
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
        set_allocation=p.get("set_allocation", "erk"),  # run folders written before the key were erk
    )
    reused = None
    if pruning.method_class(spec.method).prunes_after_training:
        dense = dense_twin(spec)
        if not is_finished(study, dense.run_id):  # also sets a damaged dense folder aside: it runs again
            run_one(dense, study, progress=progress)
        reused = read_json(run_dir(study, dense.run_id) / "result.json")
        if reused["status"] != "completed":
            raise RuntimeError(
                f"dense run {dense.run_id} {reused['status']} (see {run_dir(study, dense.run_id) / 'result.json'}); "
                "post_training needs a trained dense model: change the protocol (lr, epochs) or drop post_training"
            )
    model_path = work / "model.pt"
    model, result = trained_model(study, spec, work, lambda: _train(spec, study, new_method(), data, meter, work, progress),
                                  device, _meta(spec))  # fmt: skip
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
    return finish(study, spec, work, row)


def _train(spec: RunSpec, study: Path, method: pruning.PruningMethod, data: Data, meter: EnergyMeter, work: Path,
           progress: bool) -> tuple[torch.nn.Module, FitResult]:  # fmt: skip
    """Build (or, for post_training, load and prune the dense model) and train in the spec's form, resuming
    from the checkpoint (``fit`` counts a compacted run's compaction and write-back as training time)."""
    p = spec.params
    device = data.train_x.device
    if method.prunes_after_training:
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
        make = functools.partial(make_optimizer, p["optimizer"], lr=p["lr"], weight_decay=p["weight_decay"])
        compaction = None
        if p.get("training_form") == "compacted":  # the network without its removed filters
            compaction = pruning.CompactedTraining(method, data.train_x[:2], make)
        result = fit(
            model, make(model), method, data, epochs=epochs, batch_size=p["batch_size"],
            eval_batch_size=p["eval_batch_size"], seed=spec.seed, meter=meter,
            checkpoint_path=work / "checkpoint.pt", checkpoint_last=False,
            checkpoint_every_s=p.get("checkpoint_every_s", 0.0), augment=augmenter(p["augment"]),
            progress=progress, description=spec.run_id, compaction=compaction,
            score_best=lambda net: test_metrics(net, data, p["eval_batch_size"])[0],
            macs=lambda net: pruning.count_macs(net, data.train_x[:1]),
        )  # fmt: skip
        if not result.diverged and not method.prunes_after_training:
            method.on_train_end(model)
    return model, result


def _meta(spec: RunSpec) -> dict[str, Any]:
    return {"run_id": spec.run_id, "model": spec.model, "dataset": spec.dataset, "method": spec.method,
            "scenario": spec.scenario, "seed": spec.seed}  # fmt: skip


def _run_row(spec: RunSpec, result: FitResult, reused: Mapping[str, Any] | None) -> dict[str, Any]:
    p = spec.params
    train_rows = [r for r in result.history if r["phase"] == "train"]
    train_time = float(sum(r["time_s"] for r in train_rows))
    energy, source = sum_energy(train_rows)
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
    """The test split's metrics of ``model`` (``test_*`` keys) and its class probabilities ``[N, K]``. For
    two-class data (VisA: normal 0, anomaly 1) the anomaly class's own precision, recall, F1 and AUROC are
    added (``test_anomaly_*``), since macro averages hide how a rare anomaly class fares."""
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
    """The best-validation epoch and its model's test metrics (the paper's Table 1 "best accuracy"). For
    ``post_training`` it is the fine-tuning's best epoch (numbered after the dense run's), else the final model."""
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
    """Benchmark the run's inference variants on the CPU (:func:`helpers.measure.benchmark_inference`).

    ``masked``: the model as trained, zeros in plain weights. ``hooked`` (pruned runs): the same weights in
    ``torch.nn.utils.prune``'s form, as the paper's pruned models were (:mod:`helpers.pruning.hooked`).
    ``compacted``: the physically smaller twin, each sparse linear layer dense or CSR, whichever measured
    faster at the first inference batch size (stored in its file's meta and the rows' ``linear_formats``).
    Parameters and MACs are counted on each variant (a CSR layer counts its stored weights' MACs).
    """
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


#: The primary study as a kind of study (:mod:`helpers.studies`).
KIND = StudyKind(
    name=KIND_NAME, defaults=DEFAULTS, validate=validate, plan=expand_grid, run_one=run_one, failure_ids=failure_ids,
    notebooks=("01_training.ipynb", "02_test_accuracy.ipynb", "03_inference.ipynb", "04_energy.ipynb", "07_claims.ipynb"),
    finish=write_claims,
)
