"""helpers.runner: a tiny grid end to end, reuse, skipping, divergence, failures, and a SIGKILL mid-epoch."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import primary, pruning, runner
from helpers.config import ParamsError, expand_grid, load_params
from helpers.measure import macro_auc
from helpers.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS = {"kind": "local", "process_per_run": False}  # for tests that patch this process


def _tiny(out, **changes):
    params = {
        # ResNet18's layout at widths / 8: what these tests check does not depend on the widths
        "name": "tiny", "datasets": ["digits"], "models": ["resnet18_mini"],
        "methods": ["pre_training", "in_training", "post_training", "set"], "scenarios": ["mixed"],
        "epochs": 2, "batch_size": 16, "train_subset": 40, "val_subset": 20, "test_subset": 30, "threads": 1,
        "inference": {"samples": 3, "warmup": 1, "batch_sizes": [1, 2]}, "out": str(out),
    }  # fmt: skip
    params.update(changes)
    return load_params(params)


def _leftovers(root: Path) -> list[str]:
    bad = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name in ("checkpoint.pt", "trained.pt")]
    bad += [p for p in root.rglob(".work")]
    return sorted(str(p.relative_to(root)) for p in bad)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    params = _tiny(out)
    start = time.perf_counter()
    study = runner.run_study(params, progress=False)
    return params, study, time.perf_counter() - start


def test_grid_runs_to_completion_with_the_scenario_sparsity(tiny_study):
    params, study, _ = tiny_study
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.run_id) == sorted(s.run_id for s in expand_grid(params))
    assert (runs.status == "completed").all()
    assert list(runs.columns[: len(COLUMNS["runs"])]) == list(COLUMNS["runs"])
    for row in runs.itertuples():
        assert row.linear_weight_sparsity == pytest.approx(row.linear_sparsity_target, abs=0.005)
        assert row.conv_weight_sparsity == pytest.approx(row.conv_sparsity_target, abs=0.01)
        if row.method != "set":  # set's budget is in weights: its filter fraction differs by design
            assert row.conv_filter_sparsity == pytest.approx(row.conv_sparsity_target, abs=0.01)
        assert 0 <= row.test_accuracy <= 1 and row.test_samples == 30
        assert row.params_nonzero < row.params_total or row.method == "dense"
    assert _leftovers(study) == []


def test_post_training_reuses_its_dense_run(tiny_study):
    _, study, _ = tiny_study
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("method")
    dense, post = runs.loc["dense"], runs.loc["post_training"]
    assert post.reused_run_id == dense.run_id
    assert post.train_time_s == dense.train_time_s and post.epochs_completed == dense.epochs_completed == 2
    epochs = pd.read_csv(study / "results" / "epochs.csv")
    assert (epochs.run_id == post.run_id).sum() == 0  # no training of its own (finetune_epochs 0)
    assert (epochs.run_id == dense.run_id).sum() == 4  # 2 epochs x train/val


def test_energy_is_never_a_bare_zero(tiny_study):
    _, study, _ = tiny_study
    tables = {t: pd.read_csv(study / "results" / f"{t}.csv") for t in ("runs", "epochs", "inference")}
    for table, energy, source in (("runs", "train_energy_j", "train_energy_source"), ("epochs", "energy_j", "energy_source"),
                                  ("inference", "energy_j", "energy_source")):  # fmt: skip
        frame = tables[table]
        unavailable = frame[source] == "unavailable"
        assert frame.loc[unavailable, energy].isna().all()
        assert (frame.loc[~unavailable, energy] > 0).all()
        assert set(frame[source]) <= {"unavailable", "zeus-cpu-rapl", "zeus-gpu", "estimate-codecarbon-cpu"}


def test_inference_rows_cover_every_variant_and_batch_size(tiny_study):
    _, study, _ = tiny_study
    inf = pd.read_csv(study / "results" / "inference.csv")
    runs = pd.read_csv(study / "results" / "runs.csv")
    pruned = runs[runs.method != "dense"]
    assert len(inf) == len(runs) * 2 * 2 + len(pruned) * 2  # masked, compacted; hooked for pruned runs
    for run_id, rows in inf.groupby("run_id"):
        variants = {"masked", "compacted"} | ({"hooked"} if run_id in set(pruned.run_id) else set())
        assert set(zip(rows.variant, rows.batch_size)) == {(v, b) for v in variants for b in (1, 2)}
    assert (inf.device == "cpu").all() and (inf.threads == 1).all()
    hooked = inf[inf.variant == "hooked"].set_index(["run_id", "batch_size"])
    assert (hooked.max_abs_logit_diff == 0).all()  # the same weights, multiplied by their mask
    masked_ = inf[inf.variant == "masked"].set_index(["run_id", "batch_size"]).loc[hooked.index]
    assert (hooked.macs == masked_.macs).all() and (hooked.params_nonzero == masked_.params_nonzero).all()
    assert (hooked.model_size_mb > 1.5 * masked_.model_size_mb).all()  # weight_orig and weight_mask
    macs = runs.set_index("run_id")[["inference_macs_masked", "inference_macs_hooked", "inference_macs_compacted"]]
    by_variant = inf[inf.batch_size == 1].pivot(index="run_id", columns="variant", values="macs")
    for variant in ("masked", "compacted", "hooked"):
        assert (macs[f"inference_macs_{variant}"].dropna() == by_variant[variant].dropna()).all()
    assert macs.loc[runs[runs.method == "dense"].run_id, "inference_macs_hooked"].isna().all()
    assert (inf.latency_ms_p50 > 0).all() and (inf.latency_ms_p50 <= inf.latency_ms_p95).all()
    masked = inf[inf.variant == "masked"].set_index(["run_id", "batch_size"])
    compacted = inf[inf.variant == "compacted"].set_index(["run_id", "batch_size"])
    assert (compacted.params_total <= masked.params_total).all()
    assert (compacted.macs <= masked.macs).all()
    assert (compacted.max_abs_logit_diff < 1e-3).all() and masked.max_abs_logit_diff.isna().all()
    uniform_like = runs[runs.conv_sparsity_target > 0].run_id
    assert (compacted.loc[list(uniform_like)].macs < masked.loc[list(uniform_like)].macs).all()


def test_runs_record_their_theoretical_cost_and_whose_memory_it_is(tiny_study):
    _, study, _ = tiny_study
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("method")
    epochs = pd.read_csv(study / "results" / "epochs.csv")
    assert (runs.peak_memory_scope == "own-process").all()  # the local executor's process per run
    assert runs.device_index.isna().all()  # CPU
    # 3 x the MACs per image of the network as trained x the 40 images, per epoch: the full network for
    # dense (and masked) training, the compacted one (the final model's filter counts) for compacted training
    train = epochs[epochs.phase == "train"].merge(runs.reset_index(), on="run_id", suffixes=("", "_run"))
    trained_macs = train.inference_macs_masked.where(train.training_form == "masked", train.inference_macs_compacted)
    # (a CSR classifier counts only its stored weights at inference: at most 5,120 of some 10^6-10^7 MACs)
    assert np.allclose(train.train_flops, 3 * trained_macs * 40, rtol=1e-3)
    assert set(train.training_form) == {"masked", "compacted"}
    assert epochs[epochs.phase == "val"].train_flops.isna().all()
    dense = runs.loc["dense"]
    assert dense.train_flops == 3 * dense.inference_macs_masked * 40 * 2
    assert runs.loc["post_training"].train_flops == dense.train_flops  # the dense run's, no fine-tuning
    for method in ("pre_training", "in_training", "set"):
        assert 0.2 < runs.loc[method].train_flops / dense.train_flops < 0.3  # conv 0.5: about a quarter
    assert (runs.inference_macs_compacted < runs.inference_macs_masked).drop("dense").all()


def test_compacted_training_counts_the_network_it_trained(tmp_path):
    params = _tiny(tmp_path, methods=["in_training"], scenarios=["uniform"], training_form="compacted",
                   inference={"samples": 1, "warmup": 0, "batch_sizes": [1]}, executor=IN_PROCESS)  # fmt: skip
    study = runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("method")
    epochs = pd.read_csv(study / "results" / "epochs.csv")
    pruned = runs.loc["in_training"]
    train = epochs[(epochs.run_id == pruned.run_id) & (epochs.phase == "train")]
    # every epoch's network (rebuilt after each swap) has the scenario's filter counts: the final model's MACs
    assert train.train_flops.iloc[0] == train.train_flops.iloc[1]
    assert train.train_flops.iloc[0] == pytest.approx(3 * pruned.inference_macs_compacted * 40, rel=1e-3)
    assert pruned.train_flops == train.train_flops.sum() < runs.loc["dense"].train_flops / 10  # conv 0.8


def test_every_profile_sets_its_inference_threads():
    for path in sorted((ROOT / "params").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        threads = raw.get("inference", {}).get("threads")
        assert isinstance(threads, int) and threads >= 1, f"{path.name}: inference.threads is {threads!r}"
        assert load_params(path)["inference"]["threads"] == threads


def test_run_folders_hold_params_environment_and_predictions(tiny_study):
    _, study, _ = tiny_study
    runs = pd.read_csv(study / "results" / "runs.csv")
    for row in runs.itertuples():
        folder = study / "runs" / row.run_id
        names = {p.name for p in folder.iterdir()}
        assert {"params.json", "environment.json", "epochs.csv", "inference.csv", "predictions.npz", "result.json"} <= names
        env = yaml.safe_load((folder / "environment.json").read_text())
        assert env["threads"] == 1 and env["inference_threads"] == 1
        pred = np.load(folder / "predictions.npz")
        assert pred["probs"].shape == (30, 10)
        assert macro_auc(pred["labels"], pred["probs"]) == pytest.approx(row.test_auc)
        assert float((pred["preds"] == pred["labels"]).mean()) == pytest.approx(row.test_accuracy)
    model = pruning.load_model(study / "runs" / runs.run_id[0] / "model.pt")  # keep_models defaults to true
    assert isinstance(model, torch.nn.Module)


def test_a_rerun_skips_finished_runs(tiny_study):
    params, study, first = tiny_study
    stamps = {p: p.stat().st_mtime_ns for p in (study / "runs").glob("*/result.json")}
    start = time.perf_counter()
    runner.run_study(params, progress=False)
    assert time.perf_counter() - start < max(5.0, first / 4)
    assert stamps == {p: p.stat().st_mtime_ns for p in (study / "runs").glob("*/result.json")}


def test_divergence_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    params = _tiny(tmp_path, methods=["pre_training", "in_training"], scenarios=["uniform"], epochs=1,
                   executor=IN_PROCESS)  # the patch lives in this process
    real = primary.prepare_data

    def poisoned(spec):
        data = real(spec)
        if spec.method != "pre_training":
            return data
        bad = data.train_x.clone()
        bad[0] = float("nan")
        return type(data)(bad, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y, data.num_classes)

    monkeypatch.setattr(primary, "prepare_data", poisoned)
    study = runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("method")
    assert runs.status.to_dict() == {"dense": "completed", "pre_training": "diverged", "in_training": "completed"}
    epochs = pd.read_csv(study / "results" / "epochs.csv")
    diverged = epochs[epochs.run_id == runs.loc["pre_training", "run_id"]]
    assert list(diverged.phase) == ["train"] and not math.isfinite(diverged.loss.iloc[0])
    inference = pd.read_csv(study / "results" / "inference.csv")
    assert runs.loc["pre_training", "run_id"] not in set(inference.run_id)


def test_a_failed_run_is_reported_and_retried(tmp_path, monkeypatch):
    params = _tiny(tmp_path, methods=["pre_training"], scenarios=["uniform"], epochs=1, executor=IN_PROCESS)
    real = pruning.compact

    def broken(model, example_input=None):
        raise RuntimeError("compaction exploded")

    monkeypatch.setattr(pruning, "compact", broken)
    study = runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.status) == ["failed", "failed"]
    assert runs.error.str.contains("compaction exploded").all()
    monkeypatch.setattr(pruning, "compact", real)
    runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.status) == ["completed", "completed"]
    assert _leftovers(study) == []


def test_preflight_errors_write_nothing(tmp_path):
    with pytest.raises(ParamsError, match="device 'cuda'") if not torch.cuda.is_available() else pytest.raises(ParamsError):
        runner.run_study(_tiny(tmp_path, device="cuda" if not torch.cuda.is_available() else "cuda:99"))
    with pytest.raises(ParamsError, match="mvtec3d_cls"):
        runner.run_study(_tiny(tmp_path, datasets=["mvtec3d_cls"], data_root=str(tmp_path / "no-data")))
    assert list(tmp_path.iterdir()) == []


def test_sigkill_mid_epoch_then_rerun_finishes_cleanly(tmp_path):
    params = {
        # resnet18_mini on 480 images: an epoch lasts about 1-2 s on one thread, so the kill lands in epoch 2,
        # and a checkpoint weighs 2 MB, not full ResNet18's 135 MB (model and Adam's state)
        "name": "killed", "datasets": ["digits"], "models": ["resnet18_mini"], "methods": ["in_training"],
        "scenarios": ["uniform"], "epochs": 3, "batch_size": 16, "train_subset": 480, "val_subset": 20,
        "test_subset": 30, "threads": 1, "inference": {"samples": 2, "warmup": 1}, "out": str(tmp_path / "out"),
    }  # fmt: skip
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(params))
    command = [sys.executable, "-m", "helpers", "train", str(path), "--quiet"]
    study = tmp_path / "out" / "killed"
    specs = expand_grid(load_params(params))
    target = specs[1].run_id  # in_training, after the dense run
    checkpoint = study / "runs" / ".work" / target / "checkpoint.pt"

    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.exists():  # epoch 1 of the second run finished: epoch 2 is under way
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (study / "runs" / target).exists()

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.run_id) == sorted(s.run_id for s in specs)
    assert (runs.status == "completed").all()
    assert _leftovers(study) == []
    epochs = pd.read_csv(study / "runs" / target / "epochs.csv")
    assert list(epochs.epoch) == [1, 1, 2, 2, 3, 3]
    for csv in study.rglob("*.csv"):
        pd.read_csv(csv)
