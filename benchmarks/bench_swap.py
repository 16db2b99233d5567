"""One in_training / SET swap over every layer of VGG16 against one optimizer step (issue 13).

Builds torchvision's VGG16 (134 M parameters, 8 classes) masked by a scenario, then times, alternately
so that both see the same machine: one fused Adam step over every parameter (gradients present), and
one swap (``method.on_epoch_end`` with Adam's state reset for the swapped weights). Prints the median of
``--repeats`` for each and their ratio.

    PYTHONPATH=src python benchmarks/bench_swap.py --method in_training --scenario mixed --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helpers.models import build_model
from helpers.pruning import make_method, parse_scenario
from helpers.train import make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--method", default="in_training", choices=["in_training", "set"])
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, 8, 32)
    method = make_method(args.method, parse_scenario(args.scenario), seed=0)
    method.on_init(model)
    optimizer = make_optimizer("adam", model, lr=1e-4)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()  # creates Adam's state, which a swap resets
    steps, swaps = [], []
    for i in range(args.repeats):
        start = time.perf_counter()
        optimizer.step()
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        stats = method.on_epoch_end(model, optimizer, i, args.repeats + 10)  # never the last epoch: it swaps
        swaps.append(time.perf_counter() - start)
    step, swap = statistics.median(steps), statistics.median(swaps)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} ({params / 1e6:.0f} M parameters), {args.method}, {args.scenario}, {args.threads} threads, "
          f"median of {args.repeats}")
    print(f"  fused Adam step: {step:.3f} s")
    print(f"  swap:            {swap:.3f} s  ({stats})")
    print(f"  swap / step:     {swap / step:.1f}")


if __name__ == "__main__":
    main()
