"""What a loaded dataset is and how it is carved: :class:`Split`, :class:`DiskImages`, the errors of
``helpers.data``, deterministic stratified splits and subsets, and the checks and resizing readers share."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.transforms import resize_images


class UnknownDatasetError(ValueError):
    """A dataset name that is not one of :data:`DATASETS`."""


class UnknownOptionError(TypeError, ValueError):
    """An option that the chosen dataset does not accept (a ``TypeError`` like an unexpected keyword,
    and a ``ValueError`` like every other bad-input error of this module)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for and could not be downloaded."""


class ChecksumError(ValueError):
    """A dataset file is corrupt or is not the official file (wrong MD5); it is not used."""


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class DiskImages:
    """Rows of the decoded-image cache on disk (a ``.npy`` of uint8 ``M x H x W x C``), seen as a uint8
    ``N x C x H x W`` batch.

    Nothing is read until rows are asked for: indexing with an int, a slice, or an index array / tensor
    returns those images as a contiguous uint8 tensor; :meth:`take` returns another view (no copy). So
    a split costs its row index (8 bytes an image) until a batch is read.

    Rows are read with ``pread`` (one call per run of consecutive rows), not through a memory map: the
    page cache keeps what was read, and resident memory holds only the batch. A memory map counts every
    page it touched as resident; a kernel that maps whole large folios on a fault (Linux 6.18 on ext4
    here) mapped 42 MB of a 61 MB cache file for one batch of 256 random rows.

    ``rows``: which rows of the ``.npy`` file at ``path`` this view holds, in order (default: all);
    ``unlink``: remove the file once it is open (a temporary file, kept alive by the open descriptor).
    """

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")

    def __init__(self, path: str | Path, rows: np.ndarray | None = None, *, unlink: bool = False) -> None:
        header = np.load(path, mmap_mode="r")
        if header.dtype != np.uint8 or header.ndim != 4 or not header.flags.c_contiguous:
            raise ValueError(
                f"{path} must hold uint8 images M x H x W x C in C order, got {header.dtype} {header.shape}"
            )
        self.path = Path(path)
        self.file_shape, self.offset = tuple(header.shape), int(header.offset)
        del header
        self._file = _OpenFile(self.path)
        if unlink:
            self.path.unlink(missing_ok=True)
        self.rows = np.arange(self.file_shape[0], dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    @property
    def shape(self) -> torch.Size:
        """``(N, C, H, W)``."""
        _, h, w, c = self.file_shape
        return torch.Size((len(self.rows), c, h, w))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "DiskImages":
        """A view of the given rows of this view (no image is read)."""
        view = DiskImages.__new__(DiskImages)
        view.path, view.file_shape, view.offset, view._file = self.path, self.file_shape, self.offset, self._file
        view.rows = self.rows[_as_index_array(indices)]
        return view

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[[int(index) + (len(self) if index < 0 else 0)]][0]
        rows = self.rows[index] if isinstance(index, slice) else self.rows[_as_index_array(index)]
        out = np.empty((len(rows), *self.file_shape[1:]), dtype=np.uint8)
        row_bytes = out[0].nbytes if len(rows) else 0
        start = 0
        while start < len(rows):  # one read per run of consecutive rows
            stop = start + 1
            while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            self._file.read_into(out[start:stop], self.offset + int(rows[start]) * row_bytes)
            start = stop
        return torch.from_numpy(out.transpose(0, 3, 1, 2).copy())

    def materialize(self) -> torch.Tensor:
        """Every image of the view as one in-memory uint8 tensor ``N x C x H x W``."""
        return self[:]


class _OpenFile:
    """A read-only descriptor shared by the views of one file, closed when the last view goes."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def read_into(self, buffer: np.ndarray, offset: int) -> None:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise ChecksumError(f"decoded-image cache ended early at byte {offset + done}; delete it to rebuild")
            done += got

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (OSError, AttributeError):
            pass


def _as_index_array(indices: Any) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    return np.asarray(indices, dtype=np.int64).reshape(-1)


