"""helpers.executors: the same grid on a Dask LocalCluster as locally, a killed worker, SLURM job scripts.

Every cluster here binds to 127.0.0.1, without a dashboard; workers are processes with one thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import __main__ as cli
from helpers import executors, lifecycle, primary, runner
from helpers.config import ParamsError, expand_grid, load_params

distributed = pytest.importorskip("distributed")

TINY = {  # ResNet18's layout at widths / 8
    "name": "grid", "datasets": ["digits"], "models": ["resnet18_mini"],
    "methods": ["pre_training", "post_training", "set"], "scenarios": ["uniform"], "epochs": 1,
    "batch_size": 16, "train_subset": 32, "val_subset": 20, "test_subset": 20, "threads": 1,
    "inference": {"samples": 2, "warmup": 1},
}  # fmt: skip
DASK = {"kind": "dask", "n_workers": 2, "threads_per_worker": 1, "dashboard": False}
COMPARED = [
    "run_id", "status", "epochs_completed", "conv_filter_sparsity", "linear_weight_sparsity", "overall_sparsity",
    "params_nonzero", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_auc", "test_loss",
]  # fmt: skip
SLURM = {
    "kind": "dask", "gpus_per_worker": 1, "max_jobs": 10,
    "jobqueue": {
        "system": "slurm", "cores": 8, "memory": "32GB", "walltime": "24:00:00", "queue": "gpu",
        "job_extra_directives": ["--gres=gpu:1"], "job_script_prologue": ["source .venv/bin/activate"],
    },
}  # fmt: skip


def _leftovers(study: Path) -> list[str]:
    """Partial state: work folders, temporary files, finished-looking folders without result.json."""
    bad = [p for p in study.rglob("*") if p.name == ".work" or p.name.endswith(".tmp")]
    bad += [p for p in (study / "runs").iterdir() if p.is_dir() and not (p / "result.json").is_file()]
    return sorted(str(p.relative_to(study)) for p in bad)


# ---------------------------------------------------------------------------------------------- config


def test_local_is_the_default_and_dask_fills_its_defaults():
    assert load_params(TINY)["executor"] == "local"
    assert executors.validate_executor({"kind": "local"}) == "local"
    cfg = executors.validate_executor("dask")
    assert cfg == executors.DASK_DEFAULTS
    assert executors.validate_executor(cfg) == cfg  # idempotent: validated values validate again
    assert executors.threads_per_run(cfg) == 1
    assert executors.threads_per_run(executors.validate_executor(SLURM)) == 8


@pytest.mark.parametrize(
    ("executor", "needles"),
    [
        ("daks", ["'daks'", "'dask'", "local"]),
        ({"kind": "dask", "n_worker": 2}, ["'n_worker'", "'n_workers'"]),
        ({"kind": "dask", "retries": -1}, ["executor.retries", "-1"]),
        ({"kind": "dask", "n_workers": "two"}, ["executor.n_workers", "'two'"]),
        ({"kind": "local", "n_workers": 2}, ["'n_workers'", "kind"]),
        ({"kind": "dask", "scheduler": "tcp://127.0.0.1:8786", "jobqueue": SLURM["jobqueue"]}, ["scheduler", "jobqueue"]),
        ({"kind": "dask", "scheduler": "tcp://127.0.0.1:8786", "n_workers": 2}, ["n_workers", "LocalCluster"]),
        ({"kind": "dask", "max_jobs": 3}, ["max_jobs", "jobqueue"]),
        ({"kind": "dask", "jobqueue": {"system": "slurmm", "cores": 2, "memory": "1GB"}}, ["'slurmm'", "'slurm'"]),
        ({"kind": "dask", "jobqueue": {"system": "slurm", "cores": 2, "memroy": "1GB"}}, ["'memroy'", "'memory'"]),
        ({"kind": "dask", "jobqueue": {"system": "pbs", "cores": 2}}, ["memory", "jobqueue"]),
        ({"kind": "dask", "jobqueue": {"system": "slurm", "cores": 2, "memory": "1GB", "job_extra_directives": "--gres=gpu:1"}},
         ["job_extra_directives", "list"]),
    ],
)  # fmt: skip
def test_bad_executor_settings_fail_naming_key_and_fix(executor, needles):
    with pytest.raises(ParamsError) as info:
        load_params({**TINY, "executor": executor})
    message = str(info.value)
    assert all(n in message for n in needles), message


def test_the_local_executor_gives_each_run_its_own_process_unless_told_not_to():
    assert executors.validate_executor({"kind": "local", "process_per_run": True}) == "local"
    shared = executors.validate_executor({"kind": "local", "process_per_run": False})
    assert shared == {"kind": "local", "process_per_run": False}
    assert executors.make_executor("local").process_per_run is True
    assert executors.make_executor(shared).process_per_run is False
    assert load_params({**TINY, "executor": shared})["executor"] == shared
    with pytest.raises(ParamsError, match="process_per_run must be true or false"):
        executors.validate_executor({"kind": "local", "process_per_run": "no"})
    with pytest.raises(ParamsError, match="n_workers"):
        executors.validate_executor({"kind": "local", "n_workers": 2})


def test_a_run_whose_process_dies_is_recorded_as_failed(tmp_path, monkeypatch):
    spec = expand_grid(load_params({**TINY, "methods": ["pre_training"], "out": str(tmp_path)}))[0]
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the run's interpreter exits at once, without a word
    statuses = executors.LocalExecutor().run([spec], tmp_path, task=primary.KIND, progress=False)
    assert statuses == {spec.run_id: "failed"}
    error = lifecycle.work_dir(tmp_path, spec.run_id) / "error.json"
    assert "exit code 1" in yaml.safe_load(error.read_text())["error"]


class _PidTask:
    """Records each run's process and its parent in ``<run_id>.pid``; a run whose id is in ``die`` kills
    its own process (SIGKILL) instead. Module-level, so that it pickles into the run's process."""

    def __init__(self, die: tuple[str, ...] = (), hang: tuple[str, ...] = ()) -> None:
        self.die, self.hang = die, hang

    def run_one(self, spec, study, *, progress=False):
        if spec.run_id in self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        (Path(study) / f"{spec.run_id}.pid").write_text(f"{os.getpid()} {os.getppid()}")
        if spec.run_id in self.hang:
            time.sleep(120)
        return "completed"

    def failure_ids(self, spec):
        return primary.KIND.failure_ids(spec)


