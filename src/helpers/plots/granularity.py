"""Figures and tables of the granularity study (Gurram, Sindhura, Bandari 2025, notebook 06): size,
latency, accuracy and MACs per granularity, and how their ordering agrees with the published one.

Drawn from :mod:`helpers.companion`'s runs: method ``granularity`` (each with its ``granularity``) and ``dense``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from helpers.plots.style import (
    ID_COLUMNS,
    METHOD_PALETTE,
    _CB,
    _handles,
    _label,
    _legend_outside,
    _ordered_present,
    _panel_pairs,
    _require,
    _round,
    _seed_note,
    _suptitle,
    _theme,
    mean_interval,
    save_figure,
)
from helpers.published import GRANULARITY_MEASURES, PUBLISHED_GRANULARITY


GRANULARITY_ORDER: tuple[str, ...] = ("weight", "unstructured", "neuron", "structured", "layer")
#: One colour per granularity in every 06 figure (the two weight-level ones in two blues); dense in dark grey.
GRANULARITY_PALETTE: dict[str, str] = {
    "dense": METHOD_PALETTE["dense"],
    "weight": _CB[0],
    "unstructured": _CB[9],
    "neuron": _CB[1],
    "structured": _CB[2],
    "layer": _CB[4],
}
GRANULARITY_LABELS: dict[str, str] = {
    "dense": "dense (baseline)",
    "weight": "weight (global magnitude)",
    "unstructured": "unstructured (per layer)",
    "neuron": "neuron (hidden linear units)",
    "structured": "structured (filters)",
    "layer": "layer (blocks / convs)",
}


def _granularity_frame(runs: pd.DataFrame, inference: pd.DataFrame) -> pd.DataFrame:
    """Dense and granularity runs with their measurement joined in, one row per run, with the values
    the 06 figures and table show: ``size_mb``, ``latency_ms``, ``accuracy_pct``, ``macs_m``."""
    data = runs[runs["method"].isin(["dense", "granularity"])].copy()
    _require(data, [*ID_COLUMNS, "status", "granularity", "budget", "test_accuracy"], "granularity figures")
    _require(inference, ["run_id", "model_size_mb", "latency_ms_mean", "macs"], "granularity figures")
    if not (data["method"] == "granularity").any():
        raise ValueError("granularity figures: the runs table has no granularity runs; run a study with study_kind: granularity")
    measured = inference[["run_id", "variant", "model_size_mb", "latency_ms_mean", "macs"]
                         + [c for c in ("size_format", "latency_ms_sparse_linear") if c in inference.columns]]
    data = data.merge(measured.drop_duplicates("run_id"), on="run_id", how="left")
    data["granularity"] = data["granularity"].where(data["method"] != "dense", "dense")
    data["size_mb"] = pd.to_numeric(data["model_size_mb"], errors="coerce")
    data["latency_ms"] = pd.to_numeric(data["latency_ms_mean"], errors="coerce")
    data["accuracy_pct"] = pd.to_numeric(data["test_accuracy"], errors="coerce") * 100.0
    data["macs_m"] = pd.to_numeric(data["macs"], errors="coerce") / 1e6
    return data


_GRANULARITY_METRICS = (
    ("size_mb", "size on disk (MiB)"),
    ("latency_ms", "CPU time per image (ms)"),
    ("accuracy_pct", "test accuracy (%)"),
    ("macs_m", "MACs per image (millions)"),
)


def granularity_tradeoffs(runs: pd.DataFrame, inference: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Size on disk, CPU latency per image, accuracy and MACs per granularity, as Gurram et al.'s table: rows =
    dataset x model, columns = the four metrics; bars by parameter budget, one per granularity; dense dashed;
    "n/a" where the model has nothing to remove at that granularity (``not_applicable``)."""
    data = _granularity_frame(runs, inference)
    sparse = data[data["method"] == "granularity"]
    granularities = _ordered_present(sparse["granularity"], GRANULARITY_ORDER)
    budgets = sorted(pd.to_numeric(sparse["budget"], errors="coerce").dropna().unique())
    pairs = [(d, m) for d in _panel_pairs(data)[0] for m in _panel_pairs(data)[1] if (d, m) in _panel_pairs(data)[2]]
    width = 0.8 / max(len(granularities), 1)
    with _theme():
        fig, axes = plt.subplots(len(pairs), len(_GRANULARITY_METRICS), squeeze=False, layout="constrained",
                                 figsize=(3.3 * len(_GRANULARITY_METRICS), 2.9 * len(pairs)))  # fmt: skip
        for i, (dataset, model) in enumerate(pairs):
            panel = data[(data["dataset"] == dataset) & (data["model"] == model)]
            dense = panel[(panel["method"] == "dense") & (panel["status"] == "completed")]
            for j, (value, label) in enumerate(_GRANULARITY_METRICS):
                ax = axes[i][j]
                for bi, budget in enumerate(budgets):
                    for gi, granularity in enumerate(granularities):
                        rows = panel[(panel["granularity"] == granularity) & (pd.to_numeric(panel["budget"]) == budget)]
                        if rows.empty:
                            continue
                        x = bi - 0.4 + width * (gi + 0.5)
                        mean, low, high = mean_interval(rows[value])
                        if not np.isfinite(mean):
                            ax.text(x, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                                    color=GRANULARITY_PALETTE.get(granularity, "#999999"))  # fmt: skip
                            continue
                        yerr = [[mean - low], [high - mean]] if rows[value].notna().sum() > 1 else None
                        ax.bar(x, mean, width=width * 0.95, color=GRANULARITY_PALETTE.get(granularity, "#999999"),
                               edgecolor="black", linewidth=0.5, yerr=yerr, capsize=2)  # fmt: skip
                if len(dense):
                    ax.axhline(mean_interval(dense[value])[0], color=GRANULARITY_PALETTE["dense"], linestyle="--",
                               linewidth=1.2, zorder=0.5)  # fmt: skip
                ax.set_xticks(range(len(budgets)))
                ax.set_xticklabels([f"{100 * b:g} %" for b in budgets])
                ax.set_xlim(-0.5, len(budgets) - 0.5)
                ax.set_xlabel("parameter budget removed")
                ax.set_ylabel(label)
                ax.set_ylim(bottom=0)
                if value == "accuracy_pct":
                    ax.set_ylim(0, 105)
                ax.grid(axis="x", visible=False)
                ax.set_title(f"{_label('dataset', dataset)} / {_label('model', model)}", fontsize="small")
        handles, labels = _handles(granularities, GRANULARITY_PALETTE, GRANULARITY_LABELS)
        handles.append(matplotlib.lines.Line2D([], [], color=GRANULARITY_PALETTE["dense"], linestyle="--"))
        labels.append(GRANULARITY_LABELS["dense"])
        _legend_outside(fig, handles, labels, "granularity")
        _suptitle(fig, "Granularity study (after Gurram et al. 2025): size on disk in the format that benefits, CPU "
                       f"time per image (batch 1), test accuracy and MACs at matched parameter budgets; {_seed_note(data)}")
    save_figure(fig, figures_dir, "granularity_tradeoffs")
    return fig


