"""Published figures that the companion studies' notebooks (05, 06) show beside their own, with sources.

Copied by hand from the papers (the project never reads the reference folder at run time);
``tests/test_companion_published.py`` checks every entry against the project's reference table
(``../shared/reference/published_results.csv``) where that file is present.

- :data:`PUBLISHED_CRITERIA`: Lajić, Peer, Emeršič, *Exploring the differences in pruning methods for
  convolutional neural networks* (ROSUS 2025), Tables 1-3: top-1 test accuracy (%) of VGG16, ResNet18
  and ResNet50 on CIFAR-10 and CIFAR-100 (trained from scratch; CIFAR-style networks) and of a pretrained
  VGG16 on ImageNet, before pruning (``pre_pruning``) and after removing 40 % of the filters in one shot
  with each criterion and fine-tuning with SGD. Their BN slimming is without the L1 penalty on gamma
  during training: it matches this project's ``bn_slimming``, not ``bn_slimming_l1``.
- :data:`PUBLISHED_GRANULARITY`: Gurram, Sindhura, Bandari, *A study on neural network pruning techniques
  for efficient model deployment* (2025), Tables 1-3 and the results text: model size (MB), inference
  time (ms) and accuracy (%) of a dense model and of five granularities. The paper names neither its
  model nor its dataset, so only the *ordering* of the granularities can be compared with a measurement.
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
    family = model.removesuffix("_cifar").removesuffix("_bn")
    return family


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