@dataclass(eq=False)
class Split:
    """One split of a dataset.

    Attributes:
        images: uint8 tensor ``N x C x H x W``, or (loaded with ``on_disk=True``) a :class:`DiskImages`
            view of the decoded cache (same shape; indexing it returns tensors).
        labels: int64 tensor ``N`` with values in ``[0, len(classes))``.
        classes: class names, indexed by label.
    """

    images: torch.Tensor | DiskImages
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, DiskImages) and not (
            isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
        ):
            raise ValueError(f"Split.images must be a uint8 tensor N x C x H x W, got {_describe(self.images)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"Split.labels must be an int64 tensor of shape [N], got {_describe(self.labels)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"Split has {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        self.classes = [str(c) for c in self.classes]
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(
                f"Split labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Image channels ``C``."""
        return int(self.images.shape[1])

    @property
    def on_disk(self) -> bool:
        """Whether the images stay on disk (a :class:`DiskImages` view)."""
        return isinstance(self.images, DiskImages)

    def class_counts(self) -> list[int]:
        """Images per class, indexed by label."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> "Split":
        """A new split with the given rows (same classes; a split on disk stays on disk)."""
        idx = _as_index_array(indices)
        return Split(_take(self.images, idx), self.labels[torch.from_numpy(idx)], list(self.classes))

    def in_memory(self) -> "Split":
        """This split with its images in memory (itself when they already are)."""
        if not self.on_disk:
            return self
        return Split(self.images.materialize(), self.labels, list(self.classes))


def _take(images: torch.Tensor | DiskImages, idx: np.ndarray) -> torch.Tensor | DiskImages:
    """Rows ``idx`` of ``images``: a view of a set on disk, a copy of a tensor."""
    if isinstance(images, DiskImages):
        return images.take(idx)
    return images[torch.from_numpy(np.asarray(idx, dtype=np.int64))]


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one purpose, independent of the others for the same seed."""
    key = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    return np.random.default_rng([int(seed), key])


def _largest_remainder(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (ties to the earlier entry)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum() if w.sum() > 0 else np.zeros_like(w)
    counts = np.floor(exact + 1e-9).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into parts of the given fractions, stratified by label, deterministic for ``seed``.

    Each class is shuffled and its items spread evenly over ``[0, 1)`` (item ``i`` of ``n_c`` at
    ``(i + u_c) / n_c``, ``u_c`` a random offset); all items are ordered by that position and cut into
    parts of exactly the largest-remainder sizes of ``fractions * N``. So every part has its exact share
    and each class is within about one item of its share, even with fewer items than parts.

    Args:
        labels: one label (or stratum id) per item.
        fractions: non-negative fractions summing to 1, one per part.

    Returns:
        One sorted int64 index array per part; together they cover every index exactly once.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 1 or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    y = np.asarray(labels)
    n = len(y)
    rng = _rng(seed, "stratified_split")
    position = np.empty(n, dtype=np.float64)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        position[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    tiebreak = rng.random(n)
    order = np.lexsort((tiebreak, position))
    counts = _largest_remainder(n, fr)
    return [np.sort(part).astype(np.int64) for part in np.split(order, np.cumsum(counts)[:-1])]


def stratified_subset(labels: Sequence[int] | np.ndarray, n: int, seed: int, purpose: str = "subset") -> np.ndarray:
    """Sorted int64 indices of at most ``n`` items (all if ``n`` is not smaller), each class in
    proportion, every class kept while ``n`` allows. ``purpose`` separates the random stream of one
    subset from another's for the same seed."""
    y = np.asarray(labels)
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    rng = _rng(seed, purpose)
    classes, sizes = np.unique(y, return_counts=True)
    quota = _largest_remainder(n, sizes)
    quota = np.minimum(quota, sizes)
    # Keep every class represented when n allows: take from the largest quotas.
    if n >= len(classes):
        for i in np.flatnonzero(quota == 0):
            j = int(np.argmax(quota))
            quota[j] -= 1
            quota[i] += 1
    chosen = []
    for cls, q in zip(classes, quota):
        idx = np.flatnonzero(y == cls)
        chosen.append(idx[rng.permutation(len(idx))[:q]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def checked_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 <= value < 1)
    if not ok or (not allow_zero and value == 0):
        low = "0 <=" if allow_zero else "0 <"
        raise ValueError(f"{name} must be a number with {low} {name} < 1, got {value!r}")
    return float(value)


def hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 numpy ``N x H x W [x C]`` to a contiguous uint8 tensor ``N x C x H x W``."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim == 3:
        array = array[:, :, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``N x C x H x W`` images to ``size x size`` (antialiased bilinear), staying uint8."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, images.shape[0], 4096):
        x = resize_images(images[start : start + 4096].to(torch.float32), size)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def subset_indices(labels: np.ndarray, n: int | None, seed: int, purpose: str) -> np.ndarray:
    if n is None:
        return np.arange(len(labels), dtype=np.int64)
    return stratified_subset(labels, n, seed, purpose)


def _apply_split_subsets(
    indices: dict[str, np.ndarray], labels: np.ndarray | Mapping[str, np.ndarray], options: Mapping[str, Any],
    seed: int,
) -> dict[str, np.ndarray]:
    """Shrink each split's index array by ``<split>_subset``; ``indices`` index into ``labels`` (one
    array, or one per split)."""
    out = {}
    for name, idx in indices.items():
        n = options.get(f"{name}_subset")
        y = labels[name] if isinstance(labels, Mapping) else labels
        out[name] = idx if n is None else idx[stratified_subset(y[idx], n, seed, f"{name}_subset")]
    return out


def _shrink_official(
    splits: dict[str, np.ndarray], options: Mapping[str, Any], seed: int
) -> dict[str, np.ndarray]:
    """Index arrays (into each split's own arrays) after ``max_samples`` and ``<split>_subset``.

    ``splits`` maps split name to its labels; ``max_samples`` shrinks every split in proportion to its size.
    """
    total = sum(len(y) for y in splits.values())
    max_samples = options.get("max_samples")
    caps = {}
    if max_samples is not None and max_samples < total:
        counts = _largest_remainder(max_samples, [len(y) for y in splits.values()])
        caps = dict(zip(splits, counts.tolist()))
    pools = {name: subset_indices(y, caps.get(name), seed, f"max_samples_{name}") for name, y in splits.items()}
    return _apply_split_subsets(pools, splits, options, seed)


def split_pool(
    *,
    images: torch.Tensor,
    labels: np.ndarray,
    classes: list[str],
    fractions: Mapping[str, float],
    size: int | None,
    seed: int,
    options: Mapping[str, Any],
) -> dict[str, Split]:
    """Stratified train / val / test split of an in-memory pool, after ``max_samples``."""
    pool = subset_indices(labels, options.get("max_samples"), seed, "max_samples")
    names = list(fractions)
    parts = stratified_split(labels[pool], [fractions[n] for n in names], seed)
    indices = {n: pool[p] for n, p in zip(names, parts)}
    indices = _apply_split_subsets(indices, labels, options, seed)
    if size is not None:
        images = _resize_uint8(images, size)
    y = torch.from_numpy(labels.astype(np.int64))
    return {
        name: Split(_take(images, indices[name]), y[torch.from_numpy(indices[name])], list(classes))
        for name in ("train", "val", "test")
    }
