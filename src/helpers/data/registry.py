"""The dataset registry: names, variants, the options each accepts, and :func:`load_splits`, which checks
a request and hands it to the dataset's reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.data.bloodmnist import load_bloodmnist
from helpers.data.cifar import load_cifar
from helpers.data.digits import load_digits
from helpers.data.mvtec import load_mvtec3d_cls
from helpers.data.splits import Split, UnknownDatasetError, UnknownOptionError, checked_int
from helpers.data.visa import load_visa


#: ``name -> (reader, default options)``: a dataset of its own (in run ids, tables and ``dataset_options``)
#: that reads with ``reader``, starting from these options (which its ``dataset_options`` may override).
DATASET_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # The paper's second MVTec run: the object set reduced to BloodMNIST's size (11,959 + 1,712 + 3,421).
    "mvtec3d_cls_small": ("mvtec3d_cls", {"max_samples": 17092}),
}

DATASETS: tuple[str, ...] = (
    "bloodmnist", "visa", "mvtec3d_cls", "cifar10", "cifar100", "digits", *DATASET_VARIANTS,
)  # fmt: skip

_COMMON_OPTIONS = ("max_samples", "train_subset", "val_subset", "test_subset")
#: Options the runner reads, not the reader (checked here): ``stream``, see ``helpers.rundata.prepare_data``.
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

_LOADERS: dict[str, Callable[..., dict[str, Split]]] = {
    "bloodmnist": load_bloodmnist,
    "visa": load_visa,
    "mvtec3d_cls": load_mvtec3d_cls,
    "cifar10": lambda **kw: load_cifar("cifar10", **kw),
    "cifar100": lambda **kw: load_cifar("cifar100", **kw),
    "digits": load_digits,
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
        name: one of :data:`DATASETS` (a variant reads with its reader, from its default options).
        root: folder holding the data (search order per dataset: see the package docstring).
        size: image side in pixels. BloodMNIST: 28 (default), 64, 128 or 224 (the official file of
            that size). VisA / MVTec: resize target (default 224). CIFAR / digits: native when None,
            else resized (antialiased bilinear).
        seed: seed of every random split and subset.
        download: fetch missing files (BloodMNIST, CIFAR); with False a missing file is an error.
        on_disk: for :data:`ON_DISK_READERS`, each split's ``images`` is a :class:`DiskImages` view of
            the decoded ``.npy`` file, so resident memory does not grow with the number of images.
            Ignored by the other datasets.
        **options: see :data:`DATASET_OPTIONS`: ``max_samples``, ``train_subset``, ``val_subset``,
            ``test_subset`` (ints, stratified); VisA ``split`` (``"paper"`` or an official split CSV
            name / path), ``objects``, ``val_fraction``; MVTec ``layout`` (``auto``/``folders``/``coco``);
            CIFAR ``val_fraction`` (default 0.1); VisA / MVTec ``cache`` (default True), ``cache_dir``,
            ``workers`` (decoding threads); every dataset ``stream`` (``auto``/``true``/``false``: read
            by the runner, checked here).

    Returns:
        ``{"train": Split, "val": Split, "test": Split}``. Where the protocol uses one held-out set as
        both validation and test (VisA ``paper``), ``"val"`` and ``"test"`` are the same object.

    Raises:
        UnknownDatasetError: ``name`` is not a known dataset.
        UnknownOptionError: an option the dataset does not accept.
        DatasetNotFoundError: the files are missing and could not be downloaded (the message says how).
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
        checked_int("size", size)
    seed = checked_int("seed", seed, minimum=0)
    for key in (*_COMMON_OPTIONS, "workers"):
        if options.get(key) is not None:
            options[key] = checked_int(key, options[key])
    check_stream(options.pop("stream", "auto"))
    extra = {"on_disk": bool(on_disk)} if reader in ON_DISK_READERS else {}
    return _LOADERS[reader](root=root, size=size, seed=seed, download=bool(download), options=options, **extra)


def check_stream(value: Any) -> Any:
    """``value`` if it is a valid ``stream`` option (``auto``, ``true``, ``false``), else a ValueError."""
    if not any(value is choice or (isinstance(value, str) and value == choice) for choice in STREAM_CHOICES):
        raise ValueError(f"stream must be auto, true or false, got {value!r}")
    return value
