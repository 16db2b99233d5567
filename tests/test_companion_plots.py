"""helpers.plots' companion-study comparisons with the published tables, on small hand-made tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from helpers import plots
from helpers.published import PUBLISHED_CRITERIA


def _criteria_runs() -> pd.DataFrame:
    rows = []
    for seed, (before, after) in enumerate([(0.95, 0.93), (0.97, 0.93)]):
        for criterion, shift in (("greedy_output_norm", 0.0), ("l1", -0.01), ("random", -0.05)):
            rows.append({"run_id": f"c-{criterion}-{seed}", "dataset": "cifar10", "model": "resnet18_cifar",
                         "method": "criteria", "scenario": "conv0.4_linear0", "seed": seed, "status": "completed",
                         "criterion": criterion, "accuracy_before": before, "accuracy_finetuned": after + shift})  # fmt: skip
    rows.append({"run_id": "d", "dataset": "cifar10", "model": "resnet18_cifar", "method": "dense", "scenario": "none",
                 "seed": 0, "status": "completed", "criterion": math.nan})  # fmt: skip
    return pd.DataFrame(rows)


def test_published_criteria_table_leads_with_the_drop_and_sets_ours_beside_the_paper():
    table = plots.published_criteria_table(_criteria_runs())
    assert list(table.columns[4:6]) == ["drop, ours (pp)", "drop, published (pp)"]
    row = table[(table["dataset"] == "CIFAR-10") & (table["model"] == "ResNet18") & (table["criterion"] == "l1")].iloc[0]
    assert row["our model"] == "ResNet18 (CIFAR)"
    assert row["before, ours (%)"] == pytest.approx(96.0) and row["after fine-tuning, ours (%)"] == pytest.approx(92.0)
    assert row["drop, ours (pp)"] == pytest.approx(4.0)
    assert row["drop, published (pp)"] == pytest.approx(94.41 - 93.38)
    assert row["source"].endswith("Table 1")
    # every published figure is in the table, also where this study has no run
    assert len(table[table["source"] != ""]) == len([k for k in PUBLISHED_CRITERIA if k[2] != "pre_pruning"])
    imagenet = table[table["dataset"] == "ImageNet"]
    assert set(imagenet["criterion"]) == {"greedy_output_norm", "l1", "bn_slimming"} and imagenet["drop, ours (pp)"].isna().all()
    # a criterion the paper did not test is listed with ours only
    random = table[(table["criterion"] == "random")].iloc[0]
    assert math.isnan(random["drop, published (pp)"]) and random["drop, ours (pp)"] == pytest.approx(8.0)
    assert plots.published_criteria_table(None)["drop, ours (pp)"].isna().all()


def test_criteria_vs_published_draws_ours_and_published_drops(tmp_path):
    fig = plots.criteria_vs_published(_criteria_runs(), tmp_path)
    titles = [ax.get_title() for ax in fig.axes]
    resnet = next(ax for ax in fig.axes if ax.get_title().startswith("CIFAR-10 / ResNet18"))
    assert "ours 96.0 %" in resnet.get_title() and "published 94.4 %" in resnet.get_title()
    heights = sorted(round(p.get_height(), 2) for p in resnet.patches)
    assert 4.0 in heights and round(94.41 - 93.38, 2) in heights
    assert any(t.startswith("ImageNet / VGG16") for t in titles)  # published-only panels are shown too
    assert (tmp_path / "criteria_vs_published.png").stat().st_size > 10_000


def _granularity_tables(flip_time: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    # size and accuracy ordered as Gurram et al. (weight > neuron > structured > unstructured > layer in size)
    values = {"weight": (75, 65, 91.0), "neuron": (60, 55, 89.5), "structured": (50, 50, 90.0),
              "unstructured": (45, 48, 90.5), "layer": (40, 45, 87.0)}  # fmt: skip
    runs = [{"run_id": "dense", "dataset": "bloodmnist", "model": "vgg16_bn_cifar", "method": "dense", "scenario": "none",
             "seed": 0, "status": "completed", "granularity": math.nan, "budget": 0.0, "test_accuracy": 0.93}]  # fmt: skip
    inference = [{"run_id": "dense", "variant": "dense", "model_size_mb": 150.0, "latency_ms_mean": 100.0, "macs": 1e6}]
    for g, (size, time, acc) in values.items():
        runs.append({"run_id": g, "dataset": "bloodmnist", "model": "vgg16_bn_cifar", "method": "granularity",
                     "scenario": "budget0.5", "seed": 0, "status": "completed", "granularity": g, "budget": 0.5,
                     "test_accuracy": acc / 100})  # fmt: skip
        inference.append({"run_id": g, "variant": "masked", "model_size_mb": size / 10,
                          "latency_ms_mean": -time if flip_time else time, "macs": 1e6})  # fmt: skip
    return pd.DataFrame(runs), pd.DataFrame(inference)


def test_granularity_ordering_ranks_both_sides_among_the_granularities_that_ran():
    table = plots.granularity_ordering_table(*_granularity_tables())
    assert set(table["measure"]) == {"size", "inference_time", "test_accuracy"}
    assert "dense" not in set(table["granularity"])
    size = table[table["measure"] == "size"].set_index("granularity")
    assert size.loc["layer", "published rank"] == 1 and size.loc["weight", "published rank"] == 5
    assert (size["ours rank"] == size["published rank"]).all()
    accuracy = table[table["measure"] == "test_accuracy"].set_index("granularity")
    assert accuracy.loc["weight", "ours rank"] == 1  # higher accuracy ranks first


def test_rank_agreement_gives_kendall_tau_per_measure(tmp_path):
    fig, taus = plots.granularity_rank_agreement(*_granularity_tables(flip_time=True), tmp_path)
    tau = taus.set_index("measure")["kendall_tau"]
    assert tau["size"] == pytest.approx(1.0) and tau["test_accuracy"] == pytest.approx(1.0)
    assert tau["inference_time"] == pytest.approx(-1.0)  # our times reversed
    assert (taus["granularities"] == 5).all()
    assert len(fig.axes) == 3 and "τ = 1.00" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert (tmp_path / "granularity_rank_agreement.png").stat().st_size > 10_000
