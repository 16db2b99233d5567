"""Reader of MedMNIST v2 BloodMNIST: the official ``.npz`` and splits at 28, 64, 128 or 224 px, found
locally, else downloaded from the URL in ``medmnist.info.INFO`` or, when that host is unreachable (28 px
only), taken from a wheel on the package index that ships the identical file; MD5-verified against
medmnist's metadata before use."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from helpers.data import fetch
from helpers.data.splits import (
    ChecksumError,
    DatasetNotFoundError,
    Split,
    hwc_to_tensor,
    _shrink_official,
)

log = logging.getLogger(__name__)


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


def _bloodmnist_meta(size: int) -> tuple[str, str, str]:
    """(file name, url, md5) for one size, from medmnist's metadata where available."""
    suffix = "" if size == 28 else f"_{size}"
    fname = f"bloodmnist{suffix}.npz"
    try:
        from medmnist.info import INFO  # lazy: medmnist pulls in its torch Dataset classes; only the URL is wanted

        url = INFO["bloodmnist"].get(f"url{suffix}", "")
    except Exception:  # medmnist missing or changed: fall back to the record medmnist 3 points at
        url = ""
    return fname, url or f"https://zenodo.org/records/10519652/files/{fname}?download=1", BLOODMNIST_MD5[size]


def _bloodmnist_search_dirs(root: str | Path | None) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    if os.environ.get("MEDMNIST_ROOT"):
        dirs.append(Path(os.environ["MEDMNIST_ROOT"]).expanduser())
    dirs.append(Path.home() / ".medmnist")
    return list(dict.fromkeys(dirs))  # root may repeat $MEDMNIST_ROOT or the default


def _bloodmnist_file(root: str | Path | None, size: int, download: bool) -> Path:
    """Path of the verified official BloodMNIST file for ``size``, downloading it if needed."""
    fname, url, md5 = _bloodmnist_meta(size)
    dirs = _bloodmnist_search_dirs(root)
    for d in dirs:
        path = d / fname
        if path.is_file():
            got = fetch.md5_cached(path)
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
        fetch.verified_install(lambda tmp: fetch.download_url(url, tmp), dest, md5)
        return dest
    except Exception as exc:  # any failure: try the next route, report all of them
        failures.append(f"{url}: {type(exc).__name__}: {exc}")

    if size == 28:
        req = BLOODMNIST_WHEEL["requirement"]
        member = BLOODMNIST_WHEEL["member"]
        try:
            log.info("falling back to the wheel %s (member %s)", req, member)
            fetch.verified_install(lambda tmp: _extract_from_wheel(req, member, tmp), dest, md5)
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
        wheel = fetch.pip_download(requirement, Path(tmp), BLOODMNIST_WHEEL["python_version"])
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(member)
            except KeyError as exc:
                raise OSError(f"{wheel.name} has no member {member}") from exc
            with src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def load_bloodmnist(*, root, size, seed, download, options) -> dict[str, Split]:
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
        out[s] = Split(hwc_to_tensor(sel), torch.from_numpy(labels[s][idx]), list(BLOODMNIST_CLASSES))
    return out
