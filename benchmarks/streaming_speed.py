"""Epoch time of the in-memory path against the streaming path (helpers.transforms.StreamedImages).

Three forms of the same training split, the same model and batch order: prepared float tensors in
memory (today's fast path), streamed from uint8 in memory, streamed from the decoded file on disk
(helpers.data.DiskImages). Prints seconds per epoch (median of ``--repeats``) and the ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/streaming_speed.py --images 2000 --size 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.data import DiskImages
from helpers.pruning import make_method
from helpers.train import make_optimizer, train_one_epoch
from helpers.transforms import StreamedImages, channel_stats, prepare_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    labels = torch.arange(args.images) % 10
    mean, std = channel_stats(images)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, images.permute(0, 2, 3, 1).numpy())
        forms = {
            "in_memory": prepare_images(images, min_size=32, mean=mean, std=std),
            "streamed_uint8_in_memory": StreamedImages(images, min_size=32, mean=mean, std=std),
            "streamed_from_disk": StreamedImages(DiskImages(path), min_size=32, mean=mean, std=std),
        }
        times = {}
        for name, x in forms.items():
            runs = []
            for _ in range(args.repeats):
                torch.manual_seed(0)
                model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(32, 10))  # fmt: skip
                opt = make_optimizer("adam", model, lr=1e-3)
                start = time.perf_counter()
                train_one_epoch(model, opt, make_method("dense", None), x, labels, batch_size=args.batch_size,
                                num_classes=10, generator=torch.Generator().manual_seed(1))  # fmt: skip
                runs.append(time.perf_counter() - start)
            times[name] = statistics.median(runs)
    base = times["in_memory"]
    for name, t in times.items():
        what = f"{args.images} images, {args.size} px, batch {args.batch_size}"
        print(f"{name:26s} {t:7.3f} s/epoch  {t / base:5.2f}x  ({what})")


if __name__ == "__main__":
    main()
