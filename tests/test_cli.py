"""The command line: malformed parameter files fail with one line, a non-zero exit and nothing written."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from helpers import __main__ as cli

ROOT = Path(__file__).resolve().parents[1]

GOOD = {
    # resnet18_mini (ResNet18's layout at widths / 8): these tests are about the command, not the network's size
    "name": "cli", "datasets": ["digits"], "models": ["resnet18_mini"], "methods": ["pre_training"],
    "scenarios": ["uniform"], "epochs": 1, "batch_size": 16, "train_subset": 24, "val_subset": 20,
    "test_subset": 20, "threads": 1, "inference": {"samples": 2, "warmup": 1},
    # the runs in the command's process: a process per run is tested through the command in test_runner
    # (the SIGKILL test) and test_faults (fault injection)
    "executor": {"kind": "local", "process_per_run": False},
}  # fmt: skip

MALFORMED = {
    "unknown key": ({**GOOD, "epohcs": 2}, ["'epohcs'", "'epochs'"]),
    "bad scenario": ({**GOOD, "scenarios": ["mixd"]}, ["'mixd'", "uniform"]),
    "negative epochs": ({**GOOD, "epochs": -3}, ["epochs", "-3"]),
    "missing dataset": ({k: v for k, v in GOOD.items() if k != "datasets"}, ["datasets"]),
    "unknown dataset": ({**GOOD, "datasets": ["bloodmnst"]}, ["'bloodmnst'", "'bloodmnist'"]),
    "unavailable data": ({**GOOD, "datasets": ["mvtec3d_cls"], "data_root": "/nonexistent-data"}, ["mvtec3d_cls"]),
}


def _write(tmp_path, params) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_gives_one_line_error_exit_2_and_writes_nothing(case, tmp_path, capsys):
    params, needles = MALFORMED[case]
    out = tmp_path / "out"
    code = cli.main(["train", str(_write(tmp_path, params)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ")
    assert all(n in err[0] for n in needles), err[0]
    assert not out.exists()


def test_exit_status_through_a_real_process(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "helpers", "train", str(_write(tmp_path, {**GOOD, "epohcs": 2})), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown key 'epohcs'; did you mean 'epochs'?")
    assert not out.exists()


def test_bad_override_is_rejected(tmp_path, capsys):
    code = cli.main(["train", str(_write(tmp_path, GOOD)), "--out", str(tmp_path / "o"), "--set", "epochs=zero"])
    assert code == 2 and "epochs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_then_study_calls_the_notebooks(tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("helpers.study")
    fake.NotebookExecutionError = RuntimeError
    fake.run_notebooks = lambda params, study_dir, **kw: calls.append((params, Path(study_dir))) or study_dir / "report.html"
    monkeypatch.setitem(sys.modules, "helpers.study", fake)
    import helpers

    monkeypatch.setattr(helpers, "study", fake, raising=False)
    path = _write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert cli.main(["train", str(path), "--out", str(out), "--set", "seeds=[1]", "--quiet"]) == 0
    assert "2 runs (2 completed)" in capsys.readouterr().out
    assert (out / "cli" / "results" / "runs.csv").is_file() and calls == []
    assert cli.main(["study", str(path), "--out", str(out), "--set", "seeds=[1]", "--quiet"]) == 0
    (params, study_dir), = calls
    assert study_dir == out / "cli" and params["seeds"] == [1] and params["out"] == str(out)


def test_a_failing_notebook_makes_study_exit_nonzero_and_loses_no_run(tmp_path, capsys, monkeypatch):
    import nbformat

    from helpers import study

    bad = tmp_path / "01_bad.ipynb"
    cells = [nbformat.v4.new_code_cell("epochs = 1", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("raise RuntimeError(f'plot failed after {epochs} epochs')")]  # fmt: skip
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), bad)
    monkeypatch.setitem(study.STUDY_NOTEBOOKS, "primary", (str(bad),))
    out = tmp_path / "o"
    code = cli.main(["study", str(_write(tmp_path, GOOD)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "01_bad.ipynb" in err and "plot failed after 1 epochs" in err
    study_dir = out / "cli"
    assert (study_dir / "notebooks" / "01_bad.ipynb").is_file()  # the executed copy, with the traceback
    finished = [p for p in (study_dir / "runs").iterdir() if p.name != ".work"]
    assert len(finished) == 2 and all((p / "result.json").is_file() for p in finished)  # dense + pre_training