def granularity_table(runs: pd.DataFrame, inference: pd.DataFrame) -> pd.DataFrame:
    """Gurram et al.'s table, measured: per dataset, model and budget, the dense baseline then each
    granularity with its size on disk (and format), CPU time per image, accuracy, MACs and the budget
    actually removed (mean over seeds). A granularity the model does not have reads "not applicable"."""
    data = _granularity_frame(runs, inference)
    rows = []
    budgets = sorted(pd.to_numeric(data.loc[data["method"] == "granularity", "budget"], errors="coerce").dropna().unique())
    for (dataset, model), panel in data.groupby(["dataset", "model"], sort=False):
        dense = panel[panel["method"] == "dense"]
        for budget in budgets:
            sparse = panel[(panel["method"] == "granularity") & (pd.to_numeric(panel["budget"]) == budget)]
            for granularity in ["dense", *_ordered_present(sparse["granularity"], GRANULARITY_ORDER)]:
                group = dense if granularity == "dense" else sparse[sparse["granularity"] == granularity]
                row = {"dataset": _label("dataset", dataset), "model": _label("model", model),
                       "budget (%)": 0.0 if granularity == "dense" else 100 * budget, "granularity": granularity}  # fmt: skip
                if (group["status"] == "not_applicable").all():
                    row["status"] = "not applicable"
                    rows.append(row)
                    continue
                row["status"] = "completed" if (group["status"] == "completed").all() else ", ".join(group["status"].unique())
                for col, name, digits in (("size_mb", "size (MiB)", 2), ("latency_ms", "time / image (ms)", 2),
                                          ("accuracy_pct", "accuracy (%)", 1), ("macs_m", "MACs (M)", 1)):  # fmt: skip
                    row[name] = round(mean_interval(group[col])[0], digits)
                if "size_format" in group:
                    row["size format"] = group["size_format"].iloc[0]
                achieved = pd.to_numeric(group.get("budget_achieved", pd.Series(dtype=float)), errors="coerce")
                row["removed (%)"] = 0.0 if granularity == "dense" else round(100 * mean_interval(achieved)[0], 1)
                rows.append(row)
    return pd.DataFrame(rows)


#: Gurram et al.'s measures -> the column of :func:`_granularity_frame` that measures it here.
_ORDERING_MEASURES: dict[str, tuple[str, str]] = {
    "size": ("size_mb", "size on disk"),
    "inference_time": ("latency_ms", "CPU time per image"),
    "test_accuracy": ("accuracy_pct", "test accuracy"),
}


