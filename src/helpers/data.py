"""Every dataset of the study as uint8 images, split into train / val / test.

One entry point, :func:`load_splits`, returns ``{"train": Split, "val": Split, "test": Split}``; a
:class:`Split` holds uint8 images ``N x C x H x W``, int64 labels ``N`` and the class names. The
images are a tensor in memory, or, for the decoded JPEG datasets loaded with ``on_disk=True``, a
:class:`DiskImages` view of the decoded ``.npy`` file on disk, which reads only the rows asked for
(the full MVTec set is 100,000 images, 15 GB as uint8). Tensor transforms (normalisation, padding to
the model's minimum input, augmentation, per-batch streaming) live in ``helpers.transforms``.

Datasets (``DATASETS``) and their sources:

- ``bloodmnist``: MedMNIST v2 BloodMNIST (Yang et al., *Scientific Data* 2023; images from Acevedo
  et al. 2020), CC BY 4.0. The official ``.npz`` files and splits (11,959 / 1,712 / 3,421; 8 classes)
  at 28, 64, 128 or 224 px. The file is looked for in ``root``, then ``$MEDMNIST_ROOT``, then
  ``~/.medmnist``; if absent it is downloaded from the URL in ``medmnist.info.INFO`` and, when that host
  is unreachable (28 px only), taken from a wheel on the Python package index that ships the identical
  file. Every file is MD5-verified against medmnist's metadata before use. The npz is read with numpy:
  medmnist's per-item ``Dataset`` is slow and asserts the official counts.
- ``visa``: VisA (Zou et al., *SPot-the-Difference*, ECCV 2022), CC BY 4.0; binary normal / anomaly
  from the extracted archive (``<object>/Data/Images/{Normal,Anomaly}/*.JPG``, ``split_csv/*.csv``),
  resized to ``size x size`` at load (aspect ratio not kept, like torchvision's ``Resize((s, s))``).
  All 12 objects by default; ``objects=[...]`` restricts them.
  ``split="paper"`` (default) is the primary study's protocol (Douzandeh Zenoozi et al. 2025):
  stratified 80 % train / 20 % held out, the held-out part serving as both validation and test. Any
  official split CSV (``split="2cls_highshot"``, ``"2cls_fewshot"``) uses its train / test split; the
  validation set is then a stratified carve of ``val_fraction`` (default 10 %) from its train part, or
  the test set itself with ``val_fraction=0``.
- ``mvtec3d_cls``: the primary study's "MVTec" object classification. Not MVTec 3D-AD (the name is
  kept for existing run ids): the synthetic 10-object set of Schuerrle et al. 2023, rendered from
  objects of MVTec ITODD (Drost et al. 2017) and published on Kaggle (:data:`MVTEC_CLS_OBJECTS`:
  triangular adapter plates, large brackets, small clamps, round and square engine-part coolers,
  injection pumps, screws, stars, tee connectors, threads); 224 x 224 JPEGs with COCO annotations,
  one object per image, whose category is the class. Layout (our reading of the Kaggle archive, which
  could not be checked from here): every COCO JSON up to three folders below ``root`` is read and
  merged (e.g. ``annotations.json`` beside ``images/``, COCO's ``annotations/instances_*.json``
  beside ``images/``, or per-split ``train/ valid/ test/_annotations.coco.json`` beside the JPEGs); an
  image's ``file_name`` is looked up next to its JSON, in that folder's ``images/``, in the folder
  above and its ``images/``, then in ``root`` and ``root/images`` (by its path, then by its base
  name). An image-folder layout (``root/<class>/*.jpg``, optionally under ``train/ valid/ test/``)
  is read too. Whatever split the files come in, the images are pooled and split 70 / 20 / 10
  (train / test / val) as in the paper, stratified for the seed; ``max_samples`` shrinks the pool.
- ``mvtec3d_cls_small``: the same set reduced to BloodMNIST's size, as the paper's second run
  (a :data:`DATASET_VARIANTS` entry: ``mvtec3d_cls`` with ``max_samples: 17092``).
- ``cifar10`` / ``cifar100``: CIFAR (Krizhevsky 2009) read through torchvision; the archive is
  downloaded (to a temporary file, MD5-verified, then renamed) when absent. The validation set is a
  stratified carve of ``val_fraction`` (default 10 %) from the official training set.
- ``digits``: scikit-learn's bundled 8 x 8 handwritten digits (UCI optdigits test set, 1,797 images),
  fully offline: the default for notebook parameter cells and smoke runs. Pixel values 0..16 are
  scaled to 0..255; split 70 / 15 / 15, stratified for the seed.

Common options (every dataset): ``max_samples`` (stratified cap on the whole dataset; with official
splits each split is shrunk in proportion), ``train_subset`` / ``val_subset`` / ``test_subset``
(stratified cap on one split). Subsets keep every class when the cap allows and are deterministic for
the seed. Splits are deterministic for a seed and stratified wherever the source has no official split.

Where data lives: ``root`` if given, else a dataset-specific environment variable
(``$MEDMNIST_ROOT``, ``$VISA_ROOT``, ``$MVTEC3D_CLS_ROOT``, ``$CIFAR_ROOT``), else
``$PRUNING_STUDY_DATA``, else ``~/.cache/pruning-study/data`` (BloodMNIST: ``~/.medmnist``, medmnist's
own default). A folder shared by all datasets works: ``<root>/bloodmnist.npz``, ``<root>/visa/...``,
``<root>/mvtec3d_cls/...``, ``<root>/cifar-10-batches-py``. Decoded, resized JPEG datasets (VisA,
MVTec) are cached as ``.npy`` under ``cache_dir`` (default ``$PRUNING_STUDY_CACHE`` or
``~/.cache/pruning-study/decoded``), keyed by the image list, file sizes and the size; the file is
written chunk by chunk while decoding, so decoding needs memory for one chunk, not for the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DATASET_OPTIONS",
    "DATASET_VARIANTS",
    "RUNNER_OPTIONS",
    "ON_DISK_READERS",
    "MVTEC_CLS_OBJECTS",
    "dataset_reader",
    "check_stream",
    "DiskImages",
    "BLOODMNIST_SIZES",
    "BLOODMNIST_CLASSES",
    "VISA_OBJECTS",
    "Split",
    "load_splits",
    "stratified_split",
    "stratified_subset",
    "file_md5",
    "default_data_root",
    "UnknownDatasetError",
    "UnknownOptionError",
    "DatasetNotFoundError",
    "ChecksumError",
]

log = logging.getLogger(__name__)

#: Named variants of a reader: ``name -> (reader, default options)``. A variant is a dataset entry of
#: its own (its own name in run ids, tables and ``dataset_options``) that reads with ``reader`` and
#: starts from these options (which its ``dataset_options`` may override).
DATASET_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # The paper's second MVTec run: the object set reduced to BloodMNIST's size (11,959 + 1,712 + 3,421).
    "mvtec3d_cls_small": ("mvtec3d_cls", {"max_samples": 17092}),
}

DATASETS: tuple[str, ...] = (
    "bloodmnist", "visa", "mvtec3d_cls", "cifar10", "cifar100", "digits", *DATASET_VARIANTS,
)  # fmt: skip

_COMMON_OPTIONS = ("max_samples", "train_subset", "val_subset", "test_subset")
#: Options of every dataset that the runner reads, not the reader (validated here, otherwise ignored).
#: ``stream``: ``auto`` (default), ``true`` or ``false``; see ``helpers.runner.prepare_data``.
RUNNER_OPTIONS: tuple[str, ...] = ("stream",)
STREAM_CHOICES: tuple[Any, ...] = ("auto", True, False)

#: Options each dataset accepts besides ``root``, ``size``, ``seed``, ``download`` and the common ones.
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "bloodmnist": _COMMON_OPTIONS + RUNNER_OPTIONS,
    "visa": _COMMON_OPTIONS + ("split", "objects", "val_fraction", "cache", "cache_dir", "workers") + RUNNER_OPTIONS,
    "mvtec3d_cls": _COMMON_OPTIONS + ("layout", "cache", "cache_dir", "workers") + RUNNER_OPTIONS,
    "cifar10": _COMMON_OPTIONS + ("val_fraction",) + RUNNER_OPTIONS,
    "cifar100": _COMMON_OPTIONS + ("val_fraction",) + RUNNER_OPTIONS,
    "digits": _COMMON_OPTIONS + RUNNER_OPTIONS,
}
DATASET_OPTIONS.update({name: DATASET_OPTIONS[reader] for name, (reader, _) in DATASET_VARIANTS.items()})

#: Readers whose images can stay on disk (``load_splits(..., on_disk=True)``): the decoded JPEG datasets.
ON_DISK_READERS: tuple[str, ...] = ("visa", "mvtec3d_cls")

#: The ten objects of the paper's MVTec classification set (Schuerrle et al. 2023, objects of MVTec
#: ITODD, Drost et al. 2017), as the paper names them; the class names themselves come from the COCO
#: categories of the files.
MVTEC_CLS_OBJECTS: tuple[str, ...] = (
    "triangular adapter plate", "large bracket", "small clamp", "round engine-part cooler",
    "square engine-part cooler", "injection pump", "screw", "star", "tee connector", "thread",
)  # fmt: skip

BLOODMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)
BLOODMNIST_CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocytes",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
_BLOODMNIST_COUNTS = {"train": 11959, "val": 1712, "test": 3421}

# MD5s from medmnist.info.INFO["bloodmnist"] (MedMNIST v2, Zenodo record 10519652); medmnist's metadata
# is read at call time when installed, this table is the fallback and what tests patch.
BLOODMNIST_MD5: dict[int, str] = {
    28: "7053d0359d879ad8a5505303e11de1dc",
    64: "2b94928a2ae4916078ca51e05b6b800b",
    128: "adace1e0ed228fccda1f39692059dd4c",
    224: "b718ff6835fcbdb22ba9eacccd7b2601",
}

# A wheel on the Python package index that ships the official 28 px file unchanged (same MD5): the
# fallback for machines that reach the package index but not Zenodo. Fetched with pip itself.
BLOODMNIST_WHEEL = {
    "requirement": "kosmos-core==0.6.2",
    "python_version": "3.13",
    "member": "kosmos/ml/datasets/data/bloodmnist.npz",
}

VISA_OBJECTS: tuple[str, ...] = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
_VISA_CLASSES = ("normal", "anomaly")
_VISA_CSV_HEADER = ["object", "split", "label", "image", "mask"]
_VISA_URL = "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar"
_VISA_REPO = "https://github.com/amazon-science/spot-diff (split_csv/)"

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


# --------------------------------------------------------------------------------------------- errors


class UnknownDatasetError(ValueError):
    """A dataset name that is not one of :data:`DATASETS`."""


class UnknownOptionError(TypeError, ValueError):
    """An option that the chosen dataset does not accept (a ``TypeError`` like an unexpected keyword,
    and a ``ValueError`` like every other bad-input error of this module)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for and could not be downloaded."""


class ChecksumError(ValueError):
    """A dataset file is corrupt or is not the official file (wrong MD5); it is not used."""


# --------------------------------------------------------------------------------------------- Split


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


class DiskImages:
    """Rows of the decoded-image cache on disk, seen as a uint8 ``N x C x H x W`` batch.

    The cache is a ``.npy`` file of uint8 ``M x H x W x C`` images (:func:`load_splits` with
    ``on_disk=True`` writes and opens it). Nothing is read until rows are asked for: indexing with an
    int, a slice, or an index array / tensor returns those images as a contiguous uint8 tensor in
    memory; :meth:`take` returns another view (no copy). So a split of 100,000 images at 224 px costs
    its row index (8 bytes an image) until a batch is read.

    Rows are read with ``pread`` (a run of consecutive rows in one call), not through a memory map:
    the kernel's page cache keeps what was read (shared, reclaimable, fast to read again), and the
    process's resident memory holds only the batch. A memory map would count every page it touched as
    resident, and a kernel that maps whole large folios on a fault (Linux 6.18 on ext4 here) mapped
    42 MB of a 61 MB cache file for one batch of 256 random rows, so resident memory grew with the
    file.

    Args:
        path: the ``.npy`` file (its header is read with ``np.load(path, mmap_mode="r")``).
        rows: which of its rows this view holds, in order (default: all).
        unlink: remove the file once it is open (a temporary file, kept alive by the open descriptor).
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


