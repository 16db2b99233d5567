"""Published figures that the studies' notebooks show beside their own, with sources.

Copied by hand from the papers (the project never reads the reference folder at run time);
``tests/test_companion_published.py`` checks every entry against the project's reference table
(``../shared/reference/published_results.csv``) where that file is present.

- :data:`PUBLISHED_CRITERIA` (notebook 05): Lajić, Peer, Emeršič, *Exploring the differences in pruning methods
  for convolutional neural networks* (ROSUS 2025), Tables 1-3: top-1 test accuracy (%) of VGG16, ResNet18
  and ResNet50 on CIFAR-10 and CIFAR-100 (trained from scratch; CIFAR-style networks) and of a pretrained
  VGG16 on ImageNet, before pruning (``pre_pruning``) and after removing 40 % of the filters in one shot
  with each criterion and fine-tuning with SGD. Their BN slimming is without the L1 penalty on gamma
  during training: it matches this project's ``bn_slimming``, not ``bn_slimming_l1``.
- :data:`PUBLISHED_GRANULARITY` (notebook 06): Gurram, Sindhura, Bandari, *A study on neural network pruning
  techniques for efficient model deployment* (2025), Tables 1-3 and the results text: model size (MB),
  inference time (ms) and accuracy (%) of a dense model and of five granularities. The paper names neither
  its model nor its dataset, so only the *ordering* of the granularities can be compared with a measurement.
- :data:`PUBLISHED_PRIMARY` (notebooks 01-04): Douzandeh Zenoozi, Erhan, Liotta, Cavallaro, *A comparative
  study of neural network pruning strategies for industrial applications* (Frontiers in Computer Science
  2025): the figures its text states as numbers, among them Table 1's sparse (``mixed``) BloodMNIST
  accuracies as quoted by a third-party summary (the table body itself was not available).
- :data:`PUBLISHED_BLOODMNIST_BASELINES`: the dense BloodMNIST baselines at 28 px that Table 1 is read
  against: Doerrich, Di Salvo, Brockmann, Ledig, *Rethinking model prototyping through the MedMNIST+ dataset
  collection* (Scientific Reports 2025; arXiv 2404.15786, 2024) and Yang et al., *MedMNIST v2 - A
  large-scale lightweight benchmark for 2D and 3D biomedical image classification* (Scientific Data 10, 41, 2023).
- :data:`PAPER_PROTOCOL`: the primary study's training configuration, compared in notebook 01's Table 3.
"""

from __future__ import annotations

__all__ = [
    "LAJIC_2025",
    "GURRAM_2025",
    "PUBLISHED_CRITERIA",
    "PUBLISHED_CRITERIA_MODELS",
    "PUBLISHED_GRANULARITY",
    "GRANULARITY_MEASURES",
    "model_family",
    "published_rows",
    "DOUZANDEH_ZENOOZI_2025",
    "DOERRICH_2024",
    "YANG_2023",
    "PUBLISHED_PRIMARY",
    "PUBLISHED_BLOODMNIST_BASELINES",
    "PAPER_PROTOCOL",
    "published_primary_rows",
]

LAJIC_2025 = "Lajić, Peer, Emeršič 2025 (ROSUS 2025)"
GURRAM_2025 = "Gurram, Sindhura, Bandari 2025"

_TABLE = {"cifar10": "Table 1", "cifar100": "Table 2", "imagenet": "Table 3"}
_ACCURACY = {  # (dataset, model) -> pre_pruning, greedy_output_norm, l1, bn_slimming (top-1 %)
    ("cifar10", "vgg16"): (93.18, 91.01, 90.67, 90.66),
    ("cifar10", "resnet18"): (94.41, 93.37, 93.38, 93.54),
    ("cifar10", "resnet50"): (94.96, 93.69, 93.99, 92.63),
    ("cifar100", "vgg16"): (71.50, 68.26, 67.26, 67.92),
    ("cifar100", "resnet18"): (75.72, 74.11, 75.08, 74.95),
    ("cifar100", "resnet50"): (78.76, 76.87, 75.66, 77.40),
    ("imagenet", "vgg16"): (73.42, 68.39, 68.77, 68.50),
}
_METHODS = ("pre_pruning", "greedy_output_norm", "l1", "bn_slimming")

