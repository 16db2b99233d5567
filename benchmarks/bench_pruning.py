"""Pruning overhead and compaction speed on this machine's CPU (issue 3). Run by hand, not in CI.

Measures, in one process and side by side (several alternating rounds after warm-up, ``time.perf_counter``,
``torch.set_num_threads(2)`` by default, 32 x 32 inputs like padded BloodMNIST). Every ratio (overhead,
speedup) is paired, as in ``bench_training.py``: the median over rounds of the ratio of the two
variants timed back to back in that round, which cancels this machine's drift in speed that a ratio of
medians keeps; the medians themselves are reported beside it:

(a) the per-step training overhead of masking: a dense training step (zero_grad, forward, backward,
    fused Adam step) against the same step followed by ``method.after_step`` (the mask re-applied
    with one ``torch._foreach_mul_``), at batch 64; dense and masked steps alternate so drift in the
    machine's load hits both alike. ``after_step`` is also timed on its own, with float masks (what
    the library uses) and with bool masks, which is how the mask dtype was chosen;
(b) inference of the masked model against its compacted twin (``helpers.pruning.compact``) for the
    ``mixed`` scenario at batch 1 and 64, next to the ratio of their MACs;
(c) the first linear layer of the compacted VGG16 (80 % unstructured sparsity) as a dense matmul
    against ``torch.sparse`` CSR, the check behind keeping linear sparsity as zeros.

Usage::

    .venv/bin/python benchmarks/bench_pruning.py [--models resnet18 vgg16] [--threads 2] [--repeats 7]
    .venv/bin/python benchmarks/bench_pruning.py --models resnet18 --repeats 3 --warmup 1 --train-batch 8  # short
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from helpers.models import build_model
from helpers.pruning import compact, count_macs, make_method
from torch.fx.experimental.optimization import fuse

from helpers.measure import choose_memory_format

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

NUM_CLASSES = 8  # BloodMNIST


def median_time(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the ratio of the two timings taken back to back in that round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each call per round, the variants timed back to back in every round (order swapped each round)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def training_overhead(name: str, batch_size: int, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).train()
    method = make_method("in_training", "mixed")
    method.on_init(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch_size, 3, 32, 32)
    y = torch.randint(0, NUM_CLASSES, (batch_size,))

    def step(masked: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if masked:
            method.after_step(model, optimizer)

    for _ in range(warmup):
        step(True)
    dense, masked = [], []
    for _ in range(repeats):  # alternate, so load drift is shared
        for flag, sink in ((False, dense), (True, masked)):
            start = time.perf_counter()
            step(flag)
            sink.append(time.perf_counter() - start)
    mask_only = median_time(lambda: method.after_step(model, optimizer), repeats=max(repeats, 15), warmup=3)
    masks = method.masks
    params, floats = masks._params, masks._factors
    bools = [f.bool() for f in floats]
    with torch.no_grad():
        bool_only = median_time(lambda: torch._foreach_mul_(params, bools), repeats=max(repeats, 15), warmup=3)
    dense_ms, masked_ms = statistics.median(dense) * 1e3, statistics.median(masked) * 1e3
    return {
        "model": name,
        "batch_size": batch_size,
        "dense_step_ms": dense_ms,
        "masked_step_ms": masked_ms,
        "overhead_pct_steps": 100 * (paired_ratio(masked, dense) - 1),
        "overhead_pct_steps_of_medians": 100 * (masked_ms - dense_ms) / dense_ms,
        "dense_step_min_ms": min(dense) * 1e3,
        "masked_step_min_ms": min(masked) * 1e3,
        "after_step_ms": mask_only * 1e3,
        "overhead_pct_after_step": 100 * mask_only * 1e3 / dense_ms,
        "after_step_bool_mask_ms": bool_only * 1e3,
        "masked_params": sum(p.numel() for p in params),
    }


def inference(name: str, scenario: str, batch_sizes: list[int], repeats: int, warmup: int) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES)
    method = make_method("pre_training", scenario)
    method.on_init(model)
    model.eval()
    example = torch.randn(2, 3, 32, 32)
    small = compact(model, example).eval()
    macs, small_macs = count_macs(model, example[:1]), count_macs(small, example[:1])
    # deployment form for both variants alike: eval-mode BatchNorm folded into the conv before it
    # (exact for removed filters: their gamma and beta are 0, so the folded weight and bias are 0)
    model, small = fuse(model), fuse(small)
    rows = []
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, 3, 32, 32)
        # each variant in its faster layout on this CPU, as the study's inference step runs it
        layouts = {"masked": choose_memory_format(model, x), "compacted": choose_memory_format(small, x)}
        inputs = {v: x.contiguous(memory_format=FORMATS[layouts[v]]) for v in layouts}
        with torch.inference_mode():
            # interleave the two variants' repeats
            times = {"masked": [], "compacted": []}
            for variant, net in (("masked", model), ("compacted", small)):
                for _ in range(warmup):
                    net(inputs[variant])
            for _ in range(repeats):
                for variant, net in (("masked", model), ("compacted", small)):
                    start = time.perf_counter()
                    net(inputs[variant])
                    times[variant].append(time.perf_counter() - start)
        masked_ms = statistics.median(times["masked"]) * 1e3
        small_ms = statistics.median(times["compacted"]) * 1e3
        speedup = paired_ratio(times["masked"], times["compacted"])
        rows.append({
            "model": name,
            "scenario": scenario,
            "batch_size": batch_size,
            "masked_layout": layouts["masked"],
            "compacted_layout": layouts["compacted"],
            "masked_ms": masked_ms,
            "compacted_ms": small_ms,
            "speedup": speedup,
            "speedup_of_medians": masked_ms / small_ms,
            "macs_masked": macs,
            "macs_compacted": small_macs,
            "macs_ratio": macs / small_macs,
            "speedup_over_macs_ratio": speedup / (macs / small_macs),
            "params_masked": sum(p.numel() for p in model.parameters()),
            "params_compacted": sum(p.numel() for p in small.parameters()),
        })
    return rows


def sparse_linear(batch_sizes: list[int], repeats: int, warmup: int) -> list[dict]:
    """VGG16's first linear layer after `mixed` compaction: 256 * 49 inputs, 4096 outputs, 80 % zeros."""
    torch.manual_seed(0)
    weight = torch.randn(4096, 256 * 49)
    weight[torch.rand_like(weight) < 0.8] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        csr = weight.to_sparse_csr()
    rows = []
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, 256 * 49)
        with torch.inference_mode():
            times = alternate({"dense": lambda: x @ weight.T, "csr": lambda: (csr @ x.T).T}, repeats, warmup)
        dense, sparse = statistics.median(times["dense"]), statistics.median(times["csr"])
        rows.append({
            "batch_size": batch_size, "dense_ms": dense * 1e3, "csr_ms": sparse * 1e3,
            "csr_speedup": paired_ratio(times["dense"], times["csr"]), "csr_speedup_of_medians": dense / sparse,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # the load average tells whether other processes shared the CPU during the run
    results = {"threads": args.threads, "torch": torch.__version__, "loadavg_start": os.getloadavg(),
               "training": [], "inference": [], "sparse_linear": []}
    for name in args.models:
        row = training_overhead(name, args.train_batch, args.repeats, args.warmup)
        results["training"].append(row)
        print(f"[train] {name}: dense {row['dense_step_ms']:.0f} ms, masked {row['masked_step_ms']:.0f} ms "
              f"({row['overhead_pct_steps']:+.1f} %; min {row['dense_step_min_ms']:.0f} vs {row['masked_step_min_ms']:.0f} ms), after_step {row['after_step_ms']:.1f} ms "
              f"({row['overhead_pct_after_step']:.2f} %), bool masks {row['after_step_bool_mask_ms']:.1f} ms", flush=True)
    for name in args.models:
        for row in inference(name, args.scenario, [1, 64], args.repeats, args.warmup):
            results["inference"].append(row)
            print(f"[infer] {name} b{row['batch_size']}: masked {row['masked_ms']:.1f} ms, compacted "
                  f"{row['compacted_ms']:.1f} ms ({row['masked_layout']} / {row['compacted_layout']}), speedup {row['speedup']:.2f} x, MACs ratio {row['macs_ratio']:.2f} "
                  f"-> {row['speedup_over_macs_ratio']:.2f} of it", flush=True)
    for row in sparse_linear([1, 64], args.repeats, args.warmup):
        results["sparse_linear"].append(row)
        print(f"[csr] b{row['batch_size']}: dense {row['dense_ms']:.2f} ms, csr {row['csr_ms']:.2f} ms "
              f"({row['csr_speedup']:.2f} x)", flush=True)
    results["loadavg_end"] = os.getloadavg()
    print(f"load average at start {results['loadavg_start']}, at end {results['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
