"""Training speed on this machine's CPU (issue 6). Run by hand, not in CI.

Three measurements, each side by side in one process (the variants alternate epoch by epoch, so drift
in the machine's load hits both alike; medians of the repeats; ``time.perf_counter``; fixed thread
count; BloodMNIST-sized data: 3 x 32 x 32 images, BloodMNIST's 28 px padded, 8 classes, batch 64):

(a) **the project's loop against a minimal loop.** One epoch of :func:`helpers.train.train_one_epoch`
    with the ``dense`` method's hooks against a minimal dense PyTorch loop over the same in-memory
    tensors (seeded ``randperm`` batches, fused Adam, ``zero_grad(set_to_none=True)``, no metrics,
    no per-step synchronisation), each on its own copy of the same initial model.
(b) **compacted against masked training, ``pre_training`` / ``mixed``.** The project's loop on the
    masked full network against the same loop on its compacted twin
    (:class:`helpers.pruning.CompactedTraining`, the study's default ``training_form: compacted``);
    the one-time compaction (:meth:`helpers.pruning.CompactedTraining.build`) is timed separately.
(c) **per-epoch compaction for ``in_training`` and ``set``, ``mixed``.** Their masks change every
    epoch, so a compacted form would rebuild the small network after every swap. Measured: the
    masked epoch, the compacted epoch, and the rebuild (compaction with its map, plus writing the
    weights back), projected to BloodMNIST's real epoch of 11 959 images (187 steps); the form wins
    where rebuild + compacted epoch < masked epoch.

``--update-readme`` rewrites the tables between the ``bench_training`` markers in
``benchmarks/README.md``, so the README's figures are always the last run's.

Usage::

    .venv/bin/python benchmarks/bench_training.py [--models resnet18 vgg16] [--threads 2] \\
        [--images 640] [--repeats 9] [--json bench_training.json] [--update-readme]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers import pruning
from helpers.models import build_model
from helpers.train import make_optimizer, train_one_epoch

NUM_CLASSES = 8  # BloodMNIST
BLOODMNIST_TRAIN = 11_959
README = Path(__file__).with_name("README.md")
START, END = "<!-- bench_training:start -->", "<!-- bench_training:end -->"


def make_data(images: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(images, 3, 32, 32, generator=gen), torch.randint(0, NUM_CLASSES, (images,), generator=gen)


def reference_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int, generator: torch.Generator) -> None:  # fmt: skip
    """The minimal dense loop: what a careful PyTorch user writes, nothing more."""
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    for start in range(0, x.shape[0], batch_size):
        idx = order[start : start + batch_size]
        if idx.numel() < 2:
            continue
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def project_epoch(model, optimizer, hooks, x, y, batch_size, generator) -> None:
    train_one_epoch(model, optimizer, hooks, x, y, batch_size=batch_size, num_classes=NUM_CLASSES,
                    generator=generator)  # fmt: skip


def alternate(variants: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Run each variant's epoch ``warmup`` times, then ``repeats`` rounds in alternating order."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of the two epochs run back to back in that round.

    This machine's speed drifts by 30 % and more within minutes (other tenants); a ratio of two
    adjacent epochs cancels the drift that a ratio of medians keeps.
    """
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def loop_overhead(name: str, x, y, batch_size: int, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    base = build_model(name, NUM_CLASSES)
    ref_model, proj_model = copy.deepcopy(base), copy.deepcopy(base)  # alike in memory placement too
    del base
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=1e-4, fused=True)
    proj_opt = make_optimizer("adam", proj_model, lr=1e-4)
    dense = pruning.make_method("dense", None)
    gen = torch.Generator().manual_seed(1)
    times = alternate({
        "reference": lambda: reference_epoch(ref_model, ref_opt, x, y, batch_size, gen),
        "project": lambda: project_epoch(proj_model, proj_opt, dense, x, y, batch_size, gen),
    }, repeats, warmup)  # fmt: skip
    ref, proj = statistics.median(times["reference"]), statistics.median(times["project"])
    return {"model": name, "images": x.shape[0], "batch_size": batch_size, "reference_s": ref, "project_s": proj,
            "ratio": paired_ratio(times["project"], times["reference"]), "ratio_of_medians": proj / ref,
            "reference_all": times["reference"], "project_all": times["project"]}  # fmt: skip


