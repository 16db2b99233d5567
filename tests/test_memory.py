"""A run's peak memory is its own: the same run reports the same peak alone and after a large run (issue 18.1).

The local executor gives every run a fresh process (helpers.executors), so a run's CPU peak (the
process's resident memory) cannot carry what an earlier run left in the allocator. The test runs a
small run alone, then after a large one in the same grid, and compares the two figures.

Scaled down from the issue's case (a dense ResNet18 after VGG16 runs, 3.7 GiB): the large run here is
a ``vgg16_mini`` (VGG16's layers at widths / 8) at batch 1,024 on 1,024 images, whose activations raise
its peak by about 45 % and are freed in pieces small enough for glibc's heap to keep. The control shows
that this is enough to tell: with the runs sharing one process (``process_per_run: false``, the old
behaviour) the small run's figure after the large one is more than 5 % above its figure alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import executors, primary
from helpers.config import expand_grid, load_params
from helpers.results import read_json

# vgg16_mini (VGG16's layout at widths / 8): its batches of 1,024 images raise a run's peak by about 45 %
# (measured: 0.58 GB alone, 0.84 GB large) while its model files weigh 8 MB, not ResNet18's 45 MB.
SMALL = {
    "datasets": ["digits"], "models": ["vgg16_mini"], "methods": ["dense"], "epochs": 1, "batch_size": 16,
    "train_subset": 32, "val_subset": 16, "test_subset": 16, "threads": 1, "keep_models": False,
    "inference": {"samples": 1, "warmup": 0, "batch_sizes": [1], "threads": 1},
}  # fmt: skip
LARGE = {**SMALL, "batch_size": 1024, "eval_batch_size": 1024, "train_subset": 1024, "val_subset": 256}


def _peaks(out, name: str, grids: list[dict], process_per_run: bool) -> list[tuple[float, str]]:
    """Run the grids' runs in order with the local executor; each run's (peak_memory_mb, peak_memory_scope)."""
    specs = [spec for grid in grids for spec in expand_grid(load_params({**grid, "name": name, "out": str(out)}))]
    study = out / name
    (study / "runs").mkdir(parents=True)
    statuses = executors.LocalExecutor(process_per_run=process_per_run).run(specs, study, task=primary.KIND, progress=False)
    assert set(statuses.values()) == {"completed"}
    rows = [read_json(study / "runs" / spec.run_id / "result.json") for spec in specs]
    return [(row["peak_memory_mb"], row["peak_memory_scope"]) for row in rows]


@pytest.mark.slow
def test_a_runs_peak_memory_is_the_same_alone_and_after_a_large_run(tmp_path):
    [(alone, scope)] = _peaks(tmp_path, "alone", [SMALL], process_per_run=True)
    (large, _), (after, scope_after) = _peaks(tmp_path, "after", [LARGE, SMALL], process_per_run=True)
    assert scope == scope_after == "own-process"
    assert large > 1.15 * alone  # the large run is large
    assert abs(after - alone) / alone <= 0.05, (alone, after)

    # control: in one shared process (a fresh one, not pytest's) the same order does carry the large run's leftovers
    code = (
        "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import test_memory as t; from pathlib import Path; "
        "out = Path(sys.argv[2]); print(json.dumps([t._peaks(out, 'shared-alone', [t.SMALL], False), "
        "t._peaks(out, 'shared-after', [t.LARGE, t.SMALL], False)]))"
    )
    paths = json.dumps([str(Path(__file__).parent), *sys.path])
    command = [sys.executable, "-c", code, paths, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    [[(shared_alone, shared_scope)], [_, (shared_after, _)]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert shared_scope == "shared-process"
    assert shared_after > 1.05 * shared_alone, (shared_alone, shared_after)
