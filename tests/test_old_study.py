"""A study folder written by the code before issue 14's refactor is read, skipped and resumed today.

``tests/data/old_study`` (see ``tests/data/README.md``) was made by commit 2022107: a finished dense run,
a ``pre_training`` run killed after its epoch-2 checkpoint, and a ``post_training`` run not started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from helpers import runner
from helpers.config import load_params

DATA = Path(__file__).parent / "data"
DENSE = "digits-resnet18_mini-dense-none-s0-a3f9d11a"
KILLED = "digits-resnet18_mini-pre_training-mixed-s0-2c9661fb"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_study_folder_of_the_old_code_is_skipped_resumed_and_completed(tmp_path):
    shutil.copytree(DATA / "old_study", tmp_path / "old_study")
    raw = yaml.safe_load((DATA / "old_study.yaml").read_text())
    params = load_params({**raw, "out": str(tmp_path), "executor": {"kind": "local", "process_per_run": False}})
    study = tmp_path / "old_study"
    finished = study / "runs" / DENSE / "result.json"
    stamp = finished.stat().st_mtime_ns
    checkpoint = torch.load(study / "runs" / ".work" / KILLED / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 2

    assert runner.run_study(params, progress=False) == study
    runs = pd.read_csv(study / "results" / "runs.csv").set_index("run_id")
    assert len(runs) == 3 and (runs.status == "completed").all()
    assert finished.stat().st_mtime_ns == stamp  # the finished run was read and skipped, not run again
    epochs = pd.read_csv(study / "runs" / KILLED / "epochs.csv")
    assert list(epochs.epoch) == [1, 1, 2, 2, 3, 3]
    for row in checkpoint["history"]:  # epochs 1-2 come from the old checkpoint: resumed, not retrained
        new = epochs[(epochs.epoch == row["epoch"]) & (epochs.phase == row["phase"])].iloc[0]
        assert new.accuracy == row["accuracy"] and new.loss == pytest.approx(row["loss"], rel=1e-12)
        if row["phase"] == "val":  # measured times are never equal twice; a train row adds this process's setup
            assert new.time_s == row["time_s"]
        else:
            assert new.time_s >= row["time_s"]
    post = runs[runs.method == "post_training"].iloc[0]
    assert post.reused_run_id == DENSE  # post_training pruned the old code's dense model
    assert not (study / "runs" / ".work" / KILLED).exists()