def side_by_side(name: str, method_name: str, x, y, batch_size: int, repeats: int, warmup: int) -> dict:
    """The method's masked network and its compacted twin, each trained by the project's loop, alternating."""
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES)
    method = pruning.make_method(method_name, "mixed", seed=0)
    method.on_init(model)
    make = functools.partial(make_optimizer, "adam", lr=1e-4)
    small_full = copy.deepcopy(model)  # compact the copy: the masked model trains on its own
    form = pruning.CompactedTraining(copy.deepcopy(method), x[:2], make)
    opt_full = make(small_full)
    start = time.perf_counter()
    small, opt_small, hooks = form.build(small_full, opt_full)
    compaction = time.perf_counter() - start
    opt_masked = make(model)
    gen = torch.Generator().manual_seed(1)
    times = alternate({
        "masked": lambda: project_epoch(model, opt_masked, method, x, y, batch_size, gen),
        "compacted": lambda: project_epoch(small, opt_small, hooks, x, y, batch_size, gen),
    }, repeats, warmup)  # fmt: skip
    return {"model": model, "method": method, "small": small, "small_full": small_full, "hooks": hooks,
            "form": form, "opt_full": opt_full, "opt_small": opt_small, "compaction_s": compaction,
            "times": times}  # fmt: skip


def compacted_vs_masked(name: str, x, y, batch_size: int, repeats: int, warmup: int) -> dict:
    run = side_by_side(name, "pre_training", x, y, batch_size, repeats, warmup)
    model, small, times = run["model"], run["small"], run["times"]
    start = time.perf_counter()
    run["form"].write_back(run["small_full"], run["opt_full"], small, run["opt_small"], run["hooks"])
    expand = time.perf_counter() - start
    masked, compacted = statistics.median(times["masked"]), statistics.median(times["compacted"])
    example = x[:1]
    return {
        "model": name, "images": x.shape[0], "batch_size": batch_size, "masked_s": masked, "compacted_s": compacted,
        "speedup": paired_ratio(times["masked"], times["compacted"]), "compaction_s": run["compaction_s"],
        "expand_s": expand, "params_masked": sum(p.numel() for p in model.parameters()),
        "params_compacted": sum(p.numel() for p in small.parameters()),
        "macs_masked": pruning.count_macs(model, example), "macs_compacted": pruning.count_macs(small, example),
        "masked_all": times["masked"], "compacted_all": times["compacted"],
    }  # fmt: skip


