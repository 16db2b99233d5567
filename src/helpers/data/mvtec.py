"""Reader of the primary study's "MVTec" set (``mvtec3d_cls``): the synthetic 10-object set of Schuerrle
et al. 2023 from MVTec ITODD objects, as COCO-annotated JPEGs or class folders, pooled and split
70 / 20 / 10 (train / test / val).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from helpers.data import fetch
from helpers.data.decode import build_file_splits, list_images
from helpers.data.splits import DatasetNotFoundError, Split, subset_indices, stratified_split

log = logging.getLogger(__name__)


#: The ten objects of the paper's MVTec set, as the paper names them (the class names come from the files).
MVTEC_CLS_OBJECTS: tuple[str, ...] = (
    "triangular adapter plate", "large bracket", "small clamp", "round engine-part cooler",
    "square engine-part cooler", "injection pump", "screw", "star", "tee connector", "thread",
)  # fmt: skip


def _is_coco(path: Path) -> bool:
    try:
        with open(path) as f:
            head = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and all(k in head for k in ("images", "annotations", "categories"))


def _mvtec_root(root: str | Path | None) -> tuple[Path, str]:
    """(folder, layout) where layout is ``coco`` or ``folders``."""
    candidates = fetch.dir_candidates(root, "MVTEC3D_CLS_ROOT", ("mvtec3d_cls", "mvtec3d"))
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
    tops = [base / d for d in _SPLIT_DIRS if (base / d).is_dir()] or [base]
    out: dict[str, list[Path]] = {}
    for top in tops:
        for d in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = list_images(d)
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


def load_mvtec3d_cls(*, root, size, seed, download, options, on_disk=False) -> dict[str, Split]:
    size = 224 if size is None else size
    layout = options.get("layout", "auto")
    if layout not in ("auto", "folders", "coco"):
        raise ValueError(f"unknown mvtec3d_cls layout {layout!r}; expected auto, folders or coco")
    base, found = _mvtec_root(root)
    layout = found if layout == "auto" else layout
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
    pool = subset_indices(y, options.get("max_samples"), seed, "max_samples")
    train, test, val = stratified_split(y[pool], [0.7, 0.2, 0.1], seed)
    indices = {"train": pool[train], "val": pool[val], "test": pool[test]}
    return build_file_splits(
        paths=paths, labels=y, classes=classes, indices=indices, size=size, seed=seed, options=options,
        key_prefix="mvtec3d_cls", on_disk=on_disk,
    )  # fmt: skip
