"""Reader of VisA (Zou et al. 2022): binary normal / anomaly per object from the extracted archive,
split as in the primary study (``split="paper"``) or by an official split CSV.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from helpers.data import fetch
from helpers.data.decode import build_file_splits, list_images
from helpers.data.splits import (
    DatasetNotFoundError,
    Split,
    _check_fraction,
    _shrink_official,
    subset_indices,
    stratified_split,
)


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


def _visa_root(root: str | Path | None) -> Path:
    candidates = fetch.dir_candidates(root, "VISA_ROOT", ("visa", "VisA", "VisA_20220922"))
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
        wanted = [objects] if isinstance(objects, str) else list(objects)
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


def load_visa(*, root, size, seed, download, options, on_disk=False) -> dict[str, Split]:
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
                files = list_images(base / obj / "Data" / "Images" / folder)
                paths += files
                labels += [li] * len(files)
                strata += [2 * oi + li] * len(files)
        if not paths:
            raise DatasetNotFoundError(f"no images in {base}/<object>/Data/Images/{{Normal,Anomaly}} for {objects}")
        y = np.asarray(labels, dtype=np.int64)
        st = np.asarray(strata, dtype=np.int64)
        pool = subset_indices(st, options.get("max_samples"), seed, "max_samples")
        train, held = stratified_split(st[pool], [0.8, 0.2], seed)
        held_idx = pool[held]
        indices = {"train": pool[train], "val": held_idx, "test": held_idx}
    else:
        rows = [r for r in _read_visa_csv(base, split) if r["object"] in set(objects)]
        train_rows = [r for r in rows if r["split"] == "train"]
        test_rows = [r for r in rows if r["split"] != "train"]
        for r in train_rows + test_rows:
            paths.append(base / r["image"])
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
        caps = {"max_samples": options.get("max_samples")}  # the split subsets apply in build_file_splits
        keep = _shrink_official({"train": st[tr_all], "test": st[te_all]}, caps, seed)
        tr_all, te_all = tr_all[keep["train"]], te_all[keep["test"]]
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
    return build_file_splits(
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
