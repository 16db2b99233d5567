"""Figures and tables of the criteria study (Lajić, Peer, Emeršič 2025, notebook 05): accuracy before,
right after and after fine-tuning per criterion, selection time, and the comparison with the published figures.

Drawn from the runs of :mod:`helpers.companion` with method ``criteria``, each with its ``criterion``.
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
from matplotlib.patches import Patch

from helpers.plots.style import (
    DATASET_LABELS,
    ID_COLUMNS,
    MODEL_LABELS,
    _CB,
    _handles,
    _label,
    _legend_outside,
    _ordered_present,
    _panel_grid,
    _require,
    _round,
    _seed_note,
    _suptitle,
    _theme,
    mean_interval,
    save_figure,
    summarize,
)
from helpers.published import PUBLISHED_CRITERIA, PUBLISHED_CRITERIA_MODELS, model_family


CRITERION_ORDER: tuple[str, ...] = ("greedy_output_norm", "l1", "bn_slimming", "bn_slimming_l1", "taylor", "random")
#: One colour per criterion in every 05 figure; random, the reference every criterion should beat, in grey.
CRITERION_PALETTE: dict[str, str] = {
    "greedy_output_norm": _CB[0],
    "l1": _CB[1],
    "bn_slimming": _CB[2],
    "bn_slimming_l1": sns.color_palette("dark").as_hex()[2],
    "taylor": _CB[4],
    "random": "#8c8c8c",
}
CRITERION_LABELS: dict[str, str] = {
    "greedy_output_norm": "greedy output norm (ThiNet)",
    "l1": "L1 filter norm",
    "bn_slimming": "BN slimming |γ|",
    "bn_slimming_l1": "BN slimming |γ|, L1-trained",
    "taylor": "Taylor, 1st order",
    "random": "random (reference)",
}

_PUBLISHED_CRITERIA_NAMES = ("greedy_output_norm", "l1", "bn_slimming")
_STAGES = (("accuracy_before", "before\npruning"), ("accuracy_pruned", "right after\npruning"),
           ("accuracy_finetuned", "after\nfine-tuning"))  # fmt: skip


def _criteria_runs(runs: pd.DataFrame, what: str) -> pd.DataFrame:
    """The completed ``criteria`` runs; raises ValueError when the table has no criteria run at all."""
    _require(runs, [*ID_COLUMNS, "status", "criterion"], what)
    data = runs[runs["method"] == "criteria"]
    if data.empty:
        raise ValueError(f"{what}: the runs table has no criteria runs; run a study with study_kind: criteria")
    return data[data["status"] == "completed"]


def criteria_accuracy(runs: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Test accuracy before pruning, right after removing the filters and after fine-tuning: panels rows =
    datasets, columns = models, a line per criterion (mean over seeds, 95 % interval with several seeds).
    ``bn_slimming_l1`` starts from its own dense model (trained with the L1 penalty on gamma): its own "before"."""
    data = _criteria_runs(runs, "criteria_accuracy")
    _require(data, [c for c, _ in _STAGES], "criteria_accuracy")
    criteria = _ordered_present(data["criterion"], CRITERION_ORDER)
    sparsity = pd.to_numeric(data["filter_sparsity"], errors="coerce").dropna().unique() if "filter_sparsity" in data else []
    pct = ", ".join(f"{100 * s:g} %" for s in sparsity) or "the study's share of"
    offsets = np.linspace(-0.12, 0.12, len(criteria)) if len(criteria) > 1 else [0.0]
    with _theme():
        fig, grid = _panel_grid(data, panel_w=4.2, panel_h=3.2)
        for (dataset, model), ax in grid.items():
            panel = data[(data["dataset"] == dataset) & (data["model"] == model)]
            for offset, criterion in zip(offsets, criteria):
                rows = panel[panel["criterion"] == criterion]
                if rows.empty:
                    continue
                stats = [mean_interval(pd.to_numeric(rows[col], errors="coerce") * 100.0) for col, _ in _STAGES]
                xs = np.arange(len(_STAGES)) + offset
                means = [s[0] for s in stats]
                yerr = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
                ax.errorbar(xs, means, yerr=yerr if rows["seed"].nunique() > 1 else None, color=CRITERION_PALETTE.get(criterion),
                            marker="o", markersize=4, linewidth=1.3, capsize=2)  # fmt: skip
            ax.set_xticks(range(len(_STAGES)))
            ax.set_xticklabels([label for _, label in _STAGES])
            ax.set_xlim(-0.4, len(_STAGES) - 0.6)
            ax.set_ylim(0, 100)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(axis="x", visible=False)
        lines = [matplotlib.lines.Line2D([], [], color=CRITERION_PALETTE.get(c, "#999999"), marker="o", markersize=4)
                 for c in criteria]  # fmt: skip
        _legend_outside(fig, lines, [CRITERION_LABELS.get(c, c) for c in criteria], "criterion")
        _suptitle(fig, f"Criteria study (after Lajić et al. 2025): test accuracy before pruning, after removing {pct} "
                       f"of the filters in one shot, and after fine-tuning; {_seed_note(data)}")
    save_figure(fig, figures_dir, "criteria_accuracy_stages")
    return fig


