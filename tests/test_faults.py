"""Faults (issue 17): a damaged checkpoint, trained.pt or finished run folder never blocks a study; a
full disk keeps the previous file and fails the run with a message that names the path; no library's
advice to load unsafely is passed on; a short fault-injection run (3 SIGKILLs and both injections)."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import files, lifecycle, primary, pruning, results, runner
from helpers.__main__ import main as cli_main
from helpers.config import expand_grid, load_params
from helpers.files import DamagedFileError, WriteFailedError
from helpers.train import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
UNSAFE = ("weights_only=False", "`weights_only` set to `False`")


def _tiny(out, **changes):
    params = {
        # resnet18_mini: ResNet18's layout at widths / 8; these tests are about files, not the network's size
        "name": "tiny", "datasets": ["digits"], "models": ["resnet18_mini"], "methods": ["pre_training"],
        "scenarios": ["mixed"], "epochs": 2, "batch_size": 16, "train_subset": 40, "val_subset": 20,
        "test_subset": 30, "threads": 1, "keep_models": False,
        "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1]}, "out": str(out),
        # in this process: the tests patch the writers, which a run's own process would not see
        "executor": {"kind": "local", "process_per_run": False},
    }  # fmt: skip
    params.update(changes)
    return load_params(params)


def _one_line(text: str) -> bool:
    return "\n" not in text.strip()


def _full_disk(monkeypatch, fragment: str, *, after: int = 0):
    """Make the atomic writer's file raise OSError(ENOSPC) for temporary files whose name holds
    ``fragment``, from their ``after``-th write on (the first ``after`` such files are written fine)."""
    real = os.fdopen
    seen = {"files": 0}

    class Full:
        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()
            return False

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def fdopen(fd, *args, **kwargs):
        fh = real(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if fragment in Path(name).name:
            seen["files"] += 1
            if seen["files"] > after:
                return Full(fh)
        return fh

    monkeypatch.setattr(files.os, "fdopen", fdopen)
    return seen


# ------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "quota")])
def test_a_write_on_a_full_disk_keeps_the_previous_file_and_names_the_path(tmp_path, monkeypatch, code, words):
    path = tmp_path / "table.json"
    results.write_json_atomic(path, {"ok": 1})

    def full(fh):
        fh.write("{")
        raise OSError(code, os.strerror(code))

    with pytest.raises(WriteFailedError) as caught:
        files.atomic_write(path, full)
    assert caught.value.errno == code
    message = str(caught.value)
    assert str(path) in message and words in message and "run the same command again" in message
    assert _one_line(message)
    assert results.read_json(path) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]  # no temporary file left


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(3)}})
    _full_disk(monkeypatch, ".checkpoint.pt.")
    with pytest.raises(WriteFailedError, match="no space left") as caught:  # torch.save wraps it in RuntimeError
        save_checkpoint(path, {"epoch": 2, "model": {"w": torch.zeros(3)}})
    assert str(path) in str(caught.value) and caught.value.errno == errno.ENOSPC
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize(
    "content", [os.urandom(100), b"", b"PK\x03\x04" + os.urandom(60)], ids=["random", "empty", "zip-head"]
)
def test_a_damaged_torch_file_is_named_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and _one_line(message)
    assert not any(advice in message for advice in UNSAFE) and "weights_only" not in message
    assert caught.value.__suppress_context__ or caught.value.__context__ is None  # the library's text is not chained


def test_a_model_file_that_is_not_one_is_damaged(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"something": torch.ones(1)}, path)
    with pytest.raises(DamagedFileError, match="not a model file"):
        pruning.load_model(path)


def test_scrub_drops_the_unsafe_advice_only():
    try:
        torch.load(_random_file(), weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
    assert any(advice in text for advice in UNSAFE) or "weights_only" in text  # the library does advise it
    scrubbed = files.scrub_unsafe_advice(text)
    assert not any(advice in scrubbed for advice in UNSAFE)
    plain = "model file x cannot be read. Delete it."
    assert files.scrub_unsafe_advice(plain) == plain


def _random_file() -> Path:
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".pt")
    os.write(fd, np.random.default_rng(0).bytes(100))
    os.close(fd)
    return Path(name)


# --------------------------------------------------------------------------------- a finished study


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny study (dense + pre_training, resnet18_mini), copied fresh by each test that damages it."""
    out = tmp_path_factory.mktemp("finished")
    params = _tiny(out)
    study = runner.run_study(params, progress=False)
    return params, study


