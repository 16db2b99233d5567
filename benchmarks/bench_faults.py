"""Fault injection: a small grid is killed with SIGKILL at seeded random moments and resumed after each
kill; then a damaged checkpoint and a damaged ``result.json`` are injected and the grid is resumed again.

What it reports (issue 17): kills that landed and were survived, runs lost (must be 0), partial files
left (temporary files, checkpoints, ``trained.pt``, work folders, ``error.json``: must be 0), what was
set aside under ``runs/.damaged/``, and whether the final test metrics (and every epoch's train / val
metrics) equal those of an uninterrupted run of the same grid with the same seeds.

The uninterrupted grid runs in this process, its runs too (:func:`helpers.runner.run_study` with
``process_per_run: false``; T its wall time: the runs' work, no process start), the faulted one as the
README's command, ``python -m helpers train``, in child processes (the executor's setting is not part
of the run ids, and where a run executes does not change its results). Kill moments:
``kills`` points drawn uniformly (seeded) in ``(0, fraction * T)``, sorted; process ``i`` is killed
``t_i - t_{i-1}`` seconds after its work began (it writes the study's ``params.json`` once imports, data
and checks are done), so each process gets about as far as the uninterrupted grid did between two
moments, less what a kill loses.
Then one more process is killed as soon as a run has finished and another has written its first epoch's
checkpoint; that checkpoint is overwritten with 100 random bytes and a finished run's ``result.json``
with ``{broken``; the same command runs once more, to the end.

Run by hand (minutes; the table in ``benchmarks/README.md`` came from this command)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_faults.py --kills 20 --seed 0

``tests/test_faults.py`` runs a short version (3 kills and both injections) through :func:`fault_injection`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEST_METRICS = ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_auc", "test_loss")
EPOCH_METRICS = ("loss", "accuracy", "precision", "recall", "f1")


def grid(out: Path, name: str, *, models: Sequence[str], methods: Sequence[str], epochs: int = 2,
         train_subset: int = 64, threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """The study file of the small grid: digits, the given models and methods, scenario ``mixed``."""
    return {
        "name": name, "datasets": ["digits"], "models": list(models), "methods": list(methods),
        "scenarios": ["mixed"], "seeds": [0], "epochs": epochs, "batch_size": 16, "train_subset": train_subset,
        "val_subset": 20, "test_subset": 30, "threads": threads, "keep_models": False,
        "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1]}, "out": str(out),
    }  # fmt: skip


def _command(params_path: Path) -> list[str]:
    return [sys.executable, "-m", "helpers", "train", str(params_path), "--quiet"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _write_params(folder: Path, params: dict[str, Any]) -> Path:
    import yaml

    path = folder / f"{params['name']}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _run_to_end(params_path: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(_command(params_path), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _kill_after(params_path: Path, study: Path, seconds: float, log: list[str], timeout: float) -> bool:
    """Start the command and SIGKILL it ``seconds`` after its work began (it writes the study's
    ``params.json`` once imports, data and checks are done); whether it was still running (the kill landed)."""
    launched = time.time_ns()
    stamp = study / "params.json"
    before = set(study.rglob(".*.tmp"))
    proc = subprocess.Popen(_command(params_path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if stamp.is_file() and stamp.stat().st_mtime_ns >= launched:
                break
            time.sleep(0.02)
        try:
            proc.wait(timeout=seconds)
            log.append(f"process ended (rc {proc.returncode}) before its kill at {seconds:.1f} s")
            return False
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            if set(study.rglob(".*.tmp")) - before:  # temporary files have random names: new ones are this write's
                log.append(f"kill at {seconds:.1f} s after work began interrupted a write (a temporary file was left)")
            return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_with_checkpoint(params_path: Path, study: Path, timeout: float) -> Path | None:
    """Start the command and SIGKILL it once a run has finished and another has a checkpoint; that checkpoint."""
    proc = subprocess.Popen(_command(params_path), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    found = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            checkpoints = sorted((study / "runs" / ".work").glob("*/checkpoint.pt"))
            if checkpoints and any((study / "runs").glob("*/result.json")):
                found = checkpoints[0]
                break
            time.sleep(0.05)
        if found is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            if not found.is_file():  # finished between the poll and the kill
                found = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return found


def partial_files(study: Path) -> list[str]:
    """What an interruption may leave and a finished grid must not: temporary files, checkpoints,
    ``trained.pt``, ``error.json``, work folders (``runs/.damaged`` holds what was set aside on purpose)."""
    damaged = study / "runs" / ".damaged"
    bad = []
    for path in study.rglob("*"):
        if damaged in path.parents or path == damaged:
            continue
        if path.name.endswith(".tmp") or path.name in ("checkpoint.pt", "trained.pt", "error.json", ".work"):
            bad.append(str(path.relative_to(study)))
    return sorted(bad)


def compare(reference: Path, faulted: Path) -> dict[str, Any]:
    """Largest absolute differences of the test metrics (runs table) and of every epoch's metrics."""
    import pandas as pd

    def frame(study: Path, table: str, keys: list[str]) -> pd.DataFrame:
        return pd.read_csv(study / "results" / f"{table}.csv").set_index(keys).sort_index()

    ref_runs, runs = frame(reference, "runs", ["run_id"]), frame(faulted, "runs", ["run_id"])
    keys = ["run_id", "epoch", "phase"]
    ref_epochs, epochs = frame(reference, "epochs", keys), frame(faulted, "epochs", keys)
    same_rows = list(ref_runs.index) == list(runs.index) and list(ref_epochs.index) == list(epochs.index)

    def max_diff(a: pd.DataFrame, b: pd.DataFrame, columns: Sequence[str]) -> float:
        if not same_rows:
            return math.inf
        diff = (a[list(columns)].astype(float) - b[list(columns)].astype(float)).abs()
        both_nan = a[list(columns)].isna() & b[list(columns)].isna()
        return float(diff.where(~both_nan, 0.0).max().max())

    return {
        "same_runs_and_epochs": same_rows,
        "max_test_metric_diff": max_diff(ref_runs, runs, TEST_METRICS),
        "max_epoch_metric_diff": max_diff(ref_epochs, epochs, EPOCH_METRICS),
    }


