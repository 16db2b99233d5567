"""helpers.published: the primary study's published figures (and the BloodMNIST baselines Table 1 is read
against) equal the reference table, and each names its source.

The reference table (``../shared/reference/published_results.csv`` beside the repository) is only for
checking: the project never needs it, so the comparison skips where it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from helpers.published import (
    DOUZANDEH_ZENOOZI_2025,
    PAPER_PROTOCOL,
    PUBLISHED_BLOODMNIST_BASELINES,
    PUBLISHED_PRIMARY,
    published_primary_rows,
)

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "published_results.csv"
KEYS = ["source", "study", "dataset", "model", "method", "metric"]


def _value(text: str) -> float | tuple[float, float]:
    """A reference-table value: a number, or a range written ``low-high``."""
    low, sep, high = str(text).partition("-")
    if sep and low and "e" not in low.lower():
        return (float(low), float(high))
    return float(text)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    if not REFERENCE.is_file():
        pytest.skip(f"reference table {REFERENCE} not present (it is optional)")
    table = pd.read_csv(REFERENCE, dtype={"value": str})
    return table[table["source"].isin(["DouzandehZenoozi2025", "Doerrich2024", "Yang2023"])]


def test_every_primary_figure_equals_the_reference_table(reference):
    ours = pd.DataFrame(published_primary_rows())
    merged = reference.merge(ours, on=KEYS, how="outer", suffixes=("_reference", "_package"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", [*KEYS, "_merge"]]
    assert len(merged) == len(reference) == len(ours)
    for ref, pkg in zip(merged["value_reference"], merged["value_package"]):
        ref = _value(ref)
        if isinstance(ref, tuple):
            assert tuple(pkg) == pytest.approx(ref)
        else:
            assert math.isclose(ref, pkg), (ref, pkg)
    assert (merged["unit_reference"] == merged["unit_package"]).all()


def test_table1_sparse_figures_are_there_with_their_caveat():
    vgg = PUBLISHED_PRIMARY[("bloodmnist", "vgg16", "mixed sparse", "test_accuracy")]
    resnet = PUBLISHED_PRIMARY[("bloodmnist", "resnet18", "mixed sparse", "test_accuracy")]
    assert (vgg[0], resnet[0]) == (92.4, 92.3)
    for _, unit, source in (vgg, resnet):
        assert unit == "%" and source.startswith(DOUZANDEH_ZENOOZI_2025)
        assert "Table 1" in source and "third-party" in source


def test_every_figure_names_its_source():
    assert all(source.startswith(DOUZANDEH_ZENOOZI_2025) for _, _, source in PUBLISHED_PRIMARY.values())
    for refs in PUBLISHED_BLOODMNIST_BASELINES.values():
        assert all(("Doerrich" in source or "Yang" in source) and key in ("Doerrich2024", "Yang2023")
                   for _, source, key in refs)  # fmt: skip


def test_paper_protocol_is_the_design_protocol():
    assert PAPER_PROTOCOL["optimizer"] == "adam" and PAPER_PROTOCOL["lr"] == 1e-4
    assert (PAPER_PROTOCOL["batch_size"], PAPER_PROTOCOL["epochs"], PAPER_PROTOCOL["seeds"]) == (64, 50, 3)
    assert PAPER_PROTOCOL["training_form"] == "masked" and PAPER_PROTOCOL["set_allocation"] == "scenario"