def granularity_ordering_table(runs: pd.DataFrame, inference: pd.DataFrame) -> pd.DataFrame:
    """Gurram et al.'s ordering of the granularities beside ours per measure: one row per case (dataset, model,
    budget) x measure x granularity: published value and rank, ours (mean over seeds) and rank; rank 1 is the best
    (smallest, fastest, most accurate; ties share the lower). Only granularities run in the case are ranked, both
    sides, dense excluded: Gurram et al. name neither model nor dataset, so only their order compares with ours."""
    data = _granularity_frame(runs, inference)
    data = data[(data["method"] == "granularity") & (data["status"] == "completed")]
    rows = []
    for (dataset, model, budget), case in data.groupby(["dataset", "model", "budget"], sort=False):
        granularities = [g for g in GRANULARITY_ORDER if g in set(case["granularity"])]
        for measure, (column, _) in _ORDERING_MEASURES.items():
            ours = pd.Series({g: mean_interval(case.loc[case["granularity"] == g, column])[0] for g in granularities})
            published = pd.Series({g: PUBLISHED_GRANULARITY[(g, measure)][0] for g in granularities})
            ascending = GRANULARITY_MEASURES[measure][1] == "lower"
            our_rank = ours.rank(ascending=ascending, method="min")
            pub_rank = published.rank(ascending=ascending, method="min")
            for g in granularities:
                rows.append({
                    "dataset": _label("dataset", dataset), "model": _label("model", model),
                    "budget (%)": 100 * float(budget), "measure": measure, "granularity": g,
                    "published": published[g], "published unit": GRANULARITY_MEASURES[measure][0],
                    "published rank": int(pub_rank[g]), "ours": _round(ours[g], 3),
                    "ours rank": int(our_rank[g]) if np.isfinite(ours[g]) else math.nan,
                })  # fmt: skip
    return pd.DataFrame(rows)


def _kendall(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, model, budget, measure), group in table.groupby(["dataset", "model", "budget (%)", "measure"], sort=False):
        group = group.dropna(subset=["ours rank"])
        tau = scipy_stats.kendalltau(group["published rank"], group["ours rank"]).statistic if len(group) > 1 else math.nan
        rows.append({"dataset": dataset, "model": model, "budget (%)": budget, "measure": measure,
                     "kendall_tau": _round(tau, 3), "granularities": len(group)})  # fmt: skip
    return pd.DataFrame(rows)


def granularity_rank_agreement(runs: pd.DataFrame, inference: pd.DataFrame, figures_dir: str | Path) -> tuple[Figure, pd.DataFrame]:
    """Does our ordering of the granularities agree with Gurram et al.'s? One panel per measure: each granularity
    at (published rank, our rank), one colour per case (dataset, model, budget), the diagonal is agreement.
    Returns the figure and Kendall's tau-b per case and measure (``kendall_tau``, also in the legend;
    ``granularities``: how many were ranked; with 4-5 points tau moves in steps of 0.2-0.33)."""
    table = granularity_ordering_table(runs, inference)
    if table.empty:
        raise ValueError("granularity_rank_agreement: no completed granularity runs to rank")
    taus = _kendall(table)
    cases = list(dict.fromkeys(zip(table["dataset"], table["model"], table["budget (%)"])))
    colours = dict(zip(cases, sns.color_palette("colorblind", max(len(cases), 1)).as_hex()))
    n_max = int(table["published rank"].max())
    with _theme():
        fig, axes = plt.subplots(1, len(_ORDERING_MEASURES), squeeze=False, layout="constrained", figsize=(3.6 * 3, 3.6))
        for ax, (measure, (_, label)) in zip(axes[0], _ORDERING_MEASURES.items()):
            ax.plot([0.5, n_max + 0.5], [0.5, n_max + 0.5], color="#8c8c8c", linestyle="--", linewidth=1, zorder=0)
            for k, case in enumerate(cases):
                rows = table[(table["measure"] == measure) & (table["dataset"] == case[0]) & (table["model"] == case[1])
                             & (table["budget (%)"] == case[2])].dropna(subset=["ours rank"])  # fmt: skip
                jitter = (k - (len(cases) - 1) / 2) * 0.08
                tau = taus[(taus["measure"] == measure) & (taus["dataset"] == case[0]) & (taus["model"] == case[1])
                           & (taus["budget (%)"] == case[2])]["kendall_tau"].iloc[0]  # fmt: skip
                ax.scatter(rows["published rank"] + jitter, rows["ours rank"] + jitter, color=colours[case], s=36,
                           edgecolor="black", linewidth=0.5, label=f"{case[0]} / {case[1]} / {case[2]:g} %: τ = {tau:.2f}")  # fmt: skip
                for _, row in rows.iterrows():
                    ax.annotate(row["granularity"], (row["published rank"] + jitter, row["ours rank"] + jitter),
                                fontsize=6, xytext=(3, 3), textcoords="offset points")  # fmt: skip
            ax.set_xlim(0.5, n_max + 0.5)
            ax.set_ylim(n_max + 0.5, 0.5)
            ax.set_xticks(range(1, n_max + 1))
            ax.set_yticks(range(1, n_max + 1))
            ax.set_xlabel("Gurram et al.'s rank (1 = best)")
            ax.set_ylabel("our rank (1 = best)")
            ax.set_title(label, fontsize="small")
            ax.legend(fontsize=6, loc="lower left", frameon=True)
        _suptitle(fig, "Granularity study beside Gurram et al. 2025: the order of the granularities by size, time and "
                       "accuracy (their model and dataset are not named, so only the order is compared; Kendall's τ, "
                       "1 = same order, -1 = reversed)")
    save_figure(fig, figures_dir, "granularity_rank_agreement")
    return fig, taus