def _copy(finished, tmp_path):
    params, study = finished
    out = tmp_path / "out"
    shutil.copytree(study.parent, out)
    return load_params({**params.to_dict(), "out": str(out)}), out / study.name


def _damage(path: Path, how: str) -> None:
    if path.suffix == ".json":
        path.write_text("{broken")
    elif path.suffix == ".csv":
        path.write_text("" if how == "empty" else "x,y\n1,2\n")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name", ["result.json", "params.json", "epochs.csv", "inference.csv", "predictions.npz"])
def test_every_unreadable_file_of_a_finished_run_is_found(finished, tmp_path, name):
    _, study = _copy(finished, tmp_path)
    folder = next(p for p in (study / "runs").iterdir() if "pre_training" in p.name)
    assert results.run_folder_damage(folder) is None
    _damage(folder / name, "garbage")
    damage = results.run_folder_damage(folder)
    assert damage is not None and damage.startswith(f"{name}:")


def test_a_damaged_model_file_of_a_finished_run_is_found(finished, tmp_path):
    _, study = _copy(finished, tmp_path)
    dense = next(p for p in (study / "runs").iterdir() if "-dense-" in p.name)
    _damage(dense / "model.pt", "cut")  # post_training would load it
    assert results.run_folder_damage(dense).startswith("model.pt:")


def test_collect_reports_a_damaged_folder_and_rebuilds_from_the_rest(finished, tmp_path, caplog):
    params, study = _copy(finished, tmp_path)
    specs = expand_grid(params)
    broken = specs[1].run_id
    (study / "runs" / broken / "result.json").write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="helpers.results"):
        tables = results.collect(study, run_ids=[s.run_id for s in specs])
    assert list(tables["runs"].run_id) == [specs[0].run_id]
    assert set(tables["epochs"].run_id) == {specs[0].run_id}
    warned = [r.getMessage() for r in caplog.records if broken in r.getMessage()]
    assert len(warned) == 1 and _one_line(warned[0]) and "result.json" in warned[0]
    assert pd.read_csv(study / "results" / "runs.csv").run_id.tolist() == [specs[0].run_id]


