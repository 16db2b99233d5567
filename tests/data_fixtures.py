"""Builders of tiny datasets in each real on-disk format, for tests of ``helpers.data``.

Every image encodes its label in its colour (grey level ``_label_level(label)``), so a test can check
that images and labels stay aligned through splitting, subsetting, decoding and caching.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def label_level(label: int) -> int:
    """The grey level that fixture images of ``label`` are filled with (well apart, survives JPEG)."""
    return 20 + 45 * int(label)


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def bloodmnist_npz_bytes(counts=(40, 8, 16), size: int = 28, num_classes: int = 8, seed: int = 0) -> bytes:
    """An npz in BloodMNIST's official layout: ``<split>_images`` N x H x W x 3 uint8, labels N x 1 uint8.

    Image ``i`` of a split has every pixel equal to ``i % 256`` in channel 0 and its label in channel 1,
    so tests can check which item ended up where.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        labels = (np.arange(n) % num_classes).astype(np.uint8)
        rng.shuffle(labels)
        images = np.zeros((n, size, size, 3), dtype=np.uint8)
        images[..., 0] = (np.arange(n) % 256)[:, None, None]
        images[..., 1] = labels[:, None, None]
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(n, 1)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_wheel(path: Path, member: str, payload: bytes) -> Path:
    """A real (minimal) wheel: a zip with ``member`` and a dist-info folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("kosmos_core-0.6.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: kosmos-core\nVersion: 0.6.2\n")
        zf.writestr("kosmos_core-0.6.2.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    return path


def write_jpeg(path: Path, level: int, size=(48, 36)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), level, dtype=np.uint8)
    arr[0, 0] = (level + 7) % 256  # not perfectly flat, so files differ
    Image.fromarray(arr).save(path, format="JPEG", quality=95)


def build_visa(root: Path, objects=("candle", "pcb1"), normal: int = 20, anomaly: int = 10) -> dict:
    """A VisA tree in the official layout plus ``split_csv/{2cls_highshot,1cls}.csv`` (official header).

    Normal images are named ``0000.JPG``..., anomalous ``000.JPG``... (as in the archive). The
    ``2cls_highshot`` CSV puts the first 60 % of each object's normals and anomalies in ``train``.

    Returns:
        Counts per split of the CSV: ``{"train": n, "test": n}``, and the CSV rows.
    """
    rows = []
    for obj in objects:
        normals = [f"{obj}/Data/Images/Normal/{i:04d}.JPG" for i in range(normal)]
        anomalies = [f"{obj}/Data/Images/Anomaly/{i:03d}.JPG" for i in range(anomaly)]
        for rel in normals:
            write_jpeg(root / rel, label_level(0))
        for rel in anomalies:
            write_jpeg(root / rel, label_level(1))
        n_tr, a_tr = int(normal * 0.6), int(anomaly * 0.6)
        for i, rel in enumerate(normals):
            rows.append([obj, "train" if i < n_tr else "test", "normal", rel, ""])
        for i, rel in enumerate(anomalies):
            mask = rel.replace("Images", "Masks").replace(".JPG", ".png")
            rows.append([obj, "train" if i < a_tr else "test", "anomaly", rel, mask])
    write_csv(root / "split_csv" / "2cls_highshot.csv", rows)
    one_cls = [[o, "train" if lab == "normal" and s == "train" else "test", lab, img, m] for o, s, lab, img, m in rows]
    write_csv(root / "split_csv" / "1cls.csv", one_cls)
    return {
        "train": sum(r[1] == "train" for r in rows),
        "test": sum(r[1] == "test" for r in rows),
        "rows": rows,
    }


def write_csv(path: Path, rows, header=("object", "split", "label", "image", "mask")) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def build_image_folder(root: Path, classes=("bagel", "cable_gland", "carrot"), per_class: int = 10) -> None:
    """``root/<class>/<i>.jpg`` with every image of class ``k`` at grey level ``label_level(k)``."""
    for k, name in enumerate(sorted(classes)):
        for i in range(per_class):
            write_jpeg(root / name / f"{i:03d}.jpg", label_level(k), size=(32, 32))


def build_coco(root: Path, classes=("bagel", "carrot", "tire"), per_class: int = 10, json_name="_annotations.coco.json") -> dict:
    """A COCO export: images next to the JSON, one box per image, plus an unused super-category id 0."""
    root.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 0, "name": "objects", "supercategory": "none"}]
    categories += [{"id": k + 1, "name": n, "supercategory": "objects"} for k, n in enumerate(classes)]
    images, annotations = [], []
    for k, name in enumerate(classes):
        for i in range(per_class):
            image_id = len(images)
            fname = f"{name}_{i:03d}_jpg.rf.{image_id:04x}.jpg"
            write_jpeg(root / fname, label_level(k), size=(32, 32))
            images.append({"id": image_id, "file_name": fname, "width": 32, "height": 32})
            annotations.append(
                {"id": image_id, "image_id": image_id, "category_id": k + 1, "bbox": [1, 1, 30, 30], "area": 900, "iscrowd": 0}
            )
    coco = {"info": {}, "images": images, "annotations": annotations, "categories": categories}
    (root / json_name).write_text(json.dumps(coco))
    return coco


def build_cifar(root: Path, cls, n_train_per_batch: int = 20, n_test: int = 20, num_classes: int = 10) -> None:
    """A CIFAR folder in the official pickle format for torchvision class ``cls`` (CIFAR10 or CIFAR100).

    Mutates nothing; use :func:`cifar_md5_table` to patch the class's MD5 lists to these files.
    """
    folder = root / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if cls.meta["key"] == "label_names" else "fine_labels"
    test_names = {f for f, _ in cls.test_list}
    for k, (fname, _) in enumerate(cls.train_list + cls.test_list):
        n = n_test if fname in test_names else n_train_per_batch
        labels = [(i + k) % num_classes for i in range(n)]
        data = np.repeat(np.array([label_level(y % 5) for y in labels], dtype=np.uint8)[:, None], 3072, axis=1)
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": data, label_key: labels, "batch_label": fname}, f)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(num_classes)]}, f)


def cifar_md5_table(root: Path, cls) -> dict:
    """Class attributes of ``cls`` that make torchvision accept the fixture files under ``root``."""
    folder = root / cls.base_folder

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    return {
        "train_list": [[f, md5(f)] for f, _ in cls.train_list],
        "test_list": [[f, md5(f)] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": md5(cls.meta["filename"])},
    }


def tar_gz_bytes(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return buf.getvalue()