def _is_images(value: Any) -> bool:
    return isinstance(value, DiskImages) or (
        isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 4
    )


@dataclass(eq=False)
class Split:
    """One split of a dataset.

    Attributes:
        images: uint8 tensor ``N x C x H x W`` in memory, or, loaded with ``on_disk=True``, a
            :class:`DiskImages` view of the decoded cache on disk (same shape; indexing it returns
            tensors).
        labels: int64 tensor ``N`` with values in ``[0, len(classes))``.
        classes: class names, indexed by label.
    """

    images: torch.Tensor | DiskImages
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if not _is_images(self.images):
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


# --------------------------------------------------------------------------------------------- splitting


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

    Systematic stratified allocation: each class is shuffled and its items spread evenly over
    ``[0, 1)`` (item ``i`` of ``n_c`` at ``(i + u_c) / n_c``, ``u_c`` a random offset); all items are
    ordered by that position and the order is cut into parts of exactly the global sizes (largest
    remainder of ``fractions * N``). So every part has its exact share of the whole and each class
    within about one item of its proportional share, even for classes with fewer items than parts.

    Args:
        labels: one label (or stratum id) per item.
        fractions: non-negative fractions summing to 1, one per part.
        seed: the random seed.

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
    """At most ``n`` indices, each class in proportion, every class kept while ``n`` allows.

    Args:
        labels: one label per item.
        n: the number of items to keep (all of them if ``n`` is not smaller).
        seed: the random seed.
        purpose: separates the random stream of one subset from another's for the same seed.

    Returns:
        Sorted int64 indices.
    """
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


