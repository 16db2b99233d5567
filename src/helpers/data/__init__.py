"""Every dataset of the study as uint8 images, split into train / val / test.

:func:`load_splits` returns ``{"train": Split, "val": Split, "test": Split}``; a :class:`Split` holds uint8
images ``N x C x H x W`` (in memory, or with ``on_disk=True`` a :class:`DiskImages` view of the decoded
file: the full MVTec set is 15 GB as uint8), int64 labels ``N`` and the class names. Tensor transforms
(normalisation, padding, augmentation, streaming) live in ``helpers.transforms``.

Datasets (``DATASETS``) and their sources:

- ``bloodmnist``: MedMNIST v2 BloodMNIST (Yang et al., *Scientific Data* 2023; images from Acevedo
  et al. 2020), CC BY 4.0: the official ``.npz`` files and splits (11,959 / 1,712 / 3,421; 8 classes)
  at 28, 64, 128 or 224 px, looked for in ``root``, ``$MEDMNIST_ROOT``, then ``~/.medmnist``, else
  downloaded (:mod:`~helpers.data.bloodmnist`); MD5-verified, and read with numpy (medmnist's per-item
  ``Dataset`` is slow and asserts the official counts).
- ``visa``: VisA (Zou et al., *SPot-the-Difference*, ECCV 2022), CC BY 4.0: binary normal / anomaly
  from the extracted archive (``<object>/Data/Images/{Normal,Anomaly}/*.JPG``, ``split_csv/*.csv``),
  resized to ``size x size`` (aspect ratio not kept, like torchvision's ``Resize((s, s))``); all 12
  objects unless ``objects=[...]``. ``split="paper"`` (default; the primary study's protocol,
  Douzandeh Zenoozi et al. 2025): stratified 80 % train / 20 % held out, the held-out part serving as
  both validation and test. An official split CSV (``"2cls_highshot"``, ``"2cls_fewshot"``) gives
  train / test; validation is then a stratified ``val_fraction`` (default 10 %) of its train part, or
  the test set with ``val_fraction=0``.
- ``mvtec3d_cls``: the primary study's "MVTec" object classification. Not MVTec 3D-AD (the name is
  kept for existing run ids): the synthetic 10-object set of Schuerrle et al. 2023 (objects of MVTec
  ITODD, Drost et al. 2017; :data:`MVTEC_CLS_OBJECTS`) from Kaggle: 224 x 224 JPEGs with COCO
  annotations, one object per image, whose category is the class. Every COCO JSON up to three folders
  below ``root`` is merged, an image's ``file_name`` resolved next to its JSON, in an ``images/``
  folder nearby or under ``root``; class folders (``root/<class>/*.jpg``, optionally under
  ``train/ valid/ test/``) work too (our reading of the Kaggle archive, unchecked from here). The
  images are pooled and split 70 / 20 / 10 (train / test / val) as in the paper.
- ``mvtec3d_cls_small``: the same set reduced to BloodMNIST's size, the paper's second run (a
  :data:`DATASET_VARIANTS` entry: ``mvtec3d_cls`` with ``max_samples: 17092``).
- ``cifar10`` / ``cifar100``: CIFAR (Krizhevsky 2009) read through torchvision; the archive is
  downloaded (MD5-verified) when absent. Validation is a stratified ``val_fraction`` (default 10 %)
  of the official training set.
- ``digits``: scikit-learn's bundled 8 x 8 digits (UCI optdigits test set, 1,797 images), fully
  offline: the default of notebook parameter cells and smoke runs. Values 0..16 are scaled to
  0..255; split 70 / 15 / 15.

Common options: ``max_samples`` (stratified cap on the whole dataset; official splits shrink in
proportion) and ``train_subset`` / ``val_subset`` / ``test_subset`` (stratified cap on one split),
which keep every class when the cap allows. Splits and subsets are deterministic for the seed, and
stratified wherever the source has no official split.

Where data lives: ``root`` if given, else a dataset's environment variable (``$MEDMNIST_ROOT``,
``$VISA_ROOT``, ``$MVTEC3D_CLS_ROOT``, ``$CIFAR_ROOT``), else ``$PRUNING_STUDY_DATA``, else
``~/.cache/pruning-study/data`` (BloodMNIST: ``~/.medmnist``). One folder can hold them all:
``<root>/bloodmnist.npz``, ``<root>/visa/...``, ``<root>/mvtec3d_cls/...``, ``<root>/cifar-10-batches-py``.
VisA and MVTec are decoded once into a ``.npy`` cache under ``cache_dir`` (default
``$PRUNING_STUDY_CACHE`` or ``~/.cache/pruning-study/decoded``; see :mod:`~helpers.data.decode`).

Modules: :mod:`~helpers.data.registry` (the entry point), :mod:`~helpers.data.splits`,
:mod:`~helpers.data.fetch`, :mod:`~helpers.data.decode`, and one reader per source. Their public names
are importable from ``helpers.data`` itself.
"""

from __future__ import annotations

from helpers.data.bloodmnist import BLOODMNIST_CLASSES, BLOODMNIST_MD5, BLOODMNIST_SIZES, BLOODMNIST_WHEEL
from helpers.data.fetch import default_data_root, file_md5
from helpers.data.mvtec import MVTEC_CLS_OBJECTS
from helpers.data.registry import (
    DATASETS,
    DATASET_OPTIONS,
    DATASET_VARIANTS,
    ON_DISK_READERS,
    RUNNER_OPTIONS,
    STREAM_CHOICES,
    check_stream,
    dataset_reader,
    load_splits,
)
from helpers.data.splits import (
    ChecksumError,
    DatasetNotFoundError,
    DiskImages,
    Split,
    UnknownDatasetError,
    UnknownOptionError,
    stratified_split,
    stratified_subset,
)
from helpers.data.visa import VISA_OBJECTS

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
