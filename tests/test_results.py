"""helpers.results: documented columns, atomic writes, tables rebuilt from run folders."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from helpers import results
from helpers.results import COLUMNS, collect, load_tables, write_json_atomic

# The columns the module contract promises (issue 4).
CONTRACT = {
    "runs": "run_id dataset model method scenario seed status epochs_completed conv_sparsity_target "
    "linear_sparsity_target conv_filter_sparsity linear_weight_sparsity overall_sparsity params_total "
    "params_nonzero train_time_s train_energy_j train_energy_source peak_memory_mb test_accuracy "
    "test_precision test_recall test_f1 test_auc test_loss",
    "epochs": "run_id epoch phase loss accuracy precision recall f1 time_s energy_j energy_source peak_memory_mb",
    "inference": "run_id variant device threads batch_size samples latency_ms_mean latency_ms_p50 latency_ms_p95 "
    "energy_j energy_source params_nonzero model_size_mb macs max_abs_logit_diff "
    "linear_formats sparse_linear_layers",
}


@pytest.mark.parametrize("table", results.TABLES)
def test_contract_columns_are_documented(table):
    missing = [c for c in CONTRACT[table].split() if c not in COLUMNS[table]]
    assert not missing
    assert all(isinstance(doc, str) and len(doc) > 10 for doc in COLUMNS[table].values())


def _fake_run(study, run_id, *, status="completed", finished=True):
    folder = study / "runs" / (run_id if finished else f".work/{run_id}")
    folder.mkdir(parents=True)
    ids = {"dataset": "digits", "model": "resnet18", "method": "set", "scenario": "uniform", "seed": 0}
    if not finished:
        write_json_atomic(folder / "error.json", {"run_id": run_id, **ids, "status": "failed", "error": "boom"})
        return
    pd.DataFrame([{"run_id": run_id, "epoch": 1, "phase": p, "loss": 1.0, "energy_j": math.nan,
                   "energy_source": "unavailable"} for p in ("train", "val")]).to_csv(folder / "epochs.csv", index=False)  # fmt: skip
    pd.DataFrame([{"run_id": run_id, "variant": v, "batch_size": 1} for v in ("masked", "compacted")]).to_csv(
        folder / "inference.csv", index=False
    )
    write_json_atomic(folder / "result.json", {"run_id": run_id, **ids, "status": status, "test_accuracy": 0.5})


def test_collect_rebuilds_tables_from_run_folders(tmp_path):
    study = tmp_path / "s"
    _fake_run(study, "a")
    _fake_run(study, "b", status="diverged")
    _fake_run(study, "c", finished=False)
    (study / "runs" / ".work" / "d").mkdir()  # interrupted, no error: not a row
    tables = collect(study)
    assert sorted(tables["runs"].run_id) == ["a", "b", "c"]
    assert dict(zip(tables["runs"].run_id, tables["runs"].status)) == {"a": "completed", "b": "diverged", "c": "failed"}
    for table, frame in tables.items():
        assert list(frame.columns[: len(COLUMNS[table])]) == list(COLUMNS[table])
        on_disk = pd.read_csv(study / "results" / f"{table}.csv")
        assert list(on_disk.columns) == list(frame.columns) and len(on_disk) == len(frame)
    assert len(tables["epochs"]) == 4 and set(tables["epochs"].method) == {"set"}  # ids joined in
    assert len(tables["inference"]) == 4
    assert tables["epochs"].energy_j.isna().all()
    assert not list((study / "results").glob(".*"))


def test_collect_keeps_only_requested_runs(tmp_path):
    study = tmp_path / "s"
    _fake_run(study, "a")
    _fake_run(study, "b")
    assert list(collect(study, run_ids=["b"])["runs"].run_id) == ["b"]


def test_collect_of_an_empty_study_writes_headers(tmp_path):
    tables = collect(tmp_path / "empty")
    for table, frame in tables.items():
        assert frame.empty and list(frame.columns[: len(COLUMNS[table])]) == list(COLUMNS[table])
        assert set(results.ID_COLUMNS) <= set(frame.columns)  # same schema as a full table


def test_load_tables_rebuilds_missing_tables(tmp_path):
    study = tmp_path / "s"
    _fake_run(study, "a")
    tables = load_tables(study)
    assert set(tables) == {"runs", "epochs", "inference"} and len(tables["runs"]) == 1
    (study / "results" / "runs.csv").unlink()
    assert len(load_tables(study)["runs"]) == 1
    with pytest.raises(FileNotFoundError, match="run the study"):
        load_tables(tmp_path / "nothing")


def test_atomic_json_leaves_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": math.nan, "b": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text().replace("NaN", "null")) == {"a": None, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == results.FILE_MODE  # not mkstemp's 0600


def test_environment_names_versions_cpu_and_commit():
    env = results.environment(threads=2)
    assert env["threads"] == 2 and env["packages"]["torch"] and env["cpu"]
    assert "git_commit" in env