# --------------------------------------------------------------------------------------------- files


def file_md5(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def _md5_cached(path: Path) -> str:
    """MD5 of ``path``, memoised per process on (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_md5(path)
    return _VERIFIED[key]


def default_data_root() -> Path:
    """``$PRUNING_STUDY_DATA`` if set, else ``~/.cache/pruning-study/data``."""
    env = os.environ.get("PRUNING_STUDY_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruning-study" / "data"


def _default_cache_dir() -> Path:
    env = os.environ.get("PRUNING_STUDY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruning-study" / "decoded"


def _progress(total: int | None, desc: str, unit: str = "B"):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def _download_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch ``url`` into the file ``dest`` (which the caller then verifies and renames).

    The network route of every download; tests replace it to run without a network.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "pruning-study"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = response.headers.get("Content-Length")
        with _progress(int(total) if total else None, f"downloading {dest.name}") as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def _pip_download(requirement: str, dest_dir: Path, python_version: str) -> Path:
    """Download one wheel with pip (no dependencies) into ``dest_dir`` and return its path.

    The package-index route of the BloodMNIST download; tests replace it.
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--python-version", python_version, "--only-binary=:all:", "--dest", str(dest_dir), requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download {requirement} failed (exit {proc.returncode}): {' | '.join(tail)}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise OSError(f"pip download {requirement} produced no wheel in {dest_dir}")
    return wheels[0]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _verified_install(produce: Callable[[Path], None], final: Path, md5: str) -> None:
    """Write a file via ``produce(tmp)`` next to ``final``, check its MD5, then rename it atomically.

    A partial or wrong file never appears under the final name (the temporary file is removed).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        got = file_md5(tmp)
        if got != md5:
            raise ChecksumError(f"downloaded {final.name} has MD5 {got}, expected {md5}; it was discarded")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- helpers


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any, *, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 <= value < 1)
    if not ok or (not allow_zero and value == 0):
        low = "0 <=" if allow_zero else "0 <"
        raise ValueError(f"{name} must be a number with {low} {name} < 1, got {value!r}")
    return float(value)


def _hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
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
    from helpers.transforms import resize_images

    out = []
    for start in range(0, images.shape[0], 4096):
        x = resize_images(images[start : start + 4096].to(torch.float32), size)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def _subset_indices(labels: np.ndarray, n: int | None, seed: int, purpose: str) -> np.ndarray:
    if n is None:
        return np.arange(len(labels), dtype=np.int64)
    return stratified_subset(labels, n, seed, purpose)


def _apply_split_subsets(
    indices: dict[str, np.ndarray], labels: np.ndarray, options: Mapping[str, Any], seed: int
) -> dict[str, np.ndarray]:
    """Shrink each split's index array by ``<split>_subset``; ``indices`` index into ``labels``."""
    out = {}
    for name, idx in indices.items():
        n = options.get(f"{name}_subset")
        if n is None:
            out[name] = idx
        else:
            keep = stratified_subset(labels[idx], n, seed, f"{name}_subset")
            out[name] = idx[keep]
    return out


def _shrink_official(
    splits: dict[str, np.ndarray], options: Mapping[str, Any], seed: int
) -> dict[str, np.ndarray]:
    """Index arrays (into each split's own arrays) after ``max_samples`` and ``<split>_subset``.

    ``splits`` maps split name to its labels. ``max_samples`` shrinks every split in proportion to
    its official size.
    """
    total = sum(len(y) for y in splits.values())
    max_samples = options.get("max_samples")
    caps = {}
    if max_samples is not None and max_samples < total:
        counts = _largest_remainder(max_samples, [len(y) for y in splits.values()])
        caps = dict(zip(splits, counts.tolist()))
    out = {}
    for name, y in splits.items():
        idx = _subset_indices(y, caps.get(name), seed, f"max_samples_{name}")
        n = options.get(f"{name}_subset")
        if n is not None:
            idx = idx[stratified_subset(y[idx], n, seed, f"{name}_subset")]
        out[name] = idx
    return out


def _dir_candidates(root: str | Path | None, env_var: str, subdirs: Sequence[str]) -> list[Path]:
    """Directories to look in: ``root`` (or ``$env_var``, else the default data root) and its subdirs."""
    if root is not None:
        base = [Path(root).expanduser()]
    elif os.environ.get(env_var):
        base = [Path(os.environ[env_var]).expanduser()]
    else:
        base = [default_data_root()]
    out: list[Path] = []
    for b in base:
        out.append(b)
        out.extend(b / s for s in subdirs)
    return out


# --------------------------------------------------------------------------------------------- digits


def _load_digits(*, root, size, seed, download, options) -> dict[str, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 (4 x 4 blocks of a 32 x 32 bitmap); scale to the uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    classes = [str(c) for c in bunch.target_names]
    return _split_pool(
        images=_hwc_to_tensor(images),
        labels=labels,
        classes=classes,
        fractions={"train": 0.70, "val": 0.15, "test": 0.15},
        size=size,
        seed=seed,
        options=options,
    )


def _split_pool(
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
    pool = _subset_indices(labels, options.get("max_samples"), seed, "max_samples")
    names = list(fractions)
    parts = stratified_split(labels[pool], [fractions[n] for n in names], seed)
    indices = {n: pool[p] for n, p in zip(names, parts)}
    indices = _apply_split_subsets(indices, labels, options, seed)
    if size is not None:
        images = _resize_uint8(images, size)
    y = torch.from_numpy(labels.astype(np.int64))
    out = {}
    for name in ("train", "val", "test"):
        idx = torch.from_numpy(indices[name])
        out[name] = Split(images[idx], y[idx], list(classes))
    return out


# --------------------------------------------------------------------------------------------- bloodmnist


def _bloodmnist_meta(size: int) -> tuple[str, str, str]:
    """(file name, url, md5) for one size, from medmnist's metadata where available."""
    fname = "bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"
    suffix = "" if size == 28 else f"_{size}"
    url = ""
    try:
        from medmnist.info import INFO

        url = INFO["bloodmnist"].get(f"url{suffix}", "")
    except Exception:  # medmnist missing or changed: fall back to the record medmnist 3 points at
        pass
    if not url:
        url = f"https://zenodo.org/records/10519652/files/{fname}?download=1"
    return fname, url, BLOODMNIST_MD5[size]


def _bloodmnist_search_dirs(root: str | Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    if os.environ.get("MEDMNIST_ROOT"):
        dirs.append(Path(os.environ["MEDMNIST_ROOT"]).expanduser())
    dirs.append(Path.home() / ".medmnist")
    seen, out = set(), []
    for d in dirs:
        if str(d) not in seen:
            seen.add(str(d))
            out.append(d)
    return out


def _bloodmnist_file(root: str | Path | None, size: int, download: bool) -> Path:
    """Path of the verified official BloodMNIST file for ``size``, downloading it if needed."""
    fname, url, md5 = _bloodmnist_meta(size)
    dirs = _bloodmnist_search_dirs(root)
    for d in dirs:
        path = d / fname
        if path.is_file():
            got = _md5_cached(path)
            if got != md5:
                raise ChecksumError(
                    f"{path} has MD5 {got}, but the official {fname} has {md5}; the file is corrupt or not the "
                    f"official one and was not used. Replace it (or delete it to download again from {url})"
                )
            return path
    searched = ", ".join(str(d / fname) for d in dirs)
    dest = dirs[0] / fname
    how = (
        f"Download {url} (MD5 {md5}) and put it at {dest}, or pass root= pointing at its folder "
        "(or set $MEDMNIST_ROOT)"
    )
    if not download:
        raise DatasetNotFoundError(
            f"BloodMNIST {size} px file {fname} not found (searched {searched}) and download=False. {how}"
        )

    failures = []
    try:
        log.info("downloading %s to %s", url, dest)
        _verified_install(lambda tmp: _download_url(url, tmp), dest, md5)
        return dest
    except Exception as exc:  # any failure: try the next route, report all of them
        failures.append(f"{url}: {type(exc).__name__}: {exc}")

    if size == 28:
        req = BLOODMNIST_WHEEL["requirement"]
        member = BLOODMNIST_WHEEL["member"]
        try:
            log.info("falling back to the wheel %s (member %s)", req, member)
            _verified_install(lambda tmp: _extract_from_wheel(req, member, tmp), dest, md5)
            return dest
        except Exception as exc:
            failures.append(f"pip download {req} (member {member}): {type(exc).__name__}: {exc}")
    else:
        failures.append(f"no package-index fallback exists for size {size} (only for 28)")

    raise DatasetNotFoundError(
        f"BloodMNIST {size} px file {fname} not found (searched {searched}) and every download route failed: "
        + "; ".join(failures)
        + f". {how}"
    )


def _extract_from_wheel(requirement: str, member: str, out: Path) -> None:
    """Fetch the wheel with pip into a temporary folder and copy one member to ``out``."""
    with tempfile.TemporaryDirectory(prefix="pruning-study-wheel-") as tmp:
        wheel = _pip_download(requirement, Path(tmp), BLOODMNIST_WHEEL["python_version"])
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(member)
            except KeyError as exc:
                raise OSError(f"{wheel.name} has no member {member}") from exc
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _load_bloodmnist(*, root, size, seed, download, options) -> dict[str, Split]:
    size = 28 if size is None else size
    if size not in BLOODMNIST_SIZES:
        raise ValueError(
            f"BloodMNIST has no size {size!r}; expected one of {', '.join(map(str, BLOODMNIST_SIZES))}"
        )
    path = _bloodmnist_file(root, size, download)
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # a verified file that numpy cannot read (only if the MD5 table is wrong)
        raise ChecksumError(f"{path} could not be read as an npz file: {exc}") from exc
    missing = [f"{s}_{k}" for s in _BLOODMNIST_COUNTS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise ChecksumError(f"{path} lacks the BloodMNIST keys {', '.join(missing)}; it is not the official file")
    labels = {s: arrays[f"{s}_labels"].reshape(-1).astype(np.int64) for s in _BLOODMNIST_COUNTS}
    keep = _shrink_official(labels, options, seed)
    out = {}
    for s in ("train", "val", "test"):
        images = arrays[f"{s}_images"]
        idx = keep[s]
        sel = images if len(idx) == len(images) else images[idx]
        out[s] = Split(_hwc_to_tensor(sel), torch.from_numpy(labels[s][idx]), list(BLOODMNIST_CLASSES))
    return out


# --------------------------------------------------------------------------------------------- image decoding


def _decode_one(path: Path, size: int) -> np.ndarray:
    from PIL import Image

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

    The cache key covers every path, its file size and modification time, and ``size``, so a changed
    dataset or option never reads a stale cache. The cache is written chunk by chunk while decoding
    (a ``.npy`` of ``N x size x size x 3``, renamed into place when complete), so decoding needs memory
    for one chunk, not for the dataset. With ``on_disk`` the result is a :class:`DiskImages` view of
    that file (without ``cache`` the file is a temporary one, removed once open and gone when the
    process ends); otherwise a tensor in memory.
    """
    h = hashlib.sha256(f"{size}\n".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    cache_name = f"{key_prefix}-{size}px-{len(paths)}-{h.hexdigest()[:20]}.npy"
    folder = Path(cache_dir or _default_cache_dir())
    cache_file = folder / cache_name
    shape = (len(paths), size, size, 3)
    if cache and cache_file.is_file():
        try:
            arr = np.load(cache_file, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return DiskImages(cache_file) if on_disk else _hwc_to_tensor(np.array(arr))
        except Exception:  # an unreadable cache is rebuilt
            log.warning("ignoring unreadable cache %s", cache_file)
    if not cache and not on_disk:
        arr = np.empty(shape, dtype=np.uint8)
        def keep(start: int, chunk: np.ndarray) -> None:
            arr[start : start + len(chunk)] = chunk

        _decode_into(paths, size, workers, key_prefix, keep)
        return _hwc_to_tensor(arr)
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
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, cache_file)
            tmp = cache_file
        if on_disk:
            return DiskImages(tmp, unlink=not cache)  # a temporary file lives as long as its descriptor
        return _hwc_to_tensor(np.load(tmp))
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
        with _progress(len(paths), f"decoding {what}", unit="img") as bar:
            for start in range(0, len(paths), _DECODE_CHUNK):
                stop = min(start + _DECODE_CHUNK, len(paths))
                jobs = [(i, start) for i in range(start, stop)]
                for _ in pool.map(work, jobs) if pool is not None else map(work, jobs):
                    bar.update(1)
                write(start, chunk[: stop - start])
    finally:
        if pool is not None:
            pool.shutdown()


def _build_file_splits(
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
    """Apply per-split subsets, decode only the images used, and assemble the Splits.

    When ``indices["val"] is indices["test"]`` (one held-out set serves as both), the returned
    ``val`` and ``test`` are the same Split, shrunk by ``test_subset``. With ``on_disk`` the splits are
    :class:`DiskImages` views of one decoded file.
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


# --------------------------------------------------------------------------------------------- visa


def _visa_root(root: str | Path | None) -> Path:
    candidates = _dir_candidates(root, "VISA_ROOT", ("visa", "VisA", "VisA_20220922"))
    for c in candidates:
        if c.is_dir() and any((c / obj / "Data" / "Images").is_dir() for obj in VISA_OBJECTS):
            return c
    raise DatasetNotFoundError(
        "VisA not found: no <object>/Data/Images folder in "
        + ", ".join(str(c) for c in candidates)
        + f". Download {_VISA_URL} (1.8 GB), extract it (tar -xf VisA_20220922.tar) and pass root= the extracted "
        "folder (the one holding candle/, capsules/, ... and split_csv/), or set $VISA_ROOT"
    )


def _visa_objects(root: Path, objects: Any) -> list[str]:
    if objects is None:
        wanted = list(VISA_OBJECTS)
    else:
        if isinstance(objects, str):
            objects = [objects]
        wanted = list(objects)
        bad = [o for o in wanted if o not in VISA_OBJECTS]
        if bad or not wanted:
            raise ValueError(
                f"unknown VisA object(s) {bad or wanted!r}; expected a non-empty list of {', '.join(VISA_OBJECTS)}"
            )
        wanted = [o for o in VISA_OBJECTS if o in set(wanted)]
    missing = [o for o in wanted if not (root / o / "Data" / "Images").is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"VisA objects {', '.join(missing)} not found under {root} (expected {root}/<object>/Data/Images/). "
            f"Extract the full archive from {_VISA_URL}, or restrict the study with objects=[...] to those present"
        )
    return wanted


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _load_visa(*, root, size, seed, download, options, on_disk=False) -> dict[str, Split]:
    size = 224 if size is None else size
    base = _visa_root(root)
    objects = _visa_objects(base, options.get("objects"))
    split = options.get("split", "paper")
    classes = list(_VISA_CLASSES)
    paths: list[Path] = []
    labels: list[int] = []
    strata: list[int] = []  # object x label, so every object keeps its anomaly rate in each split
    if split == "paper":
        for oi, obj in enumerate(objects):
            for li, folder in enumerate(("Normal", "Anomaly")):
                files = _list_images(base / obj / "Data" / "Images" / folder)
                paths += files
                labels += [li] * len(files)
                strata += [2 * oi + li] * len(files)
        if not paths:
            raise DatasetNotFoundError(f"no images in {base}/<object>/Data/Images/{{Normal,Anomaly}} for {objects}")
        y = np.asarray(labels, dtype=np.int64)
        st = np.asarray(strata, dtype=np.int64)
        pool = _subset_indices(st, options.get("max_samples"), seed, "max_samples")
        train, held = stratified_split(st[pool], [0.8, 0.2], seed)
        held_idx = pool[held]
        indices = {"train": pool[train], "val": held_idx, "test": held_idx}
    else:
        rows = _read_visa_csv(base, split)
        rows = [r for r in rows if r["object"] in set(objects)]
        train_rows, test_rows = [], []
        for r in rows:
            (train_rows if r["split"] == "train" else test_rows).append(r)
        for r in train_rows + test_rows:
            path = base / r["image"]
            paths.append(path)
            labels.append(_VISA_CLASSES.index(r["label"]))
            strata.append(2 * objects.index(r["object"]) + labels[-1])
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise DatasetNotFoundError(
                f"{len(absent)} image(s) listed in split {split!r} are missing, e.g. {', '.join(absent[:3])}; "
                f"extract the full archive from {_VISA_URL} into {base}"
            )
        y = np.asarray(labels, dtype=np.int64)
        st = np.asarray(strata, dtype=np.int64)
        n_train = len(train_rows)
        tr_all = np.arange(n_train, dtype=np.int64)
        te_all = np.arange(n_train, len(paths), dtype=np.int64)
        max_samples = options.get("max_samples")
        if max_samples is not None and max_samples < len(paths):
            caps = _largest_remainder(max_samples, [len(tr_all), len(te_all)])
            tr_all = tr_all[stratified_subset(st[tr_all], int(caps[0]), seed, "max_samples_train")]
            te_all = te_all[stratified_subset(st[te_all], int(caps[1]), seed, "max_samples_test")]
        if len(np.unique(y[tr_all])) < 2:
            raise ValueError(
                f"VisA split {split!r} has only one class in its train part; a classifier needs both. "
                "Use split='paper', '2cls_highshot' or '2cls_fewshot'"
            )
        val_fraction = _check_fraction("val_fraction", options.get("val_fraction", 0.1), allow_zero=True)
        if val_fraction == 0:
            indices = {"train": tr_all, "val": te_all, "test": te_all}
        else:
            tr, va = stratified_split(st[tr_all], [1 - val_fraction, val_fraction], seed)
            indices = {"train": tr_all[tr], "val": tr_all[va], "test": te_all}
    return _build_file_splits(
        paths=paths, labels=y, classes=classes, indices=indices, size=size, seed=seed, options=options,
        key_prefix="visa", on_disk=on_disk,
    )  # fmt: skip


def _read_visa_csv(base: Path, split: Any) -> list[dict[str, str]]:
    """Rows of an official VisA split CSV (validated)."""
    if not isinstance(split, (str, Path)):
        raise ValueError(f"VisA split must be 'paper', a split_csv name or a .csv path, got {split!r}")
    candidates = [Path(split)] if str(split).endswith(".csv") else [base / "split_csv" / f"{split}.csv"]
    available = sorted(p.stem for p in (base / "split_csv").glob("*.csv")) if (base / "split_csv").is_dir() else []
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise DatasetNotFoundError(
            f"VisA split {split!r} not found at {candidates[0]}; available: paper"
            + "".join(f", {a}" for a in available)
            + ". The official split files (1cls, 2cls_fewshot, 2cls_highshot) come with the archive and from "
            + f"{_VISA_REPO}; put them in {base / 'split_csv'}"
        )
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != _VISA_CSV_HEADER:
            raise ValueError(f"{path} has header {header}; an official VisA split CSV has {','.join(_VISA_CSV_HEADER)}")
        rows = []
        for line_no, rec in enumerate(reader, start=2):
            if not rec:
                continue
            row = dict(zip(_VISA_CSV_HEADER, rec + [""] * (5 - len(rec))))
            if row["split"] not in ("train", "test") or row["label"] not in _VISA_CLASSES:
                raise ValueError(
                    f"{path}:{line_no}: split {row['split']!r} / label {row['label']!r}; expected split train|test "
                    f"and label {'|'.join(_VISA_CLASSES)}"
                )
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- mvtec3d_cls


def _is_coco(path: Path) -> bool:
    try:
        with open(path) as f:
            head = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and all(k in head for k in ("images", "annotations", "categories"))


def _mvtec_root(root: str | Path | None) -> tuple[Path, str]:
    """(folder, layout) where layout is ``coco`` or ``folders``."""
    candidates = _dir_candidates(root, "MVTEC3D_CLS_ROOT", ("mvtec3d_cls", "mvtec3d"))
    for c in candidates:
        if not c.is_dir():
            continue
        if any(_is_coco(p) for p in _coco_files(c)):
            return c, "coco"
        if _folder_classes(c):
            return c, "folders"
    raise DatasetNotFoundError(
        "MVTec object-classification data (the synthetic MVTec ITODD object set of Schuerrle et al. 2023) not "
        "found: looked for COCO JSON files (up to three folders deep, e.g. annotations.json beside images/, "
        "annotations/*.json, or <split>/_annotations.coco.json) and class folders (<root>/<class>/*.jpg, "
        "optionally under train/ valid/ test/) in "
        + ", ".join(str(c) for c in candidates)
        + ". Download the dataset from its Kaggle page (the paper's reference 'Schuerrle et al. 2023'), for "
        "example with the kaggle client: kaggle datasets download <owner>/<dataset> --unzip -p <folder>; then "
        "pass root= that folder, or set $MVTEC3D_CLS_ROOT"
    )


def _coco_files(base: Path) -> list[Path]:
    found = [p for pattern in ("*.json", "*/*.json", "*/*/*.json") for p in base.glob(pattern)]
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(base).parts)  # noqa: E731
    return sorted(p for p in found if p.is_file() and not hidden(p))


_SPLIT_DIRS = ("train", "training", "val", "valid", "validation", "test", "testing")


def _folder_classes(base: Path) -> dict[str, list[Path]]:
    """Class name -> image files, from ``base/<class>/`` or ``base/<split>/<class>/`` (merged)."""
    tops = [base]
    split_dirs = [base / d for d in _SPLIT_DIRS if (base / d).is_dir()]
    if split_dirs:
        tops = split_dirs
    out: dict[str, list[Path]] = {}
    for top in tops:
        for d in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = _list_images(d)
            if files:
                out.setdefault(d.name, []).extend(files)
    return out


def _image_dirs(json_file: Path, base: Path) -> list[Path]:
    """Folders a COCO ``file_name`` may be relative to, most likely first."""
    here, up = json_file.parent, json_file.parent.parent
    dirs = [here, here / "images", up / "images", up, base, base / "images"]
    inside = [d for d in dirs if d == base or base in d.parents]  # never above the dataset's folder
    return list(dict.fromkeys(inside))


def _resolve_image(name: str, dirs: list[Path], start: int) -> tuple[Path | None, int]:
    """The file ``name`` (or its base name) under one of ``dirs``, trying ``dirs[start]`` first."""
    order = [start] + [i for i in range(len(dirs)) if i != start]
    for rel in dict.fromkeys((name, Path(name).name)):
        for i in order:
            path = dirs[i] / rel
            if path.is_file():
                return path, i
    return None, start


def _coco_items(base: Path) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, classes) merged over every COCO JSON under ``base`` (one object per image)."""
    files = [p for p in _coco_files(base) if _is_coco(p)]
    cat_names: dict[int, str] = {}
    per_image: dict[Path, set[str]] = {}
    for jf in files:
        with open(jf) as f:
            coco = json.load(f)
        cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        cat_names.update(cats)
        by_id: dict[Any, set[str]] = {}
        for ann in coco["annotations"]:
            cid = int(ann["category_id"])
            if cid not in cats:
                raise ValueError(
                    f"{jf}: annotation {ann.get('id')} has unknown category_id {cid}; known: {sorted(cats)}"
                )
            by_id.setdefault(ann["image_id"], set()).add(cats[cid])
        dirs, hit = _image_dirs(jf, base), 0
        for img in coco["images"]:
            names = by_id.get(img["id"], set())
            name = img["file_name"]
            path, hit = _resolve_image(name, dirs, hit)
            if path is None:
                raise DatasetNotFoundError(
                    f"{jf}: image {name!r} not found in any of {', '.join(str(d) for d in dirs)}"
                )
            if not names:
                log.warning("%s: image %s has no annotation; skipped", jf, name)
                continue
            if len(names) > 1:
                raise ValueError(
                    f"{jf}: image {name!r} carries several categories {sorted(names)}; "
                    "mvtec3d_cls expects one object per image"
                )
            per_image.setdefault(path, set()).update(names)
        del coco, by_id
    conflicting = [str(p) for p, n in per_image.items() if len(n) > 1]
    if conflicting:
        raise ValueError(f"images labelled with different categories in different JSON files: {conflicting[:3]}")
    used = sorted({next(iter(n)) for n in per_image.values()})
    # Classes in category-id order, only those that label an image (exports often add an unused super-category).
    order = {name: cid for cid, name in sorted(cat_names.items(), reverse=True)}
    classes = sorted(used, key=lambda n: (order.get(n, 1 << 30), n))
    paths = sorted(per_image)
    labels = [classes.index(next(iter(per_image[p]))) for p in paths]
    return paths, labels, classes


def _load_mvtec3d_cls(*, root, size, seed, download, options, on_disk=False) -> dict[str, Split]:
    size = 224 if size is None else size
    layout = options.get("layout", "auto")
    if layout not in ("auto", "folders", "coco"):
        raise ValueError(f"unknown mvtec3d_cls layout {layout!r}; expected auto, folders or coco")
    base, found = _mvtec_root(root)
    if layout == "auto":
        layout = found
    if layout == "coco":
        paths, labels, classes = _coco_items(base)
    else:
        groups = _folder_classes(base)
        classes = sorted(groups)
        paths = [p for c in classes for p in groups[c]]
        labels = [i for i, c in enumerate(classes) for _ in groups[c]]
    if len(classes) < 2:
        raise DatasetNotFoundError(f"mvtec3d_cls at {base} ({layout}) has {len(classes)} class(es); expected 10")
    if len(classes) != len(MVTEC_CLS_OBJECTS):
        log.warning("mvtec3d_cls at %s has %d classes (%s); the paper's set has %d", base, len(classes),
                    ", ".join(classes), len(MVTEC_CLS_OBJECTS))  # fmt: skip
    y = np.asarray(labels, dtype=np.int64)
    pool = _subset_indices(y, options.get("max_samples"), seed, "max_samples")
    train, test, val = stratified_split(y[pool], [0.7, 0.2, 0.1], seed)
    indices = {"train": pool[train], "val": pool[val], "test": pool[test]}
    return _build_file_splits(
        paths=paths, labels=y, classes=classes, indices=indices, size=size, seed=seed, options=options,
        key_prefix="mvtec3d_cls", on_disk=on_disk,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- cifar


def _cifar_class(name: str):
    from torchvision import datasets

    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def _load_cifar(name: str, *, root, size, seed, download, options) -> dict[str, Split]:
    cls = _cifar_class(name)
    candidates = _dir_candidates(root, "CIFAR_ROOT", ("cifar",))
    base = next((c for c in candidates if (c / cls.base_folder).is_dir()), None)
    if base is None:
        base = candidates[0]
        archive = base / cls.filename
        how = (
            f"download {cls.url} (MD5 {cls.tgz_md5}) and extract it in {base} so that {base / cls.base_folder} exists, "
            "or pass root= the folder that holds it (or set $CIFAR_ROOT)"
        )
        if not download:
            raise DatasetNotFoundError(
                f"{name} not found: no {cls.base_folder} in {', '.join(str(c) for c in candidates)} "
                f"and download=False; {how}"
            )
        try:
            if not (archive.is_file() and file_md5(archive) == cls.tgz_md5):
                _verified_install(lambda tmp: _download_url(cls.url, tmp), archive, cls.tgz_md5)
            _extract_tar(archive, base, cls.base_folder)
        except Exception as exc:
            raise DatasetNotFoundError(
                f"{name} not found in {base} and the download failed ({type(exc).__name__}: {exc}); {how}"
            ) from exc
    try:
        train = cls(str(base), train=True, download=False)
        test = cls(str(base), train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise ChecksumError(
            f"{base / cls.base_folder} failed torchvision's MD5 check ({exc}); the files are corrupt or incomplete. "
            f"Remove that folder to download again from {cls.url}"
        ) from exc
    classes = list(train.classes)
    y_train = np.asarray(train.targets, dtype=np.int64)
    y_test = np.asarray(test.targets, dtype=np.int64)
    val_fraction = _check_fraction("val_fraction", options.get("val_fraction", 0.1), allow_zero=False)
    tr, va = stratified_split(y_train, [1 - val_fraction, val_fraction], seed)
    # max_samples / subsets: treat (train, val, test) as official splits from here on.
    parts = {"train": y_train[tr], "val": y_train[va], "test": y_test}
    keep = _shrink_official(parts, options, seed)
    sources = {
        "train": (train.data, y_train, tr),
        "val": (train.data, y_train, va),
        "test": (test.data, y_test, np.arange(len(y_test))),
    }
    out = {}
    for s, (data, y, idx) in sources.items():
        sel = idx[keep[s]]
        images = _hwc_to_tensor(data[sel])
        if size is not None:
            images = _resize_uint8(images, size)
        out[s] = Split(images, torch.from_numpy(y[sel]), classes)
    return out


def _extract_tar(archive: Path, base: Path, folder: str) -> None:
    """Extract ``archive`` into a temporary folder in ``base`` and move ``folder`` into place atomically."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=base) as tmp:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        src = Path(tmp) / folder
        if not src.is_dir():
            raise ChecksumError(f"{archive} does not contain {folder}/")
        os.replace(src, base / folder)


# --------------------------------------------------------------------------------------------- entry point

_LOADERS: dict[str, Callable[..., dict[str, Split]]] = {
    "bloodmnist": _load_bloodmnist,
    "visa": _load_visa,
    "mvtec3d_cls": _load_mvtec3d_cls,
    "cifar10": lambda **kw: _load_cifar("cifar10", **kw),
    "cifar100": lambda **kw: _load_cifar("cifar100", **kw),
    "digits": _load_digits,
}


def dataset_reader(name: str) -> str:
    """The reader behind a dataset name: itself, or a variant's reader (see :data:`DATASET_VARIANTS`)."""
    if name in DATASET_VARIANTS:
        return DATASET_VARIANTS[name][0]
    if name not in _LOADERS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return name


def load_splits(
    name: str,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    download: bool = True,
    on_disk: bool = False,
    **options: Any,
) -> dict[str, Split]:
    """Load a dataset of the study as ``{"train", "val", "test"}`` splits.

    Args:
        name: one of :data:`DATASETS` (a variant such as ``mvtec3d_cls_small`` reads with its
            reader and starts from its default options).
        root: folder holding the data (see the module docstring for the search order per dataset).
        size: image side in pixels. BloodMNIST: one of 28 (default), 64, 128, 224 (the official file of
            that size). VisA / MVTec: resize target at load (default 224). CIFAR / digits: native
            size when None, else resized (antialiased bilinear) at load.
        seed: seed of every random split and subset; the same seed gives the same splits.
        download: fetch missing files (BloodMNIST, CIFAR); with False a missing file is an error.
        on_disk: for the decoded JPEG datasets (:data:`ON_DISK_READERS`), leave the images on disk:
            each split's ``images`` is a :class:`DiskImages` view of the decoded ``.npy`` file, and
            resident memory does not grow with the number of images. Ignored by the datasets that
            are small arrays in memory anyway.
        **options: dataset options, see :data:`DATASET_OPTIONS`: ``max_samples``, ``train_subset``,
            ``val_subset``, ``test_subset`` (ints, stratified); VisA ``split`` (``"paper"`` or an official
            split CSV name / path), ``objects``, ``val_fraction``; MVTec ``layout``
            (``auto``/``folders``/``coco``); CIFAR ``val_fraction`` (default 0.1); VisA / MVTec
            ``cache`` (default True), ``cache_dir``, ``workers`` (decoding threads); every dataset
            ``stream`` (``auto``/``true``/``false``: read by the runner, checked here).

    Returns:
        ``{"train": Split, "val": Split, "test": Split}``. Where the protocol uses one held-out set as
        both validation and test (VisA ``paper``), ``"val"`` and ``"test"`` are the same object.

    Raises:
        UnknownDatasetError: ``name`` is not a known dataset.
        UnknownOptionError: an option the dataset does not accept.
        DatasetNotFoundError: the files are missing and could not be downloaded (the message says how to
            get them).
        ChecksumError: a file is corrupt or not the official one; it is not used.
        ValueError: a bad option value (e.g. a BloodMNIST size other than 28, 64, 128, 224).
    """
    reader = dataset_reader(name)
    accepted = DATASET_OPTIONS[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownOptionError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset {name!r}; accepted: "
            f"root, size, seed, download, on_disk, {', '.join(accepted)}"
        )
    if name in DATASET_VARIANTS:
        defaults = DATASET_VARIANTS[name][1]
        options = {**defaults, **{k: v for k, v in options.items() if v is not None or k not in defaults}}
    if size is not None:
        _check_int("size", size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    for key in _COMMON_OPTIONS:
        if options.get(key) is not None:
            options[key] = _check_int(key, options[key])
    if "workers" in options and options["workers"] is not None:
        options["workers"] = _check_int("workers", options["workers"])
    check_stream(options.pop("stream", "auto"))
    extra = {"on_disk": bool(on_disk)} if reader in ON_DISK_READERS else {}
    return _LOADERS[reader](root=root, size=size, seed=int(seed), download=bool(download), options=options, **extra)


def check_stream(value: Any) -> Any:
    """``value`` if it is a valid ``stream`` option (``auto``, ``true``, ``false``), else a ValueError."""
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in STREAM_CHOICES):
        raise ValueError(f"stream must be auto, true or false, got {value!r}")
    return value
