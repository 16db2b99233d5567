"""JPEG datasets decoded once (VisA, MVTec): images resized in worker threads, written chunk by chunk into
a ``.npy`` cache keyed by the image list, file sizes and the size, and split without holding them all."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from helpers.data import fetch
from helpers.files import FILE_MODE
from helpers.data.splits import (
    ChecksumError,
    DiskImages,
    Split,
    _apply_split_subsets,
    hwc_to_tensor,
    _take,
)

log = logging.getLogger(__name__)


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _decode_one(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale first (much faster)
        rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(rgb, dtype=np.uint8)


def _decode_images(
    paths: Sequence[Path],
    size: int,
    *,
    cache: bool,
    cache_dir: str | Path | None,
    key_prefix: str,
    workers: int | None,
    on_disk: bool = False,
) -> torch.Tensor | DiskImages:
    """Decode and resize RGB images to uint8 ``N x 3 x size x size``, cached on disk.

    The cache (a ``.npy`` of ``N x size x size x 3``, written chunk by chunk and renamed into place when
    complete) is keyed by every path, its size and modification time, and ``size``, so it is never stale.
    With ``on_disk`` the result is a :class:`DiskImages` view of that file (without ``cache``, a temporary
    file removed once open); otherwise a tensor in memory.
    """
    h = hashlib.sha256(f"{size}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    cache_name = f"{key_prefix}-{size}px-{len(paths)}-{h.hexdigest()[:20]}.npy"
    folder = Path(cache_dir or fetch.default_cache_dir())
    cache_file = folder / cache_name
    shape = (len(paths), size, size, 3)
    if cache and cache_file.is_file():
        try:
            arr = np.load(cache_file, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return DiskImages(cache_file) if on_disk else hwc_to_tensor(np.array(arr))
        except Exception:  # an unreadable cache is rebuilt
            log.warning("ignoring unreadable cache %s", cache_file)
    if not cache and not on_disk:
        arr = np.empty(shape, dtype=np.uint8)
        def keep(start: int, chunk: np.ndarray) -> None:
            arr[start : start + len(chunk)] = chunk

        _decode_into(paths, size, workers, key_prefix, keep)
        return hwc_to_tensor(arr)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{cache_name}.", suffix=".part", dir=folder)
    except OSError as exc:
        if on_disk:
            raise OSError(f"cannot write the decoded-image file for {key_prefix} in {folder}: {exc}; set cache_dir "
                          "or $PRUNING_STUDY_CACHE to a writable folder") from exc
        log.warning("could not write cache in %s: %s", folder, exc)  # a read-only cache location only costs speed
        return _decode_images(paths, size, cache=False, cache_dir=None, key_prefix=key_prefix, workers=workers)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            header = np.lib.format.header_data_from_array_1_0(np.empty((0, size, size, 3), dtype=np.uint8))
            header["shape"] = shape
            np.lib.format.write_array_header_1_0(f, header)
            _decode_into(paths, size, workers, key_prefix, lambda start, chunk: f.write(chunk.tobytes()))
        if cache:
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, cache_file)
            tmp = cache_file
        if on_disk:
            return DiskImages(tmp, unlink=not cache)  # a temporary file lives as long as its descriptor
        return hwc_to_tensor(np.load(tmp))
    finally:
        if not cache:
            tmp.unlink(missing_ok=True)


_DECODE_CHUNK = 512  # images decoded between two writes: bounds the memory of decoding


def _decode_into(
    paths: Sequence[Path], size: int, workers: int | None, what: str, write: Callable[[int, np.ndarray], Any]
) -> None:
    """Decode ``paths`` in order, handing ``write(start, chunk)`` one uint8 ``n x H x W x 3`` chunk at a time."""
    n_workers = workers or min(8, os.cpu_count() or 1)
    chunk = np.empty((min(_DECODE_CHUNK, len(paths)), size, size, 3), dtype=np.uint8)

    def work(job: tuple[int, int]) -> None:
        i, start = job
        try:
            chunk[i - start] = _decode_one(paths[i], size)
        except (OSError, ValueError) as exc:
            raise ChecksumError(f"cannot decode image {paths[i]}: {exc}; the file is corrupt") from exc

    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 and len(paths) >= 64 else None
    try:
        with fetch.progress(len(paths), f"decoding {what}", unit="img") as bar:
            for start in range(0, len(paths), _DECODE_CHUNK):
                stop = min(start + _DECODE_CHUNK, len(paths))
                jobs = [(i, start) for i in range(start, stop)]
                for _ in pool.map(work, jobs) if pool is not None else map(work, jobs):
                    bar.update(1)
                write(start, chunk[: stop - start])
    finally:
        if pool is not None:
            pool.shutdown()


def build_file_splits(
    *,
    paths: Sequence[Path],
    labels: np.ndarray,
    classes: list[str],
    indices: dict[str, np.ndarray],
    size: int,
    seed: int,
    options: Mapping[str, Any],
    key_prefix: str,
    on_disk: bool = False,
) -> dict[str, Split]:
    """Apply per-split subsets, decode only the images used, and assemble the Splits (with ``on_disk``,
    :class:`DiskImages` views of one decoded file). When ``indices["val"] is indices["test"]`` (one held-out
    set serves as both), the returned ``val`` and ``test`` are the same Split, shrunk by ``test_subset``.
    """
    val_is_test = indices["val"] is indices["test"]
    if val_is_test:
        if options.get("val_subset") is not None:
            raise ValueError(
                "val_subset cannot apply here: the validation set is the test set in this protocol; use test_subset"
            )
        indices = {"train": indices["train"], "test": indices["test"]}
    indices = _apply_split_subsets(indices, labels, options, seed)
    used = np.unique(np.concatenate(list(indices.values())))
    images = _decode_images(
        [paths[i] for i in used],
        size,
        cache=bool(options.get("cache", True)),
        cache_dir=options.get("cache_dir"),
        key_prefix=key_prefix,
        workers=options.get("workers"),
        on_disk=on_disk,
    )
    position = np.full(len(paths), -1, dtype=np.int64)
    position[used] = np.arange(len(used))
    y = torch.from_numpy(labels.astype(np.int64))
    out = {
        s: Split(_take(images, position[idx]), y[torch.from_numpy(idx)], list(classes))
        for s, idx in indices.items()
    }
    if val_is_test:
        out["val"] = out["test"]
    return {s: out[s] for s in ("train", "val", "test")}


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
