"""Reader of CIFAR-10 / CIFAR-100 through torchvision (archive MD5-verified), with a stratified
validation carve from the official training set.
"""

from __future__ import annotations

import numpy as np
import torch

from helpers.data import fetch
from helpers.data.splits import (
    ChecksumError,
    DatasetNotFoundError,
    Split,
    _check_fraction,
    hwc_to_tensor,
    _resize_uint8,
    _shrink_official,
    stratified_split,
)


def _cifar_class(name: str):
    from torchvision import datasets  # lazy: torchvision.datasets is heavy and only the CIFAR reader needs it

    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def load_cifar(name: str, *, root, size, seed, download, options) -> dict[str, Split]:
    cls = _cifar_class(name)
    candidates = fetch.dir_candidates(root, "CIFAR_ROOT", ("cifar",))
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
            if not (archive.is_file() and fetch.file_md5(archive) == cls.tgz_md5):
                fetch.verified_install(lambda tmp: fetch.download_url(cls.url, tmp), archive, cls.tgz_md5)
            fetch.extract_tar(archive, base, cls.base_folder)
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
        images = hwc_to_tensor(data[sel])
        if size is not None:
            images = _resize_uint8(images, size)
        out[s] = Split(images, torch.from_numpy(y[sel]), classes)
    return out