def fault_injection(workdir: str | os.PathLike, *, kills: int = 20, seed: int = 0,
                    models: Sequence[str] = ("vgg16", "resnet18"),
                    methods: Sequence[str] = ("post_training", "pre_training", "in_training"), epochs: int = 2,
                    train_subset: int = 64, fraction: float = 0.7, timeout: float = 1800.0,
                    log: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the uninterrupted reference grid, then the faulted one; the report (see the module docstring).

    Args:
        workdir: an empty folder for both studies.
        kills: SIGKILLs at seeded random moments.
        seed: seeds the moments and the injected bytes.
        models, methods, epochs, train_subset: the grid (digits, scenario mixed, seed 0).
        fraction: the moments lie in the first ``fraction`` of the uninterrupted grid's wall time.
        timeout: seconds any single command may take.
        log: collects notes (kills that missed, the final command's warnings).
    """
    from helpers import runner

    log = [] if log is None else log
    workdir = Path(workdir)
    rng = random.Random(seed)
    ref_params = grid(workdir / "out", "reference", models=models, methods=methods, epochs=epochs,
                      train_subset=train_subset)  # fmt: skip
    start = time.perf_counter()
    in_process = {**ref_params, "executor": {"kind": "local", "process_per_run": False}}
    runner.run_study(in_process, progress=False)  # uninterrupted, in this process (same code, same seeds)
    reference_s = time.perf_counter() - start
    faulted_params = {**ref_params, "name": "faulted"}
    path = _write_params(workdir, faulted_params)
    study = workdir / "out" / "faulted"

    moments = sorted(rng.uniform(0.0, fraction * reference_s) for _ in range(kills))
    start = time.perf_counter()
    landed, previous = 0, 0.0
    for moment in moments:
        landed += _kill_after(path, study, moment - previous, log, timeout)
        previous = moment

    injected: dict[str, str] = {}
    checkpoint = _kill_with_checkpoint(path, study, timeout)
    if checkpoint is not None:
        checkpoint.write_bytes(rng.randbytes(100))
        injected["checkpoint"] = str(checkpoint.relative_to(study))
    else:
        log.append("no checkpoint appeared before the grid finished: the damaged checkpoint was not injected")
    finished = sorted((study / "runs").glob("*/result.json"))
    if finished:
        result = finished[rng.randrange(len(finished))]
        result.write_text("{broken")
        injected["result.json"] = str(result.relative_to(study))
    done = _run_to_end(path, timeout)
    faulted_s = time.perf_counter() - start
    log.extend(line for line in done.stderr.splitlines() if line.startswith("WARNING"))

    import pandas as pd

    from helpers.config import expand_grid, load_params

    planned = {s.run_id for s in expand_grid(load_params(faulted_params))}
    runs = pd.read_csv(study / "results" / "runs.csv") if (study / "results" / "runs.csv").is_file() else pd.DataFrame()
    completed = set(runs.loc[runs.status == "completed", "run_id"]) if len(runs) else set()
    damaged = study / "runs" / ".damaged"
    report = {
        "models": list(models), "methods": list(methods), "epochs": epochs, "runs": len(planned), "seed": seed,
        "kills": kills, "kills_landed": landed,
        "kills_mid_write": sum(line.startswith("kill at") for line in log),
        "kills_survived": landed if done.returncode == 0 else 0,
        "final_exit_status": done.returncode, "injected": injected,
        "set_aside": sorted(p.name for p in damaged.iterdir()) if damaged.is_dir() else [],
        "runs_lost": len(planned - completed), "partial_files_left": partial_files(study),
        "reference_s": reference_s, "faulted_s": faulted_s,
        **compare(workdir / "out" / "reference", study),
    }  # fmt: skip
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as the table of ``benchmarks/README.md``."""
    rows = [
        ("grid", f"digits, {' + '.join(report['models'])}, dense + {', '.join(report['methods'])} / mixed, "
                 f"seed 0, {report['epochs']} epochs: {report['runs']} runs"),
        ("SIGKILLs at seeded random moments (seed)", f"{report['kills']} ({report['seed']})"),
        ("kills that landed (process still running)", report["kills_landed"]),
        ("of those, kills that interrupted a write (a temporary file was left)", report["kills_mid_write"]),
        ("kills survived (the grid finished afterwards)", report["kills_survived"]),
        ("injected", ", ".join(f"{k}: `{v}`" for k, v in report["injected"].items()) or "nothing"),
        ("set aside under runs/.damaged/", len(report["set_aside"])),
        ("final command's exit status", report["final_exit_status"]),
        ("runs lost (must be 0)", f"**{report['runs_lost']}**"),
        ("partial files left (must be 0)", f"**{len(report['partial_files_left'])}**"),
        ("same runs and epochs as the uninterrupted grid", report["same_runs_and_epochs"]),
        ("largest test-metric difference from the uninterrupted grid", f"**{report['max_test_metric_diff']:.3g}**"),
        ("largest per-epoch train/val metric difference", f"{report['max_epoch_metric_diff']:.3g}"),
        ("uninterrupted grid / faulted grid, wall (s)", f"{report['reference_s']:.0f} / {report['faulted_s']:.0f}"),
    ]  # fmt: skip
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18"])
    parser.add_argument("--methods", nargs="+", default=["post_training", "pre_training", "in_training"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the studies here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    try:
        report = fault_injection(workdir, kills=args.kills, seed=args.seed, models=args.models, methods=args.methods,
                                 epochs=args.epochs, log=log)  # fmt: skip
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for line in log:
        print(line)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    ok = report["runs_lost"] == 0 and not report["partial_files_left"] and report["final_exit_status"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