#: (dataset, model family, method) -> (top-1 test accuracy %, source). ``method`` is ``pre_pruning`` (the
#: trained model) or one of the paper's criteria in this project's names.
PUBLISHED_CRITERIA: dict[tuple[str, str, str], tuple[float, str]] = {
    (dataset, model, method): (value, f"{LAJIC_2025}, {_TABLE[dataset]}")
    for (dataset, model), values in _ACCURACY.items()
    for method, value in zip(_METHODS, values)
}
#: The model families of Lajić et al.'s tables.
PUBLISHED_CRITERIA_MODELS: tuple[str, ...] = ("vgg16", "resnet18", "resnet50")

#: Gurram et al.'s measures: this project's name -> (the paper's unit, what a better value is).
GRANULARITY_MEASURES: dict[str, tuple[str, str]] = {
    "size": ("MB", "lower"),
    "inference_time": ("ms", "lower"),
    "test_accuracy": ("%", "higher"),
}
_GURRAM = {  # granularity -> size MB, inference time ms, accuracy %; dense and weight..structured in Tables 1-3
    "dense": (150.0, 100.0, 92.5),
    "weight": (75.0, 65.0, 91.0),
    "neuron": (60.0, 55.0, 89.5),
    "structured": (50.0, 50.0, 90.0),
    "unstructured": (45.0, 48.0, 90.5),
    "layer": (40.0, 45.0, 87.0),
}
_GURRAM_WHERE = {"size": "Table 1", "inference_time": "Table 2", "test_accuracy": "Table 3"}

#: (granularity, measure) -> (value, source); granularity ``dense`` is the unpruned model. The
#: unstructured and layer figures are stated in the results text, not in the tables.
PUBLISHED_GRANULARITY: dict[tuple[str, str], tuple[float, str]] = {
    (granularity, measure): (
        values[i],
        f"{GURRAM_2025}, {'results text' if granularity in ('unstructured', 'layer') else _GURRAM_WHERE[measure]}; "
        "model and dataset not named",
    )
    for granularity, values in _GURRAM.items()
    for i, measure in enumerate(GRANULARITY_MEASURES)
}


def model_family(model: str) -> str:
    """The published model a study model corresponds to: ``vgg16_bn_cifar`` -> ``vgg16``, ``resnet18_cifar`` -> ``resnet18``."""
    return model.removesuffix("_cifar").removesuffix("_bn")


def published_rows() -> list[dict[str, object]]:
    """Every entry in the reference table's long shape (``source``, ``study``, ``dataset``, ``model``,
    ``method``, ``metric``, ``value``, ``unit``), for checking against it."""
    rows: list[dict[str, object]] = []
    for (dataset, model, method), (value, _) in PUBLISHED_CRITERIA.items():
        rows.append({"source": "Lajic2025", "study": "criteria", "dataset": dataset, "model": model, "method": method,
                     "metric": "test_accuracy", "value": value, "unit": "%"})  # fmt: skip
    for (granularity, measure), (value, _) in PUBLISHED_GRANULARITY.items():
        rows.append({"source": "Gurram2025", "study": "granularity", "dataset": "unspecified", "model": "unspecified",
                     "method": granularity, "metric": measure, "value": value,
                     "unit": GRANULARITY_MEASURES[measure][0]})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------- primary study

DOUZANDEH_ZENOOZI_2025 = (
    "Douzandeh Zenoozi, Erhan, Liotta, Cavallaro 2025 (Frontiers in Computer Science, doi 10.3389/fcomp.2025.1563942)"
)
DOERRICH_2024 = "Doerrich et al. 2024 (MedMNIST+, arXiv 2404.15786)"
YANG_2023 = "Yang et al. 2023 (MedMNIST v2, Sci. Data 10:41)"

_TABLE1_QUOTE = (
    "Table 1 (best accuracy; conv 50 % / linear 80 %) as quoted by a third-party summary of the paper; the table "
    "body itself was not available, nor which sparse method it is"
)
_ENERGY_NOTE = "average over sparse and dense models; A100 GPU; Zeus"

