"""`python -m helpers train` runs a companion study's own grid (not the primary one) and fills its tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_train_command_runs_the_granularity_study(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "helpers", "train", str(ROOT / "params" / "granularity_smoke.yaml"),
         "--out", str(tmp_path), "--quiet", "--set", "granularities=[structured]", "--set", "inference.samples=4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(next(tmp_path.glob("*/results/runs.csv")))
    assert len(runs) >= 2, runs  # the dense baseline and the structured run(s)
    assert set(runs["status"]) == {"completed"}
    assert "structured" in set(runs["granularity"].dropna())