def per_epoch_compaction(name: str, method_name: str, x, y, batch_size: int, repeats: int, warmup: int) -> dict:
    run = side_by_side(name, method_name, x, y, batch_size, repeats, warmup)
    model, method, times = run["model"], run["method"], run["times"]
    rebuilds = []
    for _ in range(max(2, repeats // 2)):  # the per-epoch cost: compact with the map, write back
        start = time.perf_counter()
        again, again_map = pruning.compact_with_map(model, x[:2], masks=method.masks)
        again_map.expand_into(run["small_full"], again)
        rebuilds.append(time.perf_counter() - start)
    steps = x.shape[0] // batch_size
    full_steps = BLOODMNIST_TRAIN // batch_size
    masked, compacted, rebuild = (statistics.median(times["masked"]), statistics.median(times["compacted"]),
                                  statistics.median(rebuilds))  # fmt: skip
    masked_epoch = masked / steps * full_steps
    compacted_epoch = compacted / steps * full_steps + rebuild
    return {
        "model": name, "method": method_name, "images": x.shape[0], "masked_s": masked, "compacted_s": compacted,
        "rebuild_s": rebuild, "conv_filter_sparsity": pruning.summarize_sparsity(model)["conv_filter_sparsity"],
        "bloodmnist_masked_epoch_s": masked_epoch, "bloodmnist_compacted_epoch_s": compacted_epoch,
        "speedup": masked_epoch / compacted_epoch,
    }  # fmt: skip


def hardware(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {cores} cores usable, torch {torch.__version__}, {threads} torch threads, "
            f"load average {load:.1f} at the start")  # fmt: skip


def tables(result: dict) -> str:
    a = ["| model | images / epoch | minimal loop (s) | project loop (s) | ratio, paired (target <= 1.10) | "
         "ratio of medians |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["loop"]:
        a.append(f"| {r['model']} | {r['images']} | {r['reference_s']:.2f} | {r['project_s']:.2f} | "
                 f"**{r['ratio']:.3f}** | {r['ratio_of_medians']:.3f} |")  # fmt: skip
    b = ["| model | masked epoch (s) | compacted epoch (s) | speedup (target >= 2) | compaction, once (s) | "
         "write-back, once (s) | params masked -> compacted | MACs / image masked -> compacted |",
         "|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for r in result["compacted"]:
        b.append(
            f"| {r['model']} | {r['masked_s']:.2f} | {r['compacted_s']:.2f} | **{r['speedup']:.2f} x** | "
            f"{r['compaction_s']:.1f} | {r['expand_s']:.2f} | {r['params_masked'] / 1e6:.1f} M -> "
            f"{r['params_compacted'] / 1e6:.1f} M | {r['macs_masked'] / 1e6:.0f} M -> {r['macs_compacted'] / 1e6:.0f} M |"
        )
    c = ["| model | method | conv filters removed | masked epoch (s) | compacted epoch (s) | rebuild per epoch (s) | "
         "BloodMNIST epoch masked (s) | BloodMNIST epoch compacted + rebuild (s) | speedup |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["per_epoch"]:
        c.append(
            f"| {r['model']} | {r['method']} | {r['conv_filter_sparsity']:.2f} | {r['masked_s']:.2f} | "
            f"{r['compacted_s']:.2f} | {r['rebuild_s']:.1f} | {r['bloodmnist_masked_epoch_s']:.0f} | "
            f"{r['bloodmnist_compacted_epoch_s']:.0f} | {r['speedup']:.2f} x |"
        )
    return "\n".join([
        f"Measured {result['date']} on {result['hardware']}; batch {result['batch_size']}, "
        f"{result['images']} images per epoch, medians of {result['repeats']} alternating epochs after "
        f"{result['warmup']} warm-up epoch(s) ((c): {result['per_epoch_repeats']}); ratios and speedups are "
        f"medians of the per-round ratios of back-to-back epochs. Command: `{result['command']}`.",
        "", "**(a) The project's training loop against a minimal PyTorch loop** (dense, fused Adam):", "", *a,
        "", "**(b) `pre_training` / `mixed`: compacted against masked training** (the project's loop both):", "", *b,
        "", "**(c) `in_training` and `set` / `mixed`: compacting after every swap** (rebuild = compaction with its "
        "map + weight write-back, without the optimizer-state transfer; BloodMNIST epoch = 187 steps, projected from the measured steps):", "", *c,
    ])  # fmt: skip


def update_readme(text: str) -> None:
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{README} lacks the markers {START} / {END}; add them where the tables belong")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=640, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sections", nargs="+", default=["loop", "compacted", "per_epoch"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = make_data(args.images)
    result = {
        "date": time.strftime("%Y-%m-%d"), "hardware": hardware(args.threads), "batch_size": args.batch_size,
        "images": args.images, "repeats": args.repeats, "warmup": args.warmup,
        "per_epoch_repeats": max(3, args.repeats // 3),
        "command": "make benchmarks" if os.environ.get("MAKE_BENCHMARKS") else
        " ".join([".venv/bin/python benchmarks/bench_training.py", *sys.argv[1:]]),
        "loop": [], "compacted": [], "per_epoch": [],
    }  # fmt: skip
    for name in args.models:
        if "loop" in args.sections:
            r = loop_overhead(name, x, y, args.batch_size, args.repeats, args.warmup)
            print(f"(a) {name}: minimal {r['reference_s']:.2f} s, project {r['project_s']:.2f} s, ratio {r['ratio']:.3f}", flush=True)
            result["loop"].append(r)
        if "compacted" in args.sections:
            r = compacted_vs_masked(name, x, y, args.batch_size, args.repeats, args.warmup)
            print(f"(b) {name}: masked {r['masked_s']:.2f} s, compacted {r['compacted_s']:.2f} s, "
                  f"speedup {r['speedup']:.2f} x (compaction {r['compaction_s']:.1f} s)", flush=True)  # fmt: skip
            result["compacted"].append(r)
        if "per_epoch" in args.sections:
            for method in ("in_training", "set"):
                r = per_epoch_compaction(name, method, x, y, args.batch_size, result["per_epoch_repeats"], args.warmup)
                print(f"(c) {name} {method}: BloodMNIST epoch masked {r['bloodmnist_masked_epoch_s']:.0f} s, "
                      f"compacted + rebuild {r['bloodmnist_compacted_epoch_s']:.0f} s", flush=True)  # fmt: skip
                result["per_epoch"].append(r)
    text = tables(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.update_readme:
        update_readme(text)


if __name__ == "__main__":
    main()