def criteria_selection_time(runs: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Seconds each criterion takes to score and select the filters (and compact the model): one point per
    criterion on a log scale (mean over seeds, 95 % interval with several seeds)."""
    data = _criteria_runs(runs, "criteria_selection_time")
    _require(data, ["selection_time_s"], "criteria_selection_time")
    criteria = _ordered_present(data["criterion"], CRITERION_ORDER)
    with _theme():
        fig, grid = _panel_grid(data, panel_w=4.2, panel_h=0.32 * len(criteria) + 1.4)
        for (dataset, model), ax in grid.items():
            panel = data[(data["dataset"] == dataset) & (data["model"] == model)]
            st = summarize(panel.assign(v=pd.to_numeric(panel["selection_time_s"], errors="coerce")), "v", ["criterion"])
            st = st.set_index("criterion").reindex(criteria)
            y = np.arange(len(criteria))
            xerr = np.array([st["mean"] - st["ci_low"], st["ci_high"] - st["mean"]]) if (st["n"] > 1).any() else None
            for k, criterion in enumerate(criteria):
                ax.errorbar(st["mean"].iloc[k], y[k], xerr=None if xerr is None else xerr[:, k:k + 1],
                            color=CRITERION_PALETTE.get(criterion, "#999999"), marker="o", markersize=7,
                            markeredgecolor="black", markeredgewidth=0.5, capsize=2, linestyle="none")  # fmt: skip
            ax.set_yticks(y)
            ax.set_yticklabels([CRITERION_LABELS.get(c, c) for c in criteria])
            ax.set_ylim(len(criteria) - 0.5, -0.5)
            ax.set_xscale("log")
            ax.margins(x=0.15)
            ax.set_xlabel("selection + compaction time (s, log scale)")
            ax.grid(axis="y", visible=False)
        _suptitle(fig, f"Criteria study (extension): cost of selecting the filters to remove; {_seed_note(data)}")
    save_figure(fig, figures_dir, "criteria_selection_time")
    return fig


def criteria_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind :func:`criteria_accuracy`: per dataset, model and criterion, the accuracy (%) at
    each stage, the filters and parameters removed and the MACs left (mean over seeds)."""
    data = _criteria_runs(runs, "criteria_table")
    numeric = {
        "before (%)": ("accuracy_before", 100.0), "after pruning (%)": ("accuracy_pruned", 100.0),
        "after fine-tuning (%)": ("accuracy_finetuned", 100.0), "filters removed": ("filters_removed", 1.0),
        "params after (M)": ("params_after", 1e-6), "MACs after (M)": ("macs_after", 1e-6),
        "selection (s)": ("selection_time_s", 1.0),
    }  # fmt: skip
    rows = []
    for (dataset, model, criterion), group in data.groupby(["dataset", "model", "criterion"], sort=False):
        row = {"dataset": _label("dataset", dataset), "model": _label("model", model), "criterion": criterion}
        for name, (col, scale) in numeric.items():
            row[name] = round(mean_interval(pd.to_numeric(group[col], errors="coerce") * scale)[0], 2)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {c: i for i, c in enumerate(_ordered_present(table["criterion"], CRITERION_ORDER))}
    return table.sort_values(["dataset", "model", "criterion"], key=lambda s: s.map(order) if s.name == "criterion" else s,
                             ignore_index=True)  # fmt: skip


def published_criteria_table(runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Ours (mean over seeds) beside Lajić et al.'s Tables 1-3 (:data:`helpers.published.PUBLISHED_CRITERIA`)
    per dataset, model and criterion: the accuracy lost from before pruning to after fine-tuning (percentage
    points; it leads, as it carries over between training budgets where the starting accuracy does not), then
    the two accuracies; NaN where one side has no figure. Rows: every published dataset x model family and every
    dataset x model this study ran (named in ``our model``, compared as :func:`helpers.published.model_family`);
    the paper's three criteria (greedy output norm, L1, BN slimming without the L1 penalty) first, then ours.
    """
    ours = pd.DataFrame(columns=["dataset", "model", "criterion", "accuracy_before", "accuracy_finetuned"])
    if runs is not None and "criterion" in runs.columns:
        ours = runs[(runs["method"] == "criteria") & (runs["status"] == "completed")]
    cases: dict[tuple[str, str], str] = {}  # (dataset, our model or published family) -> family
    for dataset, family, _ in PUBLISHED_CRITERIA:
        cases.setdefault((dataset, family), family)
    for dataset, model in zip(ours["dataset"], ours["model"]):
        cases.pop((dataset, model_family(model)), None)
        cases[(dataset, model)] = model_family(model)
    datasets = _ordered_present([d for d, _ in cases], list(DATASET_LABELS))
    rows = []
    for dataset in datasets:
        for (d, model), family in sorted(((k, v) for k, v in cases.items() if k[0] == dataset),
                                         key=lambda kv: (_family_rank(kv[1]), kv[0][1])):  # fmt: skip
            mine = ours[(ours["dataset"] == d) & (ours["model"] == model)]
            criteria = list(_PUBLISHED_CRITERIA_NAMES) + [c for c in _ordered_present(mine["criterion"], CRITERION_ORDER)
                                                          if c not in _PUBLISHED_CRITERIA_NAMES]  # fmt: skip
            before_pub = PUBLISHED_CRITERIA.get((dataset, family, "pre_pruning"), (math.nan, ""))[0]
            for criterion in criteria:
                sel = mine[mine["criterion"] == criterion]
                before = mean_interval(pd.to_numeric(sel["accuracy_before"], errors="coerce") * 100.0)[0] if len(sel) else math.nan
                after = mean_interval(pd.to_numeric(sel["accuracy_finetuned"], errors="coerce") * 100.0)[0] if len(sel) else math.nan
                after_pub, source = PUBLISHED_CRITERIA.get((dataset, family, criterion), (math.nan, ""))
                rows.append({
                    "dataset": _label("dataset", dataset), "model": MODEL_LABELS.get(family, family),
                    "our model": _label("model", model) if model in MODEL_LABELS and len(mine) else "",
                    "criterion": criterion,
                    "drop, ours (pp)": _round(before - after), "drop, published (pp)": _round(before_pub - after_pub),
                    "before, ours (%)": _round(before), "before, published (%)": before_pub,
                    "after fine-tuning, ours (%)": _round(after), "after fine-tuning, published (%)": after_pub,
                    "source": source,
                })  # fmt: skip
    return pd.DataFrame(rows)


def _family_rank(family: str) -> int:
    order = list(PUBLISHED_CRITERIA_MODELS)
    return order.index(family) if family in order else len(order)


def criteria_vs_published(runs: pd.DataFrame | None, figures_dir: str | Path) -> Figure:
    """The accuracy each criterion costs (:func:`published_criteria_table`'s drop, percentage points) per
    dataset and model: ours solid, Lajić et al.'s hatched and lighter, an empty slot where one side has no
    figure; each panel's title gives the accuracy before pruning, ours and published."""
    table = published_criteria_table(runs)
    table = table[table[["drop, ours (pp)", "drop, published (pp)"]].notna().any(axis=1)]
    panels = list(dict.fromkeys(zip(table["dataset"], table["model"], table["our model"])))
    columns = min(3, len(panels))
    rows_n = math.ceil(len(panels) / columns)
    with _theme():
        fig, axes = plt.subplots(rows_n, columns, squeeze=False, layout="constrained",
                                 figsize=(4.0 * columns, 3.0 * rows_n))  # fmt: skip
        criteria_seen: list[str] = []
        for ax, (dataset, model, ours_model) in zip(axes.flat, panels):
            panel = table[(table["dataset"] == dataset) & (table["model"] == model) & (table["our model"] == ours_model)]
            xs = np.arange(len(panel))
            for x, (_, row) in zip(xs, panel.iterrows()):
                colour = CRITERION_PALETTE.get(row["criterion"], "#999999")
                if np.isfinite(row["drop, ours (pp)"]):
                    ax.bar(x - 0.2, row["drop, ours (pp)"], width=0.4, color=colour, edgecolor="black", linewidth=0.5)
                if np.isfinite(row["drop, published (pp)"]):
                    ax.bar(x + 0.2, row["drop, published (pp)"], width=0.4, color=colour, alpha=0.45, hatch="///",
                           edgecolor="black", linewidth=0.5)  # fmt: skip
                criteria_seen.append(row["criterion"])
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(xs)
            ax.set_xticklabels([_short_criterion(c) for c in panel["criterion"]], rotation=30, ha="right")
            ax.set_ylabel("accuracy drop (pp)")
            ax.grid(axis="x", visible=False)
            before_ours = pd.to_numeric(panel.loc[panel["criterion"] != "bn_slimming_l1", "before, ours (%)"]).dropna()
            before_pub = pd.to_numeric(panel["before, published (%)"]).dropna()
            ours_txt = f"{before_ours.mean():.1f} %" if len(before_ours) else "–"
            pub_txt = f"{before_pub.iloc[0]:.1f} %" if len(before_pub) else "–"
            name = f"{model}" + (f" (ours: {ours_model})" if ours_model and ours_model != model else "")
            ax.set_title(f"{dataset} / {name}\nbefore pruning: ours {ours_txt}, published {pub_txt}", fontsize="small")
        for ax in list(axes.flat)[len(panels):]:
            ax.remove()
        criteria = _ordered_present(criteria_seen, CRITERION_ORDER)
        handles, labels = _handles(criteria, CRITERION_PALETTE, CRITERION_LABELS)
        handles += [Patch(facecolor="white", edgecolor="black", linewidth=0.5),
                    Patch(facecolor="white", edgecolor="black", linewidth=0.5, hatch="///")]  # fmt: skip
        labels += ["ours (left bar)", "published (right bar, hatched)"]
        _legend_outside(fig, handles, labels, "criterion")
        _suptitle(fig, "Criteria study beside Lajić et al. 2025 (Tables 1-3): test accuracy lost from before pruning "
                       "to after fine-tuning, 40 % of the filters removed in one shot (lower is better)")
    save_figure(fig, figures_dir, "criteria_vs_published")
    return fig


def _short_criterion(criterion: str) -> str:
    return {"greedy_output_norm": "greedy", "bn_slimming": "BN |γ|", "bn_slimming_l1": "BN |γ| + L1"}.get(criterion, criterion)
