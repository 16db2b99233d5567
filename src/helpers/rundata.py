"""A run's data: its dataset's splits, prepared for its model (normalised, padded, in memory or streamed)
and cached per process, and the checks a study makes before anything is written (device, datasets).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import psutil
import torch

from helpers import data as data_mod
from helpers.data import check_stream
from helpers.models import min_input_size
from helpers.params import ParamsError, RunSpec
from helpers.train import Data
from helpers.transforms import StreamedImages, channel_stats, prepare_images, prepared_shape

__all__ = [
    "STREAM_MEMORY_FRACTION",
    "prepare_data",
    "load_splits_cached",
    "split_key",
    "check_device_available",
    "check_datasets",
]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def load_splits_cached(dataset: str, key: str) -> dict[str, Any]:
    """The dataset's splits; the decoded JPEG datasets stay on disk (``DiskImages``, read by batch or chunk)."""
    opts = json.loads(key)
    return data_mod.load_splits(
        dataset,
        root=opts["data_root"],
        size=opts["image_size"],
        seed=opts["data_seed"],
        download=True,
        on_disk=data_mod.dataset_reader(dataset) in data_mod.ON_DISK_READERS,
        train_subset=opts["train_subset"],
        val_subset=opts["val_subset"],
        test_subset=opts["test_subset"],
        **opts["dataset_options"],
    )


def split_key(run: Mapping[str, Any]) -> str:
    keys = ("data_root", "image_size", "data_seed", "train_subset", "val_subset", "test_subset", "dataset_options")
    return json.dumps({k: run[k] for k in keys}, sort_keys=True)


#: ``stream: auto`` streams when the prepared float32 splits would take more than this fraction of the
#: memory available now (and, for a CUDA device, of the device's memory).
STREAM_MEMORY_FRACTION = 0.5


def _available_memory_bytes(device: str) -> float:
    """The memory prepared tensors may use: the host's available memory, and the device's on CUDA."""
    limit = float(psutil.virtual_memory().available)
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        limit = min(limit, float(torch.cuda.get_device_properties(index).total_memory))
    return limit


def _streams(splits: Mapping[str, Any], min_size: int, stream: Any, device: str) -> bool:
    """Whether the run streams its batches (``stream``; ``auto``: see :data:`STREAM_MEMORY_FRACTION`)."""
    stream = check_stream(stream)
    if stream != "auto":
        return bool(stream)
    distinct = {id(split): split for split in splits.values()}.values()  # val may be test (VisA paper)
    nbytes = sum(4 * math.prod(prepared_shape(split.images.shape, min_size)) for split in distinct)
    return nbytes > STREAM_MEMORY_FRACTION * _available_memory_bytes(device)


@functools.lru_cache(maxsize=4)
def _prepared(dataset: str, key: str, min_size: int, stream: bool = False) -> Data:
    splits = load_splits_cached(dataset, key)
    mean, std = channel_stats(splits["train"].images)
    prep: dict[int, Any] = {}
    for split in splits.values():  # once per distinct split (VisA's paper protocol: val is test)
        if id(split) not in prep:
            make = StreamedImages if stream else prepare_images
            prep[id(split)] = make(split.images, min_size=min_size, mean=mean, std=std)
    x = {name: prep[id(split)] for name, split in splits.items()}
    return Data(
        train_x=x["train"], train_y=splits["train"].labels.long(),
        val_x=x["val"], val_y=splits["val"].labels.long(),
        test_x=x["test"], test_y=splits["test"].labels.long(),
        num_classes=len(splits["train"].classes),
    )  # fmt: skip


def prepare_data(spec: RunSpec) -> Data:
    """The run's splits on the CPU, normalised with the training split's channel statistics and padded
    to the model's minimum input (cached per process).

    Float tensors in memory, or (data too large for that, e.g. full MVTec)
    :class:`helpers.transforms.StreamedImages`, which prepare each batch from the uint8 rows when read, so
    memory does not grow with the images; same values batch for batch. The dataset option ``stream``
    chooses: ``auto`` (default; see :data:`STREAM_MEMORY_FRACTION`), ``true`` or ``false``.
    """
    key, min_size = split_key(spec.params), min_input_size(spec.model)
    option = spec.params["dataset_options"].get("stream", "auto")
    stream = _streams(load_splits_cached(spec.dataset, key), min_size, option, spec.params["device"])
    if stream:
        log.info("%s: streaming batches from the %s images on disk", spec.run_id, spec.dataset)
    return _prepared(spec.dataset, key, min_size, stream)


def check_device_available(device: str) -> None:
    """Raise :class:`ParamsError` when ``device`` (``cpu``, ``cuda`` or ``cuda:N``) is not on this machine."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ParamsError(
                f"device {device!r} is not available on this machine (CUDA devices: "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); use --set device=cpu"
            )


def check_datasets(specs: Iterable[RunSpec]) -> None:
    """Load every distinct dataset split of ``specs`` (downloading where allowed), before anything is written;
    ParamsError names a dataset that cannot be loaded and why."""
    seen = set()
    for spec in specs:
        key = (spec.dataset, split_key(spec.params))
        if key in seen:
            continue
        seen.add(key)
        try:
            load_splits_cached(*key)
        except (OSError, ValueError, TypeError) as exc:
            raise ParamsError(f"dataset {spec.dataset!r} cannot be loaded: {' '.join(str(exc).split())}") from None
