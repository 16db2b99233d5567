"""Scale-out on Dask (issue 7): wall time of one grid of 8 short runs with 1 and with 2 workers.

Run by hand, not in CI. The grid: digits, ResNet18, ``pre_training`` / ``in_training`` / ``set`` in
the ``uniform`` scenario plus the dense baseline, seeds 0 and 1 (8 runs, no dependencies between
them), a few epochs on a small training subset. Each configuration runs the whole grid into a fresh
folder through :func:`helpers.runner.run_study`, so the wall time includes what a user waits for:
starting the ``LocalCluster`` and its worker processes (torch imports, data loading per worker),
training, testing, inference and collecting the tables. Configurations, each with one torch thread
per run:

- ``local``: the sequential local executor, a fresh process per run (the default; the reference
  without Dask);
- ``local-shared``: the same, all runs in this process (``process_per_run: false``), which shows what
  a process per run costs;
- ``dask-1``: a LocalCluster with 1 worker process;
- ``dask-2``: a LocalCluster with 2 worker processes (one run each at a time).

The order is rotated per repeat so drifting machine load hits every configuration; the load average
is printed before and after. Ratios are paired: in each repeat a configuration's wall time is divided
by ``dask-1``'s of the same repeat (they ran back to back), and the median of those per-repeat ratios
is reported, as ``bench_training.py`` does; this machine's speed drifts by 30 % and more within
minutes, which a ratio of medians keeps and a ratio of adjacent rounds cancels (the ratio of medians
is printed beside it). The issue's target is ``dask-2 <= 0.6 x dask-1`` on 2 cores.

Usage::

    .venv/bin/python benchmarks/bench_dask.py [--epochs 2] [--train-subset 256] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from helpers import runner
from helpers.config import expand_grid, load_params

CONFIGS = {
    "local": "local",
    "local-shared": {"kind": "local", "process_per_run": False},
    "dask-1": {"kind": "dask", "n_workers": 1, "threads_per_worker": 1, "dashboard": False},
    "dask-2": {"kind": "dask", "n_workers": 2, "threads_per_worker": 1, "dashboard": False},
}


def grid(epochs: int, train_subset: int, executor: object, out: Path) -> dict:
    return {
        "name": "bench", "datasets": ["digits"], "models": ["resnet18"],
        "methods": ["pre_training", "in_training", "set"], "scenarios": ["uniform"], "seeds": [0, 1],
        "epochs": epochs, "batch_size": 32, "train_subset": train_subset, "val_subset": 64, "test_subset": 64,
        "threads": 1, "inference": {"samples": 10, "warmup": 2, "threads": 1}, "keep_models": False,
        "executor": executor, "out": str(out),
    }  # fmt: skip


def measure(name: str, epochs: int, train_subset: int, root: Path) -> dict:
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    params = load_params(grid(epochs, train_subset, CONFIGS[name], out))
    start = time.perf_counter()
    study = runner.run_study(params, progress=False)
    wall = time.perf_counter() - start
    runs = pd.read_csv(study / "results" / "runs.csv")
    if len(runs) != len(expand_grid(params)) or not (runs.status == "completed").all():
        raise RuntimeError(f"{name}: grid incomplete: {runs.status.value_counts().to_dict()}")
    return {"config": name, "wall_s": wall, "runs": len(runs), "train_s_sum": float(runs.train_time_s.sum())}


def paired_ratio(rows: list[dict], name: str, reference: str) -> float:
    """Median over repeats of ``name``'s wall time over ``reference``'s in the same repeat (back to back)."""
    walls = {(r["repeat"], r["config"]): r["wall_s"] for r in rows}
    ratios = [walls[(k, name)] / walls[(k, reference)] for k, c in walls if c == name and (k, reference) in walls]
    return statistics.median(ratios) if ratios else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    results = {"cores": len(os.sched_getaffinity(0)), "loadavg_start": os.getloadavg(), "rows": []}
    print(f"load average at start {results['loadavg_start']}")
    with tempfile.TemporaryDirectory(prefix="bench_dask-") as tmp:
        for repeat in range(args.repeats):
            order = args.configs[repeat % len(args.configs):] + args.configs[: repeat % len(args.configs)]
            for name in order:
                row = {"repeat": repeat, **measure(name, args.epochs, args.train_subset, Path(tmp))}
                results["rows"].append(row)
                print(f"repeat {repeat} {name:7s} {row['wall_s']:7.1f} s wall, sum of train_time_s {row['train_s_sum']:.1f} s")
    results["loadavg_end"] = os.getloadavg()
    medians = {
        name: statistics.median(r["wall_s"] for r in results["rows"] if r["config"] == name) for name in args.configs
    }
    results["median_wall_s"] = medians
    reference = "dask-1" if "dask-1" in args.configs else args.configs[0]
    results["paired_ratio_vs"] = reference
    results["paired_ratio"] = {name: paired_ratio(results["rows"], name, reference) for name in args.configs}
    print(f"load average at end {results['loadavg_end']}")
    print(f"\n| configuration | wall time (s), median | vs {reference}, paired | vs {reference}, ratio of medians |")
    print("|---|---:|---:|---:|")
    for name, wall in medians.items():
        print(f"| {name} | {wall:.1f} | {results['paired_ratio'][name]:.2f} x | {wall / medians[reference]:.2f} x |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
