"""helpers.published: the published figures shown beside the companion studies equal the reference table.

The reference table (``../shared/reference/published_results.csv`` beside the repository) is only for
checking: the project never needs it, so these tests skip where it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from helpers.published import (
    PUBLISHED_CRITERIA,
    PUBLISHED_GRANULARITY,
    model_family,
    published_rows,
)

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "published_results.csv"


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    if not REFERENCE.is_file():
        pytest.skip(f"reference table {REFERENCE} not present (it is optional)")
    table = pd.read_csv(REFERENCE)
    return table[table["study"].isin(["criteria", "granularity"])]


def test_every_published_figure_equals_the_reference_table(reference):
    ours = pd.DataFrame(published_rows())
    keys = ["source", "study", "dataset", "model", "method", "metric"]
    merged = reference.merge(ours, on=keys, how="outer", suffixes=("_reference", "_package"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", keys + ["_merge"]]
    assert len(merged) == len(reference) == len(ours)
    values = pd.to_numeric(merged["value_reference"])
    assert all(math.isclose(a, b) for a, b in zip(values, merged["value_package"])), merged
    assert (merged["unit_reference"] == merged["unit_package"]).all()


def test_each_figure_names_its_source_and_table():
    assert PUBLISHED_CRITERIA[("cifar10", "vgg16", "pre_pruning")] == (93.18, "Lajić, Peer, Emeršič 2025 (ROSUS 2025), Table 1")
    assert PUBLISHED_CRITERIA[("imagenet", "vgg16", "l1")][1].endswith("Table 3")
    assert all("Gurram" in source and "not named" in source for _, source in PUBLISHED_GRANULARITY.values())
    assert "results text" in PUBLISHED_GRANULARITY[("layer", "size")][1]
    assert "Table 2" in PUBLISHED_GRANULARITY[("weight", "inference_time")][1]


def test_study_models_map_to_the_published_families():
    assert [model_family(m) for m in ("vgg16_bn_cifar", "vgg16_bn", "vgg16", "resnet18_cifar", "resnet50")] == [
        "vgg16", "vgg16", "vgg16", "resnet18", "resnet50"]  # fmt: skip