#: (dataset, model, method, metric) -> (value, unit, source), in the reference table's names: ``model`` may be
#: ``all`` or ``vgg16 resnet18`` and ``method`` a description (``mixed sparse``, ``dense and sparse``) where the
#: paper states one figure for several. A range is a ``(low, high)`` tuple. Accuracies in %, energy in J,
#: time in s.
PUBLISHED_PRIMARY: dict[tuple[str, str, str, str], tuple[float | tuple[float, float], str, str]] = {
    ("bloodmnist", "vgg16", "mixed sparse", "test_accuracy"): (92.4, "%", f"{DOUZANDEH_ZENOOZI_2025}, {_TABLE1_QUOTE}"),
    ("bloodmnist", "resnet18", "mixed sparse", "test_accuracy"): (92.3, "%", f"{DOUZANDEH_ZENOOZI_2025}, {_TABLE1_QUOTE}"),
    ("visa", "vgg16 resnet18", "dense and sparse", "test_accuracy"): (
        86.0, "%", f"{DOUZANDEH_ZENOOZI_2025}, approximate figure stated in the related-work text"),
    ("visa", "all", "all", "majority_class_accuracy"): (
        88.9, "%", f"{DOUZANDEH_ZENOOZI_2025}: 9,621 normal of 10,821 images (derived from the stated counts)"),
    ("bloodmnist", "all", "set", "cpu_inference_time"): (
        (0.002, 0.008), "s", f"{DOUZANDEH_ZENOOZI_2025}: average per inference on a laptop CPU; SET equals dense in "
        "12 of 18 cases and is at most 0.002 s slower otherwise"),
    ("bloodmnist", "vgg16", "all (mean)", "training_energy"): (0.6e6, "J", f"{DOUZANDEH_ZENOOZI_2025}: {_ENERGY_NOTE}"),
    ("bloodmnist", "resnet18", "all (mean)", "training_energy"): (0.2e6, "J", f"{DOUZANDEH_ZENOOZI_2025}: {_ENERGY_NOTE}"),
    ("mvtec3d_cls", "vgg16", "all (mean)", "training_energy"): (2.7e6, "J", f"{DOUZANDEH_ZENOOZI_2025}: {_ENERGY_NOTE}"),
    ("mvtec3d_cls", "resnet18", "all (mean)", "training_energy"): (1.1e6, "J", f"{DOUZANDEH_ZENOOZI_2025}: {_ENERGY_NOTE}"),
}  # fmt: skip

#: (model, metric) -> [(value %, source, reference-table source key)]: dense BloodMNIST baselines at 28 px.
PUBLISHED_BLOODMNIST_BASELINES: dict[tuple[str, str], list[tuple[float, str, str]]] = {
    ("vgg16", "test_accuracy"): [(94.85, f"{DOERRICH_2024}, VGG16 end-to-end, 28 px", "Doerrich2024")],
    ("resnet18", "test_accuracy"): [
        (91.93, f"{DOERRICH_2024}, ResNet18 end-to-end, 28 px", "Doerrich2024"),
        (95.8, f"{YANG_2023}, ResNet-18 (28)", "Yang2023"),
    ],
    ("resnet18_224", "test_accuracy"): [(96.3, f"{YANG_2023}, ResNet-18 (224)", "Yang2023")],
    ("vgg16", "test_auc"): [(99.66, f"{DOERRICH_2024}, VGG16, 28 px", "Doerrich2024")],
    ("resnet18", "test_auc"): [
        (99.24, f"{DOERRICH_2024}, ResNet18, 28 px", "Doerrich2024"),
        (99.8, f"{YANG_2023}, ResNet-18 (28)", "Yang2023"),
    ],
}

#: The primary study's training protocol (its methods section, as DESIGN.md records it): setting -> value.
PAPER_PROTOCOL: dict[str, object] = {
    "optimizer": "adam",
    "lr": 1e-4,
    "batch_size": 64,
    "epochs": 50,
    "seeds": 3,
    "loss": "cross-entropy",
    "swap_fraction": 0.2,
    "finetune_epochs": 0,
    "training_form": "masked",
    "set_allocation": "scenario",
    "inference device": "cpu, batch 1",
}


def published_primary_rows() -> list[dict[str, object]]:
    """:data:`PUBLISHED_PRIMARY` and :data:`PUBLISHED_BLOODMNIST_BASELINES` in the reference table's long
    shape (``source``, ``study``, ``dataset``, ``model``, ``method``, ``metric``, ``value``, ``unit``)."""
    rows: list[dict[str, object]] = []
    for (dataset, model, method, metric), (value, unit, _) in PUBLISHED_PRIMARY.items():
        rows.append({"source": "DouzandehZenoozi2025", "study": "pruning", "dataset": dataset, "model": model,
                     "method": method, "metric": metric, "value": value, "unit": unit})  # fmt: skip
    for (model, metric), refs in PUBLISHED_BLOODMNIST_BASELINES.items():
        for value, _, key in refs:
            rows.append({"source": key, "study": "baseline", "dataset": "bloodmnist", "model": model,
                         "method": "dense", "metric": metric, "value": value, "unit": "%"})  # fmt: skip
    return rows