def _pids(study: Path, specs) -> list[tuple[int, int]]:
    return [tuple(map(int, (study / f"{s.run_id}.pid").read_text().split())) for s in specs]


def test_each_run_gets_a_process_of_its_own_and_one_that_dies_loses_only_its_run(tmp_path):
    specs = expand_grid(load_params({**TINY, "out": str(tmp_path)}))[:3]
    statuses = executors.LocalExecutor().run(specs, tmp_path, task=_PidTask(die=(specs[1].run_id,)), progress=False)
    assert [statuses[s.run_id] for s in specs] == ["completed", "failed", "completed"]
    error = yaml.safe_load((lifecycle.work_dir(tmp_path, specs[1].run_id) / "error.json").read_text())["error"]
    assert f"exit code {-signal.SIGKILL}" in error
    (pid_a, parent_a), (pid_c, parent_c) = _pids(tmp_path, [specs[0], specs[2]])
    assert len({pid_a, pid_c, os.getpid()}) == 3  # a process per run, none of them this one
    if executors._FORK_SERVER:  # forked from one server, which outlived the killed run and is gone now
        assert parent_a == parent_c != os.getpid()
        assert not _alive(parent_a)


def test_without_a_terminal_each_finished_run_prints_one_line(tmp_path, capsys):
    """Under nohup or in a CI log the bar is off (no terminal): a line per run says how far the grid is."""
    specs = expand_grid(load_params({**TINY, "out": str(tmp_path)}))[:3]
    executor = executors.LocalExecutor(process_per_run=False)
    executor.run(specs, tmp_path, task=_PidTask(), progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"[{i}/3] {s.run_id}: completed" for i, s in enumerate(specs, 1)]
    executor.run(specs, tmp_path, task=_PidTask(), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fork_server", [True, False])
def test_an_interrupted_grid_leaves_no_run_behind(tmp_path, monkeypatch, fork_server):
    monkeypatch.setattr(executors, "_FORK_SERVER", fork_server and executors._FORK_SERVER)
    spec = expand_grid(load_params({**TINY, "out": str(tmp_path)}))[0]
    pid_file = tmp_path / f"{spec.run_id}.pid"

    def interrupt_when_the_run_is_under_way():
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C, to this process only

    # Python's own Ctrl-C handler (importing dask_jobqueue.runner, as an earlier test may, replaces it)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_when_the_run_is_under_way, daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            executors.LocalExecutor().run([spec], tmp_path, task=_PidTask(hang=(spec.run_id,)), progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < 20  # the run (sleeping 120 s) did not hold the grid
    [(pid, parent)] = _pids(tmp_path, [spec])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and not _alive(parent if parent != os.getpid() else pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path(f"/proc/{pid}").exists() else True


def test_without_the_fork_server_each_run_is_a_fresh_interpreter(tmp_path, monkeypatch):
    """The path outside Linux (macOS, Windows): an interpreter per run, started by this process."""
    monkeypatch.setattr(executors, "_FORK_SERVER", False)
    specs = expand_grid(load_params({**TINY, "out": str(tmp_path)}))[:2]
    statuses = executors.LocalExecutor().run(specs, tmp_path, task=_PidTask(), progress=False)
    assert set(statuses.values()) == {"completed"}
    (pid_a, parent_a), (pid_b, parent_b) = _pids(tmp_path, specs)
    assert pid_a != pid_b and parent_a == parent_b == os.getpid()


_PRESTARTED_SCRIPT = """
import json, os, sys
sys.path[:0] = json.loads(sys.argv[1])
from helpers import executors
from helpers.config import expand_grid, load_params
from test_executors import TINY, _PidTask
from pathlib import Path
study = Path(sys.argv[2])
specs = expand_grid(load_params({**TINY, "out": str(study)}))[:2]
executors.prestart_fork_server("local")
server = executors._PRESTARTED.proc.pid
statuses = executors.LocalExecutor().run(specs, study, task=_PidTask(), progress=False)
executors.prestart_fork_server({"kind": "local", "process_per_run": False})  # runs in this process: no server
assert executors._PRESTARTED is None
executors.prestart_fork_server("local")
unused = executors._PRESTARTED.proc.pid
print(json.dumps({"statuses": statuses, "server": server, "unused": unused, "me": os.getpid(),
                  "runs": [Path(study, s.run_id + ".pid").read_text() for s in specs]}))
"""


@pytest.mark.skipif(not executors._FORK_SERVER, reason="the fork server is Linux-only")
def test_a_prestarted_fork_server_is_this_process_forked_and_serves_the_runs(tmp_path):
    """``python -m helpers`` forks the server from itself once its parameters are read (no second interpreter
    importing torch); the runs are forked from that server; a server no executor took ends with its process."""
    paths = json.dumps([str(Path(__file__).parent), *sys.path])
    command = [sys.executable, "-c", _PRESTARTED_SCRIPT, paths, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["statuses"].values()) == {"completed"}
    (pid_a, parent_a), (pid_b, parent_b) = [tuple(map(int, line.split())) for line in report["runs"]]
    assert parent_a == parent_b == report["server"] and len({pid_a, pid_b, report["server"], report["me"]}) == 4
    deadline = time.monotonic() + 5
    while (_alive(report["server"]) or _alive(report["unused"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(report["server"]) and not _alive(report["unused"])


def test_executor_settings_do_not_change_run_ids():
    local = [s.run_id for s in expand_grid(load_params(TINY))]
    for executor in ("dask", DASK, SLURM, {"kind": "dask", "scheduler": "tcp://127.0.0.1:8786"}):
        assert [s.run_id for s in expand_grid(load_params({**TINY, "executor": executor}))] == local


def test_executor_keys_can_be_overridden_one_by_one():
    params = load_params(TINY, ["executor.kind=dask", "executor.n_workers=3", "executor.retries=0"])
    assert params["executor"]["n_workers"] == 3 and params["executor"]["retries"] == 0
    params = load_params({**TINY, "executor": SLURM}, ["executor.jobqueue.cores=4", "executor.max_jobs=2"])
    assert params["executor"]["jobqueue"]["cores"] == 4 and params["executor"]["max_jobs"] == 2
    with pytest.raises(ParamsError, match="'n_workres'"):
        load_params(TINY, ["executor.kind=dask", "executor.n_workres=2"])


def test_gpu_slots_are_exclusive():
    with executors._gpu_slot(2) as first, executors._gpu_slot(2) as second:
        assert {first, second} == {0, 1}
        with pytest.raises(RuntimeError, match="busy"), executors._gpu_slot(2):
            pass
    with executors._gpu_slot(2) as again:
        assert again == 0


# ---------------------------------------------------------------------------------------------- jobqueue


def test_slurm_job_script_carries_the_directives():
    script = executors.job_script(SLURM)
    lines = script.splitlines()
    directives = [line for line in lines if line.startswith("#SBATCH")]
    for expected in ("-p gpu", "-n 1", "--cpus-per-task=8", "--mem=30G", "-t 24:00:00", "--gres=gpu:1"):
        assert f"#SBATCH {expected}" in directives, (expected, directives)
    assert "source .venv/bin/activate" in lines
    (worker,) = [line for line in lines if "distributed.cli.dask_worker" in line]
    assert "--nthreads 8" in worker and "--resources GPU=1" in worker and "--nanny" in worker
    assert "--preload-nanny helpers.executors" in worker  # workers without Dask's malloc trimming
    assert "--nworkers" not in worker  # one worker per job (processes: 1)
    cpu_only = executors.job_script({**SLURM, "gpus_per_worker": 0})
    assert "--resources run=1" in cpu_only  # one run at a time per worker, with all its cores


def test_job_script_from_a_study_file(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump({**TINY, "executor": {**SLURM, "jobqueue": {**SLURM["jobqueue"], "system": "pbs"}}}))
    script = executors.job_script(path)
    assert "#PBS -q gpu" in script and "#PBS -l walltime=24:00:00" in script
    with pytest.raises(ParamsError, match="jobqueue"):
        executors.job_script({**TINY, "executor": DASK})


# ---------------------------------------------------------------------------------------------- LocalCluster


def test_local_cluster_gives_the_same_runs_as_the_local_executor(tmp_path, capsys):
    # the local executor running the runs in this process (its process per run: the companion test below)
    in_process = {"kind": "local", "process_per_run": False}
    local = runner.run_study(load_params({**TINY, "out": str(tmp_path / "local"), "executor": in_process}), progress=False)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(TINY))
    # through the command line, as a user would switch executors
    override = "executor={kind: dask, n_workers: 2, threads_per_worker: 1, dashboard: false}"
    code = cli.main(["train", str(path), "--out", str(tmp_path / "dask"), "--set", override, "--quiet"])
    assert code == 0, capsys.readouterr().err
    expected = pd.read_csv(local / "results" / "runs.csv")[COMPARED].sort_values("run_id", ignore_index=True)
    got = pd.read_csv(tmp_path / "dask" / "grid" / "results" / "runs.csv")[COMPARED].sort_values("run_id", ignore_index=True)
    assert len(expected) == len(expand_grid(load_params(TINY))) == 4
    assert (expected.status == "completed").all()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # the tasks ran in worker processes with the executor's threads
    for run in (tmp_path / "dask" / "grid" / "runs").iterdir():
        env = yaml.safe_load((run / "environment.json").read_text())
        assert env["threads"] == 1
    assert _leftovers(tmp_path / "dask" / "grid") == []


COMPANION = {
    "name": "criteria_grid", "study_kind": "criteria", "datasets": ["digits"], "models": ["resnet18_mini"], "epochs": 1,
    "batch_size": 16, "lr": 1e-3, "train_subset": 48, "val_subset": 20, "test_subset": 30, "threads": 1,
    "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1]}, "finetune": {"epochs": 1, "batch_size": 16},
    "criteria": ["l1", "bn_slimming_l1"],
}  # fmt: skip
COMPANION_COMPARED = [
    "run_id", "status", "epochs_completed", "test_accuracy", "test_loss", "params_nonzero", "accuracy_before",
    "accuracy_pruned", "accuracy_finetuned", "filters_removed", "macs_after", "reused_run_id",
]  # fmt: skip


def test_a_companion_study_on_a_local_cluster_gives_the_local_executors_runs(tmp_path):
    local = runner.run_study(load_params({**COMPANION, "out": str(tmp_path / "local")}), progress=False)
    dask = runner.run_study(load_params({**COMPANION, "out": str(tmp_path / "dask"), "executor": DASK}), progress=False)
    expected = pd.read_csv(local / "results" / "runs.csv")[COMPANION_COMPARED].sort_values("run_id", ignore_index=True)
    got = pd.read_csv(dask / "results" / "runs.csv")[COMPANION_COMPARED].sort_values("run_id", ignore_index=True)
    assert len(expected) == 4 and (expected.status == "completed").all()  # two dense models, two criteria
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for run in (dask / "runs").iterdir():  # run by the cluster's workers, with the executor's threads
        if run.is_dir():
            assert yaml.safe_load((run / "environment.json").read_text())["threads"] == 1
    assert _leftovers(dask) == []


def test_a_killed_worker_loses_only_its_run_and_the_grid_completes(tmp_path):
    from distributed import Client, LocalCluster

    params = load_params({
        # 480 images: an epoch of resnet18_mini lasts about 1-2 s on one thread, long enough to be killed in
        **TINY, "methods": ["pre_training", "in_training", "post_training"], "epochs": 3, "train_subset": 480,
        "out": str(tmp_path / "out"),
    })  # fmt: skip
    specs = expand_grid(params)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        scheduler_kwargs={"allowed_failures": 3}, silence_logs=40, preload_nanny=["helpers.executors"],
    ) as cluster, Client(cluster) as client:  # fmt: skip
        executor = {"kind": "dask", "scheduler": cluster.scheduler_address, "retries": 2}
        params = load_params({**params.to_dict(), "executor": executor})
        outcome: dict[str, object] = {}
        grid = threading.Thread(target=lambda: outcome.update(study=runner.run_study(params, progress=False)))
        grid.start()
        study = tmp_path / "out" / params["name"]
        victim = None
        deadline = time.monotonic() + 120
        while victim is None:  # a run has started: its checkpoint of epoch 1 exists, epochs 2-3 are under way
            assert grid.is_alive() and time.monotonic() < deadline, "no run was seen in progress"
            started = {p.parent.name for p in (study / "runs" / ".work").glob("*/checkpoint.pt")}
            for worker, keys in client.processing().items():
                if started & {str(k) for k in keys}:
                    victim, key = worker, sorted(started & {str(k) for k in keys})[0]
            time.sleep(0.05)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        assert not lifecycle.is_finished(study, key)  # killed mid-run
        grid.join(timeout=240)
        assert not grid.is_alive() and outcome["study"] == study
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert sorted(runs.run_id) == sorted(s.run_id for s in specs)
    assert (runs.status == "completed").all()
    assert _leftovers(study) == []
    epochs = pd.read_csv(study / "runs" / key / "epochs.csv")  # resumed, not duplicated
    assert sorted(epochs[epochs.phase == "train"].epoch) == [1, 2, 3]