def test_a_damaged_result_json_is_set_aside_and_the_same_command_runs_it_again(finished, tmp_path, caplog, capsys):
    params, study = _copy(finished, tmp_path)
    specs = expand_grid(params)
    broken, kept = specs[1].run_id, specs[0].run_id
    (study / "runs" / broken / "result.json").write_text("{broken")
    kept_stamp = (study / "runs" / kept / "result.json").stat().st_mtime_ns
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(params.to_dict()))
    with caplog.at_level(logging.WARNING):
        assert cli_main(["train", str(path), "--quiet"]) == 0
    warned = [r.getMessage() for r in caplog.records if broken in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "result.json" in warned[0] and ".damaged" in warned[0]
    aside = list((study / "runs" / ".damaged").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(f"{broken}-")
    assert (aside[0] / "result.json").read_text() == "{broken"  # kept as it was, for inspection
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.run_id) == sorted([broken, kept]) and (runs.status == "completed").all()
    assert results.read_json(study / "runs" / broken / "result.json")["run_id"] == broken
    assert (study / "runs" / kept / "result.json").stat().st_mtime_ns == kept_stamp  # nothing else touched
    assert "2 runs (2 completed)" in capsys.readouterr().out


def test_a_damaged_dense_model_is_trained_again_before_post_training(finished, tmp_path):
    params, study = _copy(finished, tmp_path)
    params = load_params({**params.to_dict(), "methods": ["post_training"]})
    dense = expand_grid(params)[0].run_id
    _damage(study / "runs" / dense / "model.pt", "cut")
    runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert set(runs.method) == {"dense", "post_training"} and (runs.status == "completed").all()
    assert pruning.load_model(study / "runs" / dense / "model.pt") is not None


# ------------------------------------------------------------------------------ damaged checkpoints


def _interrupted_after_epoch_1(params, monkeypatch):
    """Run the grid with model files failing to save: each run stops after training, its checkpoint of
    epoch 1 left in its work folder (checkpoint_last=False: none after the last epoch)."""

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted on purpose")

    with monkeypatch.context() as patch:
        patch.setattr(pruning, "save_model", broken)
        study = runner.run_study(params, progress=False)  # companion studies go through it too
    return study


@pytest.mark.parametrize("damage", ["random", "incompatible"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_restarts_from_epoch_0(tmp_path, monkeypatch, caplog, damage):
    params = _tiny(tmp_path, methods=["pre_training"])
    study = _interrupted_after_epoch_1(params, monkeypatch)
    target = expand_grid(params)[0].run_id
    checkpoint = study / "runs" / ".work" / target / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["epoch"] == 1
    if damage == "random":
        checkpoint.write_bytes(np.random.default_rng(1).bytes(100))  # the 100 random bytes
    else:  # a readable checkpoint of another model: it loads, and does not fit
        state = load_checkpoint(checkpoint)
        state["model"] = {"features.0.weight": torch.zeros(3)}
        save_checkpoint(checkpoint, state)
    damaged = checkpoint.read_bytes()
    other = study / "runs" / ".work" / expand_grid(params)[1].run_id / "checkpoint.pt"
    other_bytes = other.read_bytes()
    with caplog.at_level(logging.WARNING, logger="helpers.runner"):
        assert primary.run_one(expand_grid(params)[0], study) == "completed"
    warned = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert len(warned) == 1 and str(checkpoint) in warned[0] and "epoch 0" in warned[0] and _one_line(warned[0])
    aside = list((study / "runs" / ".damaged").glob(f"{target}-*/checkpoint.pt"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged
    epochs = pd.read_csv(study / "runs" / target / "epochs.csv")
    assert list(epochs.epoch) == [1, 1, 2, 2]
    assert other.read_bytes() == other_bytes  # nothing else touched


def test_a_damaged_trained_file_is_set_aside_and_training_restarts(tmp_path, caplog):
    work = tmp_path / "runs" / ".work" / "r1"
    work.mkdir(parents=True)
    (work / "trained.pt").write_bytes(b"\x00" * 10)
    (work / "model.pt").write_bytes(b"half a model")
    with caplog.at_level(logging.WARNING, logger="helpers.runner"):
        assert lifecycle.load_trained(tmp_path, "r1", work) is None
    assert not (work / "trained.pt").exists() and not (work / "model.pt").exists()
    aside = sorted(p.name for p in (tmp_path / "runs" / ".damaged").glob("r1-*/*"))
    assert aside == ["model.pt", "trained.pt"]
    assert any("trained.pt" in r.getMessage() and "epoch 0" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------- full disk


def test_a_full_disk_fails_the_run_keeps_the_previous_checkpoint_and_the_next_call_resumes(tmp_path, monkeypatch):
    params = _tiny(tmp_path, epochs=3, methods=["pre_training"])
    specs = expand_grid(params)
    seen = _full_disk(monkeypatch, ".checkpoint.pt.", after=1)  # epoch 1's checkpoint is written, epoch 2's not
    study = runner.run_study(params, progress=False)
    assert seen["files"] >= 2
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("run_id")
    first = specs[0].run_id
    checkpoint = study / "runs" / ".work" / first / "checkpoint.pt"
    error = runs.loc[first, "error"]
    assert runs.loc[first, "status"] == "failed"
    assert str(checkpoint) in error and "no space left" in error and "run the same command again" in error
    assert _one_line(error)
    assert results.read_json(checkpoint.parent / "error.json")["error"] == error
    assert load_checkpoint(checkpoint)["epoch"] == 1  # the previous checkpoint is intact
    assert not list(checkpoint.parent.glob(".*.tmp"))
    monkeypatch.undo()
    runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert (runs.status == "completed").all() and len(runs) == len(specs)
    assert list(pd.read_csv(study / "runs" / first / "epochs.csv").epoch) == [1, 1, 2, 2, 3, 3]  # resumed


def test_a_full_disk_for_model_files_and_tables(tmp_path, monkeypatch, caplog, capsys):
    params = _tiny(tmp_path, epochs=1, methods=["pre_training"])
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(params.to_dict()))
    with monkeypatch.context() as patch:
        _full_disk(patch, ".model.pt.")
        with caplog.at_level(logging.ERROR):
            assert cli_main(["train", str(path), "--quiet"]) == 1
    study = Path(params["out"]) / params["name"]
    runs = pd.read_csv(study / "results" / "runs.csv")
    dense = expand_grid(params)[0].run_id
    row = runs.set_index("run_id").loc[dense]
    assert row.status == "failed" and "model.pt" in row.error and "no space left" in row.error
    console = [r.getMessage() for r in caplog.records if dense in r.getMessage()]
    assert console and all(_one_line(m) and "model.pt" in m for m in console)
    before = (study / "results" / "runs.csv").read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _full_disk(patch, ".runs.csv.")
        assert cli_main(["train", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write") and "runs.csv" in err and _one_line(err)
    assert (study / "results" / "runs.csv").read_bytes() == before  # the previous table is intact
    assert cli_main(["train", str(path), "--quiet"]) == 0
    assert (pd.read_csv(study / "results" / "runs.csv").status == "completed").all()


def test_a_failed_runs_message_passes_on_no_unsafe_advice(tmp_path, monkeypatch):
    params = _tiny(tmp_path, epochs=1, methods=["pre_training"])

    def unpickle(*args, **kwargs):
        torch.load(_random_file(), weights_only=True)  # raises with PyTorch's advice in its message

    monkeypatch.setattr(pruning, "compact", unpickle)
    study = runner.run_study(params, progress=False)
    for error in (study / "runs" / ".work").glob("*/error.json"):
        row = json.loads(error.read_text())
        assert row["status"] == "failed"
        for text in (row["error"], row["traceback"]):
            assert not any(advice in text for advice in UNSAFE)


# --------------------------------------------------------------------------------- fault injection


def _bench():
    spec = importlib.util.spec_from_file_location("bench_faults", ROOT / "benchmarks" / "bench_faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_faults"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fault_injection_three_kills_and_both_injections(tmp_path):
    # resnet18_mini (ResNet18's layout at widths / 8) on 800 images: epochs long enough for kills and the
    # checkpoint injection to land mid-run, checkpoints of 2 MB instead of ResNet18's 135 MB. The by-hand
    # benchmark (benchmarks/bench_faults.py: VGG16 and ResNet18, 20 kills) covers the full-size models.
    bench = _bench()
    log: list[str] = []
    report = bench.fault_injection(tmp_path, kills=3, seed=0, models=["resnet18_mini"],
                                   methods=["post_training", "in_training"], epochs=2,
                                   train_subset=800, timeout=300, log=log)  # fmt: skip
    assert report["final_exit_status"] == 0, log
    assert set(report["injected"]) == {"checkpoint", "result.json"}, log
    assert len(report["set_aside"]) == 2
    assert report["runs_lost"] == 0
    assert report["partial_files_left"] == []
    assert report["same_runs_and_epochs"]
    assert report["max_test_metric_diff"] == 0.0 and report["max_epoch_metric_diff"] == 0.0


# ------------------------------------------------------------------------------------ companion studies


def test_companion_studies_get_the_same_protection(tmp_path, monkeypatch, caplog):
    from helpers import companion

    params = load_params({
        "name": "tiny_granularity", "study_kind": "granularity", "datasets": ["digits"], "models": ["resnet18_mini"],
        "epochs": 2, "batch_size": 16, "lr": 1e-3, "train_subset": 40, "val_subset": 20, "test_subset": 30,
        "threads": 1, "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1]},
        "finetune": {"epochs": 1, "batch_size": 16}, "granularities": ["structured"], "budgets": [0.5],
        "out": str(tmp_path), "executor": {"kind": "local", "process_per_run": False},  # patches live in this process
    })  # fmt: skip
    dense, pruned = (s.run_id for s in companion.plan(params))
    study = _interrupted_after_epoch_1(params, monkeypatch)  # the dense run stops after training
    checkpoint = study / "runs" / ".work" / dense / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["epoch"] == 1
    checkpoint.write_bytes(np.random.default_rng(2).bytes(100))
    with caplog.at_level(logging.WARNING, logger="helpers.runner"):
        runner.run_study(params, progress=False)
    assert any(str(checkpoint) in r.getMessage() and "epoch 0" in r.getMessage() for r in caplog.records)
    assert len(list((study / "runs" / ".damaged").glob(f"{dense}-*/checkpoint.pt"))) == 1
    assert list(pd.read_csv(study / "runs" / dense / "epochs.csv").epoch) == [1, 1, 2, 2]

    (study / "runs" / dense / "result.json").write_text("{broken")
    pruned_stamp = (study / "runs" / pruned / "result.json").stat().st_mtime_ns
    runner.run_study(params, progress=False)
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.run_id) == sorted([dense, pruned]) and (runs.status == "completed").all()
    assert len(list((study / "runs" / ".damaged").glob(f"{dense}-*/result.json"))) == 1
    assert (study / "runs" / pruned / "result.json").stat().st_mtime_ns == pruned_stamp
