"""Figures and tables of the study's notebooks, drawn with seaborn / matplotlib from the tidy results tables.

Every figure function takes a tidy table (one row per observation, with the run's id columns
``dataset, model, method, scenario, seed`` joined in, see ``helpers.results``) and a figures folder, saves
the figure there as PNG and SVG under a name that says what it shows, and returns the matplotlib
``Figure`` (or a dict of figures, one per scenario). Figures that mirror a figure of the primary study
(Douzandeh Zenoozi et al., *A comparative study of neural network pruning strategies for industrial
applications*, Frontiers in Computer Science 2025, doi 10.3389/fcomp.2025.1563942) carry its number in the
title and in the file name (``fig03_...``); the extensions say "extension" instead.

Conventions held across all figures:

- One colour per method everywhere (:data:`METHOD_PALETTE`); the dense baseline is drawn in every
  scenario's figure (a dense run has no sparsity, so it is the reference of every scenario).
- With more than one seed, a point or bar is the mean over seeds and the whiskers / band are a 95 %
  Student-t interval of that mean (:func:`mean_interval`); with one seed, the single value without whiskers.
- Accuracy-like metrics (stored as fractions in ``[0, 1]``) are shown in percent.
- Energy is never drawn as 0 when nothing was measured: a missing (NaN) energy is marked "n/a", every
  drawn bar is hatched by its ``energy_source``, and a figure with no measured energy at all is not drawn
  (the function returns ``None`` and :func:`energy_statement` says so in words).

Published references of Table 1 (BloodMNIST at 28 x 28 px, test accuracy):

- Doerrich, Di Salvo, Brockmann, Ledig, *Rethinking model prototyping through the MedMNIST+ dataset
  collection*, Scientific Reports 2025 (arXiv 2404.15786, 2024): VGG16 94.85 %, ResNet18 91.93 %
  (trained end-to-end at 28 px).
- Yang et al., *MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
  classification*, Scientific Data 10, 41 (2023), Table 4: ResNet-18 (28) 95.8 %.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats as scipy_stats

from helpers.published import (
    PAPER_PROTOCOL,
    PUBLISHED_BLOODMNIST_BASELINES,
    PUBLISHED_PRIMARY,
    GRANULARITY_MEASURES,
    PUBLISHED_CRITERIA,
    PUBLISHED_CRITERIA_MODELS,
    PUBLISHED_GRANULARITY,
    model_family,
)

__all__ = [
    "METHOD_ORDER",
    "METHOD_PALETTE",
    "METHOD_LABELS",
    "SCENARIO_ORDER",
    "PAPER_FIGURES",
    "PUBLISHED_BLOODMNIST_28",
    "MissingColumnsError",
    "method_palette",
    "mean_interval",
    "summarize",
    "with_run_ids",
    "with_dense_baseline",
    "scenarios_of",
    "pareto_front",
    "compaction_table",
    "summary_table",
    "last_epoch",
    "save_figure",
    "training_curves",
    "training_time",
    "peak_memory",
    "test_metrics",
    "reference_accuracy_table",
    "inference_latency",
    "speedup_vs_macs",
    "accuracy_latency_pareto",
    "training_energy",
    "inference_energy",
    "energy_statement",
    "TRAINING_FORM_ORDER",
    "status_note",
    "macs_ratio_table",
    "training_form_statement",
    "split_table",
    "dataset_table",
    "class_balance",
    "scenario_table",
    "configuration_table",
    "PAPER_TABLES",
    "CRITERION_ORDER",
    "CRITERION_PALETTE",
    "CRITERION_LABELS",
    "GRANULARITY_ORDER",
    "GRANULARITY_PALETTE",
    "GRANULARITY_LABELS",
    "PUBLISHED_CRITERIA",
    "PUBLISHED_GRANULARITY",
    "criteria_accuracy",
    "criteria_selection_time",
    "criteria_table",
    "published_criteria_table",
    "criteria_vs_published",
    "granularity_tradeoffs",
    "granularity_table",
    "granularity_ordering_table",
    "granularity_rank_agreement",
]

ID_COLUMNS: tuple[str, ...] = ("dataset", "model", "method", "scenario", "seed")

METHOD_ORDER: tuple[str, ...] = ("dense", "pre_training", "in_training", "post_training", "set")

# One colour per method in every figure (seaborn's colour-blind palette; dense in neutral dark grey).
_CB = sns.color_palette("colorblind").as_hex()
METHOD_PALETTE: dict[str, str] = {
    "dense": "#3b3b3b",
    "pre_training": _CB[0],
    "in_training": _CB[1],
    "post_training": _CB[2],
    "set": _CB[3],
}
# Colours for methods added later (e.g. the criteria of study 2), handed out in sorted-name order.
_EXTRA_COLOURS: tuple[str, ...] = tuple(_CB[4:]) + tuple(sns.color_palette("dark").as_hex())

METHOD_LABELS: dict[str, str] = {
    "dense": "Dense (baseline)",
    "pre_training": "Pre-Training",
    "in_training": "In-Training",
    "post_training": "Post-Training",
    "set": "SET",
}
DATASET_LABELS: dict[str, str] = {
    "bloodmnist": "BloodMNIST",
    "visa": "VisA",
    "mvtec3d_cls": "MVTec 3D",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet": "ImageNet",
    "digits": "digits",
}
MODEL_LABELS: dict[str, str] = {
    "vgg16": "VGG16", "vgg16_bn": "VGG16-BN", "resnet18": "ResNet18", "resnet50": "ResNet50",
    "vgg16_bn_cifar": "VGG16-BN (CIFAR)", "resnet18_cifar": "ResNet18 (CIFAR)", "resnet50_cifar": "ResNet50 (CIFAR)",
}  # fmt: skip

SCENARIO_ORDER: tuple[str, ...] = ("uniform", "mixed", "linear_only")
_SCENARIO_LABELS: dict[str, str] = {
    "uniform": "uniform (conv 80 %, linear 80 %)",
    "mixed": "mixed (conv 50 %, linear 80 %)",
    "linear_only": "linear_only (conv 0 %, linear 80 %)",
}

# The primary study's figure numbers: (figure kind, scenario) -> number. Figures 3-8 are read as two
# families of three (training accuracy per scenario, then training loss per scenario), like Figures 9-11,
# 12-14 and 15-17; change this one table if the paper's order turns out otherwise.
PAPER_FIGURES: dict[tuple[str, str | None], int] = {
    **{("training_accuracy", s): 3 + i for i, s in enumerate(SCENARIO_ORDER)},
    **{("training_loss", s): 6 + i for i, s in enumerate(SCENARIO_ORDER)},
    **{("training_time", s): 9 + i for i, s in enumerate(SCENARIO_ORDER)},
    **{("test_metrics", s): 12 + i for i, s in enumerate(SCENARIO_ORDER)},
    **{("training_energy", s): 15 + i for i, s in enumerate(SCENARIO_ORDER)},
    ("inference_latency", None): 18,
    ("inference_energy", None): 19,
}

# Table 1 references: model -> list of (accuracy %, source); the figures live in helpers.published.
PUBLISHED_BLOODMNIST_28: dict[str, list[tuple[float, str]]] = {
    model: [(value, source) for value, source, _ in refs]
    for (model, metric), refs in PUBLISHED_BLOODMNIST_BASELINES.items()
    if metric == "test_accuracy" and model in ("vgg16", "resnet18")
}

# The primary study's figure 2 and tables 2-3, generated from the parameters and the data (notebook 01).
PAPER_TABLES: dict[str, int] = {"class_balance": 2, "scenarios": 2, "configuration": 3}

#: Training forms in the order their facets are drawn (runs.training_form).
TRAINING_FORM_ORDER: tuple[str, ...] = ("masked", "compacted")
_NOT_RECORDED = "not recorded"

# Hatch per energy source; sources not listed get the next unused hatch, in sorted order.
_SOURCE_HATCHES: dict[str, str] = {"zeus-gpu": "", "zeus-cpu-rapl": "///", "estimate": "xx", "mixed": ".."}
_SPARE_HATCHES: tuple[str, ...] = ("\\\\\\", "++", "oo", "--", "**")
_UNAVAILABLE = "unavailable"

_PCT_METRICS = ("accuracy", "precision", "recall", "f1", "auc")
_METRIC_LABELS = {
    "accuracy": "accuracy",
    "precision": "precision (macro)",
    "recall": "recall (macro)",
    "f1": "F1 (macro)",
    "auc": "AUC",
    "loss": "cross-entropy loss",
}


class MissingColumnsError(KeyError):
    """A table handed to a plotting function lacks columns the figure needs."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


# ----------------------------------------------------------------------------------------------- basics


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MissingColumnsError(
            f"{what} needs columns {', '.join(missing)}, which the table lacks (it has: {', '.join(map(str, df.columns))}); "
            "pass a table from helpers.results.load_tables with the run ids joined in (plots.with_run_ids)"
        )


def method_palette(methods: Iterable[str] = ()) -> dict[str, str]:
    """The method -> colour dict: :data:`METHOD_PALETTE` plus stable colours for any other method given."""
    palette = dict(METHOD_PALETTE)
    extra = sorted({m for m in methods if m not in palette})
    for i, method in enumerate(extra):
        palette[method] = _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)]
    return palette


def _method_order(methods: Iterable[str]) -> list[str]:
    present = set(methods)
    known = [m for m in METHOD_ORDER if m in present]
    return known + sorted(present - set(METHOD_ORDER))


def _scenario_order(scenarios: Iterable[str]) -> list[str]:
    present = {s for s in scenarios if isinstance(s, str)}
    known = [s for s in SCENARIO_ORDER if s in present]
    return known + sorted(present - set(SCENARIO_ORDER))


def _label(kind: str, value: object) -> str:
    table = {"method": METHOD_LABELS, "dataset": DATASET_LABELS, "model": MODEL_LABELS, "scenario": _SCENARIO_LABELS}
    return table.get(kind, {}).get(value, str(value))


def _paper_title(kind: str, scenario: str | None, text: str) -> str:
    number = PAPER_FIGURES.get((kind, scenario))
    head = f"Figure {number} (paper)" if number is not None else "Extension (no figure in the paper)"
    return f"{head}: {text}"


def _file_stem(kind: str, scenario: str | None = None) -> str:
    number = PAPER_FIGURES.get((kind, scenario))
    stem = kind if scenario is None else f"{kind}_{scenario}"
    return f"fig{number:02d}_{stem}" if number is not None else stem


def mean_interval(values: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of the mean of ``values`` (NaNs dropped).

    Args:
        values: observations, e.g. one metric over seeds.
        confidence: coverage of the interval.

    Returns:
        ``(mean, low, high)``; with fewer than two finite values the interval collapses onto the mean,
        and with none all three are NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return (mean, mean, mean)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return (mean, mean - half, mean + half)


def _interval(values: pd.Series) -> tuple[float, float]:
    """seaborn ``errorbar`` callable: the 95 % t-interval of the mean (deterministic, no bootstrap)."""
    _, low, high = mean_interval(values)
    return (low, high)


def summarize(df: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean over seeds with a 95 % interval: one row per ``by`` group.

    Args:
        df: tidy table.
        value: numeric column to summarise.
        by: grouping columns (the ids other than ``seed``, usually).

    Returns:
        A table with the ``by`` columns and ``mean``, ``ci_low``, ``ci_high``, ``n`` (finite values).
    """
    _require(df, [value, *by], "summarize")
    rows = []
    for key, group in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_interval(group[value])
        n = int(np.isfinite(pd.to_numeric(group[value], errors="coerce").to_numpy(dtype=float)).sum())
        rows.append({**dict(zip(by, key)), "mean": mean, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def with_run_ids(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the run's id columns (dataset, model, method, scenario, seed) joined in on ``run_id``.

    Columns the table already has are kept as they are.
    """
    _require(table, ["run_id"], "with_run_ids (table)")
    _require(runs, ["run_id"], "with_run_ids (runs)")
    missing = [c for c in ID_COLUMNS if c not in table.columns and c in runs.columns]
    if not missing:
        return table
    ids = runs[["run_id", *missing]].drop_duplicates("run_id")
    return table.merge(ids, on="run_id", how="left")


def scenarios_of(df: pd.DataFrame) -> list[str]:
    """The pruning scenarios present in ``df`` (the dense baseline's own scenario value excluded), in study order."""
    _require(df, ["scenario", "method"], "scenarios_of")
    sparse = df[df["method"] != "dense"]
    return _scenario_order(sparse["scenario"].dropna().unique())


def with_dense_baseline(df: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """Rows of ``scenario`` plus the dense baseline's rows, relabelled as that scenario.

    A dense run has no sparsity; whatever scenario value it carries, it is the reference of every scenario.
    Dense rows repeated per scenario (same ``run_id``) are kept once.
    """
    _require(df, ["scenario", "method"], "with_dense_baseline")
    sparse = df[(df["method"] != "dense") & (df["scenario"] == scenario)]
    dense = df[df["method"] == "dense"]
    if "run_id" in dense.columns:
        keys = [c for c in ("run_id", "epoch", "phase", "variant", "batch_size") if c in dense.columns]
        dense = dense.drop_duplicates(keys)
    else:
        keys = [c for c in ("dataset", "model", "seed", "epoch", "phase", "variant", "batch_size") if c in dense.columns]
        dense = dense.drop_duplicates(keys)
    dense = dense.assign(scenario=scenario)
    return pd.concat([dense, sparse], ignore_index=True)


def pareto_front(df: pd.DataFrame, cost: str, benefit: str) -> pd.Series:
    """Which rows are Pareto-optimal: no other row has a lower-or-equal ``cost`` and a higher-or-equal
    ``benefit`` with at least one strictly better.

    Returns:
        A boolean Series aligned with ``df`` (rows with a NaN in either column are never optimal).
    """
    _require(df, [cost, benefit], "pareto_front")
    c = df[cost].to_numpy(dtype=float)
    b = df[benefit].to_numpy(dtype=float)
    ok = np.isfinite(c) & np.isfinite(b)
    optimal = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (b >= b[i]) & ((c < c[i]) | (b > b[i]))
        optimal[i] = not dominated.any()
    return pd.Series(optimal, index=df.index, name="pareto_optimal")


def summary_table(df: pd.DataFrame, value: str, *, scale: float = 1.0, digits: int = 2) -> pd.DataFrame:
    """The numbers behind a figure: ``value`` per dataset, model and method (rows) and scenario (columns).

    A cell is the mean over seeds, followed by its 95 % interval ``[low, high]`` when there are several
    seeds; NaN where the study has no such run or nothing was measured. The dense baseline's column is
    its own scenario value (``none``).

    Args:
        df: a tidy table with the id columns (``runs``, or :func:`last_epoch` of ``epochs``).
        value: the numeric column to show.
        scale: factor applied first (100 for fractions shown in percent).
        digits: decimals shown.
    """
    _require(df, [*ID_COLUMNS, value], "summary_table")
    frame = df.assign(_v=pd.to_numeric(df[value], errors="coerce") * scale)
    st = summarize(frame, "_v", ["dataset", "model", "method", "scenario"])
    multi_seed = frame["seed"].nunique() > 1

    def text(row: pd.Series) -> object:
        if not np.isfinite(row["mean"]):
            return math.nan
        if multi_seed and row["n"] > 1:
            return f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"
        return round(float(row["mean"]), digits)

    st["cell"] = st.apply(text, axis=1) if len(st) else pd.Series(dtype=object)
    # set_index / unstack: one row per dataset x model x method present, NaN where a scenario has no value.
    table = st.set_index(["dataset", "model", "method", "scenario"])["cell"].unstack("scenario")
    methods = _method_order(st["method"].unique())
    scenarios = [s for s in dict.fromkeys(("none", *_scenario_order(st["scenario"].unique()))) if s in table.columns]
    table = table.reindex(columns=scenarios)
    order = sorted(table.index, key=lambda k: (k[0], k[1], methods.index(k[2])))
    table = table.reindex(order)
    table.columns.name = f"{value}{' x ' + format(scale, 'g') if scale != 1 else ''} by scenario"
    return table


def last_epoch(epochs: pd.DataFrame, phase: str = "train") -> pd.DataFrame:
    """Each run's row of its last epoch in ``phase`` (for the final training accuracy / loss)."""
    _require(epochs, ["run_id", "epoch", "phase"], "last_epoch")
    data = epochs[epochs["phase"] == phase]
    return data.loc[data.groupby("run_id")["epoch"].idxmax()].reset_index(drop=True)


def save_figure(fig: Figure, figures_dir: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (150 dpi) and ``.svg``; returns both paths."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, kwargs in ((".png", {"dpi": 150}), (".svg", {})):
        path = figures_dir / f"{name}{suffix}"
        # Fixed metadata keeps the SVG / PNG bytes identical between reruns of the same data.
        metadata = {"Date": None} if suffix == ".svg" else {"Software": None}
        with _rc({"svg.hashsalt": "pruning-study"}):
            fig.savefig(path, bbox_inches="tight", metadata=metadata, **kwargs)
        paths.append(path)
    return paths


@contextlib.contextmanager
def _rc(settings: Mapping[str, object]):
    """Set only these rcParams for the block and put back only these.

    Not ``plt.rc_context``: that restores *every* rcParam, including ``interactive``, which Jupyter's
    inline backend switches on when the first figure of a kernel is created; restoring it would stop
    every later figure from being displayed.
    """
    saved = {key: matplotlib.rcParams[key] for key in settings}
    matplotlib.rcParams.update(settings)
    try:
        yield
    finally:
        matplotlib.rcParams.update(saved)


def _theme():
    """The one look of all figures (applied per figure, so importing this module changes no global state)."""
    return _rc({**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85)})


def _panel_pairs(df: pd.DataFrame) -> tuple[list[str], list[str], set[tuple[str, str]]]:
    datasets = [d for d in DATASET_LABELS if d in set(df["dataset"])] + sorted(set(df["dataset"]) - set(DATASET_LABELS))
    models = [m for m in MODEL_LABELS if m in set(df["model"])] + sorted(set(df["model"]) - set(MODEL_LABELS))
    present = set(zip(df["dataset"], df["model"]))
    return datasets, models, present


def _panel_grid(df: pd.DataFrame, *, panel_w: float = 3.6, panel_h: float = 2.8, sharey: bool = False):
    """A grid of panels, rows = datasets, columns = models; panels with no data are removed."""
    datasets, models, present = _panel_pairs(df)
    fig, axes = plt.subplots(
        len(datasets), len(models), figsize=(panel_w * len(models), panel_h * len(datasets)),
        squeeze=False, sharey=sharey, layout="constrained",
    )
    grid = {}
    for i, dataset in enumerate(datasets):
        for j, model in enumerate(models):
            ax = axes[i][j]
            if (dataset, model) in present:
                ax.set_title(f"{_label('dataset', dataset)} / {_label('model', model)}")
                grid[(dataset, model)] = ax
            else:
                ax.remove()
    return fig, grid


def _suptitle(fig: Figure, text: str) -> None:
    """The figure's title (with the paper's figure number), wrapped to the figure's width."""
    width = max(45, int(fig.get_figwidth() * 11))
    fig.suptitle("\n".join(textwrap.wrap(text, width=width)))


def _legend_outside(fig: Figure, handles: list, labels: list[str], title: str, *, anchor_y: float = 0.5) -> None:
    fig.legend(handles, labels, title=title, loc="center left", bbox_to_anchor=(1.0, anchor_y), frameon=False)


def _method_handles(methods: Sequence[str], palette: Mapping[str, str]) -> tuple[list, list[str]]:
    return [Patch(facecolor=palette[m], edgecolor="black", linewidth=0.5) for m in methods], [_label("method", m) for m in methods]


def _bars(
    ax,
    stats: pd.DataFrame,
    *,
    groups: Sequence,
    group_col: str | None,
    methods: Sequence[str],
    palette: Mapping[str, str],
    hatches: Mapping[int, str] | None = None,
    group_labels: Sequence[str] | None = None,
    notes: Mapping[tuple[object, str], str] | None = None,
) -> None:
    """Grouped bars: one group per ``groups`` value, one bar per method, whiskers from ``ci_low/ci_high``.

    ``stats`` rows carry ``method``, ``mean``, ``ci_low``, ``ci_high``, ``n`` and ``group_col``; a row whose
    mean is NaN is drawn as an "n/a" mark (never a zero bar); a missing row leaves a gap. ``notes``
    ((group, method) -> text) are written upright at the foot of the bar's slot, drawn or not (the MACs
    ratio, runs left out of the mean).
    """
    # Grouped by method itself: one centred bar per group; otherwise the methods side by side in each group.
    one_per_group = group_col == "method"
    width = 0.7 if one_per_group else 0.8 / max(len(methods), 1)
    for gi, group in enumerate(groups):
        rows = stats if group_col is None else stats[stats[group_col] == group]
        for mi, method in enumerate(methods):
            row = rows[rows["method"] == method]
            x = gi if one_per_group else gi - 0.4 + width * (mi + 0.5)
            note = (notes or {}).get((group, method))
            if row.empty or not np.isfinite(row.iloc[0]["mean"]):
                text = " · ".join(t for t in ("" if row.empty else "n/a", note or "") if t)
                if text:
                    ax.text(x, 0, text, rotation=90, ha="center", va="bottom", fontsize=7 if not note else 6,
                            color=palette[method])  # fmt: skip
                continue
            row = row.iloc[0]
            if note:
                ax.text(x, 0, note, rotation=90, ha="center", va="bottom", fontsize=6, zorder=5, clip_on=True,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip
            yerr = None
            if row["n"] > 1:
                yerr = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
            colour = palette[method]
            ax.bar(
                x, row["mean"], width=width * 0.95, color=colour, edgecolor="black", linewidth=0.5,
                hatch=(hatches or {}).get(row.name, None), hatchcolor=_hatch_colour(colour), yerr=yerr, capsize=2,
                error_kw={"linewidth": 0.8},
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(group_labels if group_labels is not None else [str(g) for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.grid(axis="x", visible=False)


def _hatch_colour(face: str) -> str:
    """Black hatching on light bars, white on dark ones (the dense baseline's grey), so the source stays legible."""
    r, g, b = matplotlib.colors.to_rgb(face)
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.35 else "black"


def _as_percent(df: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(df[column], errors="coerce") * 100.0


def _seed_note(df: pd.DataFrame) -> str:
    seeds = df["seed"].nunique() if "seed" in df.columns else 1
    return f"mean and 95 % interval over {seeds} seeds" if seeds > 1 else "one seed"


# ------------------------------------------------ what a figure holds: run status, training form, MACs

_METHOD_SHORT = {"dense": "dense", "pre_training": "Pre", "in_training": "In", "post_training": "Post", "set": "SET"}


def _completed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of completed runs (all rows when the table has no ``status``): what means are taken over."""
    if "status" not in df.columns:
        return df
    return df[df["status"].fillna("completed") == "completed"]


def _left_out(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``df`` that did not complete (diverged, failed): shown, never averaged silently."""
    if "status" not in df.columns or df.empty:
        return df.iloc[0:0]
    rows = df[df["status"].fillna("completed") != "completed"]
    return rows.drop_duplicates("run_id") if "run_id" in rows.columns else rows


def status_note(runs: pd.DataFrame, *, examples: int = 3) -> str:
    """The runs a figure or mean leaves out, in words: ``""`` when every run completed, else e.g.
    ``"left out of the means: 1 diverged (set uniform resnet18 s0)"``.

    Args:
        runs: the rows the figure would hold (any table with ``status``; one run may have many rows).
        examples: how many runs to name per status.
    """
    left = _left_out(runs)
    if left.empty:
        return ""
    parts = []
    several_forms = bool(_pooled_forms(runs))
    for status, group in left.groupby(left["status"].astype(str), sort=True):
        names = [" ".join(str(r.get(c, "")) for c in ("method", "scenario", "model")) + f" s{r.get('seed', '?')}"
                 + (f" {r.get('training_form')}" if several_forms else "")
                 for r in group.head(examples).to_dict("records")]  # fmt: skip
        more = f", +{len(group) - examples} more" if len(group) > examples else ""
        parts.append(f"{len(group)} {status} ({', '.join(names)}{more})")
    return "left out of the means: " + "; ".join(parts)


def _with_title_note(text: str, note: str) -> str:
    return f"{text}; {note}" if note else text


def _with_run_columns(table: pd.DataFrame, runs: pd.DataFrame | None, columns: Sequence[str] = ("status", "training_form")) -> pd.DataFrame:
    """``table`` (epochs, inference) with the run's ``status`` and ``training_form`` joined in from ``runs``."""
    if runs is None or "run_id" not in table.columns or "run_id" not in runs.columns:
        return table
    missing = [c for c in columns if c not in table.columns and c in runs.columns]
    if not missing:
        return table
    return table.merge(runs[["run_id", *missing]].drop_duplicates("run_id"), on="run_id", how="left")


def _forms(df: pd.DataFrame) -> pd.Series:
    if "training_form" not in df.columns:
        return pd.Series(_NOT_RECORDED, index=df.index)
    return df["training_form"].where(df["training_form"].notna() & (df["training_form"].astype(str) != ""), _NOT_RECORDED).astype(str)


def _pooled_forms(df: pd.DataFrame) -> list[str]:
    """The training forms that share a method and scenario in ``df`` (a study run with a list of forms),
    or ``[]`` when every method and scenario ran in one form."""
    if not {"method", "scenario"} <= set(df.columns) or df.empty:
        return []
    sparse = df[df["method"] != "dense"].assign(_form=_forms(df))
    counts = sparse.groupby(["method", "scenario"])["_form"].nunique()
    if not (counts > 1).any():
        return []
    return _ordered_present(sparse["_form"], TRAINING_FORM_ORDER)


def _scenario_facets(df: pd.DataFrame, scenario: str) -> tuple[pd.DataFrame, list[str]]:
    """The scenario's rows plus the dense baseline, with a ``_facet`` column: the training form of the
    scenario's pruned runs. With more than one form each form gets its own copy of the dense rows (the
    reference of every facet); the forms are returned in :data:`TRAINING_FORM_ORDER`."""
    frame = with_dense_baseline(df, scenario)
    form = _forms(frame)
    sparse = frame["method"] != "dense"
    forms = _ordered_present(form[sparse], TRAINING_FORM_ORDER) or _ordered_present(form, TRAINING_FORM_ORDER)
    if len(forms) <= 1:
        return frame.assign(_facet=forms[0] if forms else _NOT_RECORDED), forms or [_NOT_RECORDED]
    parts = [pd.concat([frame[~sparse], frame[sparse & (form == f)]]).assign(_facet=f) for f in forms]
    return pd.concat(parts, ignore_index=True), forms


def _forms_note(frame: pd.DataFrame, forms: Sequence[str]) -> str:
    """What the figure's runs trained as, for its title (from the table, never assumed)."""
    dense_forms = _ordered_present(_forms(frame[frame["method"] == "dense"]), TRAINING_FORM_ORDER)
    dense = f"; dense baseline: {', '.join(dense_forms)}" if dense_forms and dense_forms != list(forms) else ""
    if len(forms) > 1:
        return f"training forms {' and '.join(forms)} side by side (one column each{dense})"
    if forms[0] == _NOT_RECORDED:
        return "training form not recorded"
    return f"training form: {forms[0]}{dense}"


def _facet_grid(frame: pd.DataFrame, forms: Sequence[str], *, panel_w: float = 3.6, panel_h: float = 2.8):
    """Panels: rows = datasets, columns = models x training forms (one column per form when several);
    panels without data are removed. Returns the figure and ``{(dataset, model, form): ax}``."""
    datasets, models, _ = _panel_pairs(frame)
    columns = [(m, f) for m in models for f in forms]
    fig, axes = plt.subplots(len(datasets), len(columns), figsize=(panel_w * len(columns), panel_h * len(datasets)),
                             squeeze=False, layout="constrained")  # fmt: skip
    grid = {}
    for i, dataset in enumerate(datasets):
        for j, (model, form) in enumerate(columns):
            ax = axes[i][j]
            has = bool(((frame["dataset"] == dataset) & (frame["model"] == model) & (frame["_facet"] == form)).any())
            if has:
                title = f"{_label('dataset', dataset)} / {_label('model', model)}"
                ax.set_title(title + (f"\ntrained {form}" if len(forms) > 1 else ""))
                grid[(dataset, model, form)] = ax
            else:
                ax.remove()
    return fig, grid


def macs_ratio_table(inference: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each run's MACs as a fraction of the dense model's: the compacted model's ``macs`` (``inference``)
    over the dense run's (same dataset and model), at the smallest batch size measured.

    The MACs a pruned model really needs once its removed filters are gone: with
    ``set_allocation: erk`` SET keeps more of the early convs and so runs at more MACs than the other
    methods at the same scenario; every figure that compares SET writes this ratio beside its runs.

    Args:
        inference: the ``inference`` table with the run ids joined in.
        runs: the ``runs`` table; when given, every run appears (a run without inference rows, such as
            a diverged one, with a NaN ratio), with its ``status``, ``training_form`` and ``set_allocation``.

    Returns:
        One row per run: the id columns, ``macs_compacted``, ``macs_dense``, ``macs_ratio``.
    """
    _require(inference, ["run_id", *ID_COLUMNS, "variant", "macs"], "macs_ratio_table")
    data = inference[inference["batch_size"] == inference["batch_size"].min()] if "batch_size" in inference else inference
    data = data.drop_duplicates(["run_id", "variant"])
    macs = pd.to_numeric(data["macs"], errors="coerce")
    dense = data[(data["method"] == "dense") & (data["variant"] == "masked")].assign(_m=macs)
    dense_macs = dense.groupby(["dataset", "model"])["_m"].median().rename("macs_dense")
    compacted = data[data["variant"] == "compacted"].assign(macs_compacted=macs)[["run_id", *ID_COLUMNS, "macs_compacted"]]
    if runs is not None:
        _require(runs, ["run_id", *ID_COLUMNS], "macs_ratio_table (runs)")
        extra = [c for c in ("status", "training_form", "set_allocation") if c in runs.columns]
        table = runs[["run_id", *ID_COLUMNS, *extra]].drop_duplicates("run_id").merge(
            compacted[["run_id", "macs_compacted"]], on="run_id", how="left")
    else:
        table = compacted
    table = table.merge(dense_macs.reset_index(), on=["dataset", "model"], how="left")
    table["macs_ratio"] = table["macs_compacted"] / table["macs_dense"]
    return table.reset_index(drop=True)


def _macs_lookup(inference: pd.DataFrame | None) -> dict[tuple[str, str, str, str], list[float]] | None:
    """(dataset, model, method, scenario) -> the MACs ratios of its runs, or None without an inference table."""
    if inference is None or inference.empty or "macs" not in inference.columns:
        return None
    table = macs_ratio_table(inference)
    lookup: dict[tuple[str, str, str, str], list[float]] = {}
    for row in table.itertuples():
        lookup.setdefault((row.dataset, row.model, row.method, row.scenario), []).append(float(row.macs_ratio))
    return lookup


def _pct(ratio: float) -> str:
    return f"{100 * ratio:.0f} %" if ratio >= 0.095 else f"{100 * ratio:.1f} %"


def _macs_label(ratios: Sequence[float] | None, *, prefix: str = "MACs ") -> str:
    """``MACs 25 %``, a range ``MACs 5.0-7.1 %`` when the runs differ, ``MACs n/a`` when none was measured."""
    values = [r for r in (ratios or []) if np.isfinite(r)]
    if not values:
        return f"{prefix}n/a"
    low, high = _pct(min(values)), _pct(max(values))
    return f"{prefix}{low}" if low == high else f"{prefix}{low.removesuffix(' %')}-{high}"


def _macs_for(lookup, dataset: str, model: str, method: str, scenario: str) -> list[float] | None:
    if lookup is None:
        return None
    if method == "dense":
        for (d, m, me, _), ratios in lookup.items():
            if (d, m, me) == (dataset, model, "dense"):
                return ratios
        return []
    return lookup.get((dataset, model, method, scenario), [])


def _bar_notes(
    lookup, left: pd.DataFrame, *, dataset: str, model: str, scenario: str, methods: Sequence[str], group: object = None,
) -> dict[tuple[object, str], str]:
    """(group, method) -> what to write beside the bar: its runs' MACs ratio, and the runs left out of it."""
    notes = {}
    for method in methods:
        parts = []
        if lookup is not None:
            parts.append(_macs_label(_macs_for(lookup, dataset, model, method, scenario)))
        mine = left[left["method"] == method] if len(left) else left
        if len(mine):
            parts.append(", ".join(f"✕ {n} {s}" for s, n in mine["status"].astype(str).value_counts().sort_index().items()))
        if parts:
            notes[(method if group is None else group, method)] = " · ".join(parts)
    return notes


def _macs_panel_text(ax, lookup, *, dataset: str, model: str, scenario: str, methods: Sequence[str]) -> None:
    """The MACs ratio of each method's runs, written in the panel's lower left (line figures)."""
    if lookup is None:
        return
    text = "MACs vs dense: " + ", ".join(
        f"{_METHOD_SHORT.get(m, m)} {_macs_label(_macs_for(lookup, dataset, model, m, scenario), prefix='')}"
        for m in methods if m != "dense"
    )
    ax.text(0.02, 0.02, "\n".join(textwrap.wrap(text, 44)), transform=ax.transAxes, fontsize=6, va="bottom",
            ha="left", zorder=5, bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip


def _macs_title_note(lookup) -> str:
    return "MACs = the compacted model's multiply-accumulates as % of the dense model's" if lookup is not None else ""


def training_form_statement(runs: pd.DataFrame) -> str:
    """What was run, in words generated from the ``runs`` table: which runs trained masked and which
    compacted, and what that means for their time, energy and memory. The notebooks print this instead of
    a hard-coded sentence, so they never describe masked training for compacted runs or the other way round.

    Returns:
        Markdown: one sentence per training form present, then the runs left out (if any).
    """
    _require(runs, ["method", "scenario"], "training_form_statement")
    if runs.empty:
        return "**What was run.** The runs table is empty: nothing was trained yet."
    form = _forms(runs)
    meaning = {
        "masked": ("the full network with its removed filters and weights held at zero (the paper's way): dense "
                   "kernels still compute the zeros, so a masked run's time, energy and memory per epoch are about "
                   "the dense run's"),
        "compacted": ("the physically smaller network without its removed filters (an extension): fewer MACs, "
                      "weights, gradients and optimiser state per step, so its time, energy and memory per epoch "
                      "fall with the filters removed; in_training and set rebuild it after every swap "
                      "(epochs.setup_time_s). Scenarios that remove no filter (linear_only) and the dense "
                      "baseline have nothing to compact and train masked"),
        _NOT_RECORDED: "the tables do not record how (no training_form column)",
    }  # fmt: skip
    sentences = []
    for f in _ordered_present(form, TRAINING_FORM_ORDER):
        rows = runs[form == f]
        groups = []
        if (rows["method"] == "dense").any():
            groups.append("the dense baseline")
        sparse = rows[rows["method"] != "dense"]
        for method in _method_order(sparse["method"].unique()):
            scen = _scenario_order(sparse.loc[sparse["method"] == method, "scenario"].unique())
            groups.append(f"{method} in {', '.join(scen)}")
        n = rows["run_id"].nunique() if "run_id" in rows.columns else len(rows)
        what = "trained in an unrecorded form" if f == _NOT_RECORDED else f"trained **{f}**"
        sentences.append(f"{n} run{'s' if n != 1 else ''} {what} ({'; '.join(groups)}): {meaning.get(f, f)}.")
    if (runs["method"] == "post_training").any():
        sentences.append("post_training's time and energy include the dense training it reuses; its own form "
                         "applies only to its fine-tuning epochs (none with finetune_epochs 0).")  # fmt: skip
    note = status_note(runs)
    if note:
        sentences.append(f"Runs {note}; they are marked in every figure that would hold them.")
    return "**What was run.** " + " ".join(sentences)


# ----------------------------------------------------------------------------------- 01 training figures


def training_curves(
    epochs: pd.DataFrame, figures_dir: str | Path, *, metric: str = "accuracy", phase: str = "train",
    runs: pd.DataFrame | None = None, inference: pd.DataFrame | None = None,
) -> dict[str, Figure]:
    """Training accuracy or loss per epoch, one figure per scenario (the paper's Figures 3-8).

    Panels: rows = datasets, columns = models (x training forms when the study ran several); one line per
    method (mean over the completed runs), the dense baseline in every figure. A diverged or failed run is
    drawn on its own, dotted, ending in a cross, and counted in the title; it is not in the mean.

    Args:
        epochs: the ``epochs`` table with the run ids joined in.
        figures_dir: where the PNG / SVG files go.
        metric: ``accuracy`` or ``loss`` (or another metric column of ``epochs``).
        phase: ``train`` or ``val``.
        runs: the ``runs`` table: each run's ``status`` and ``training_form`` (without it every run counts
            as completed and the form is not recorded).
        inference: the ``inference`` table: each method's MACs ratio is written in every panel.

    Returns:
        scenario -> Figure.
    """
    _require(epochs, [*ID_COLUMNS, "epoch", "phase", metric], "training_curves")
    data = _with_run_columns(epochs[epochs["phase"] == phase], runs)
    if data.empty:
        raise ValueError(
            f"no rows with phase {phase!r} in the epochs table (phases present: {sorted(epochs['phase'].unique())}); "
            "pass phase='train' or 'val'"
        )
    kind = f"training_{metric}" if phase == "train" else f"{phase}_{metric}"
    percent = metric in _PCT_METRICS
    palette = method_palette(data["method"].unique())
    lookup = _macs_lookup(inference)
    figures = {}
    for scenario in scenarios_of(data) or _scenario_order(data["scenario"].unique()):
        frame, forms = _scenario_facets(data, scenario)
        frame = frame.assign(value=_as_percent(frame, metric) if percent else pd.to_numeric(frame[metric], errors="coerce"))
        methods = _method_order(frame["method"].unique())
        done, left = _completed(frame), _left_out(frame)
        multi_seed = done["seed"].nunique() > 1
        with _theme():
            fig, grid = _facet_grid(frame, forms)
            for (dataset, model, form), ax in grid.items():
                where = lambda d: d[(d["dataset"] == dataset) & (d["model"] == model) & (d["_facet"] == form)]  # noqa: E731
                panel = where(done)
                sns.lineplot(
                    data=panel, x="epoch", y="value", hue="method", hue_order=methods, palette=palette, ax=ax,
                    errorbar=_interval if multi_seed else None, marker="o", markersize=4, legend=False,
                )
                bad = where(frame[frame["run_id"].isin(left["run_id"])]) if len(left) else panel.iloc[0:0]
                for _, run in bad.groupby("run_id"):
                    run = run.sort_values("epoch")
                    colour = palette[run["method"].iloc[0]]
                    ax.plot(run["epoch"], run["value"], linestyle=":", color=colour, linewidth=1)
                    ax.plot(run["epoch"].iloc[-1:], run["value"].iloc[-1:], marker="x", color=colour, markersize=7,
                            linestyle="", gid="left_out")  # fmt: skip
                _macs_panel_text(ax, lookup, dataset=dataset, model=model, scenario=scenario, methods=methods)
                ax.set_xlabel("epoch")
                ylabel = _METRIC_LABELS.get(metric, metric) + (" (%)" if percent else "")
                ax.set_ylabel(f"{phase} {ylabel}")
                ax.xaxis.get_major_locator().set_params(integer=True)
            handles = [plt.Line2D([], [], color=palette[m], marker="o", markersize=4) for m in methods]
            labels = [_label("method", m) for m in methods]
            if len(left):
                handles.append(plt.Line2D([], [], color="grey", linestyle=":", marker="x"))
                labels.append("diverged / failed run (not in the mean)")
            _legend_outside(fig, handles, labels, "method")
            text = (f"{phase} {_METRIC_LABELS.get(metric, metric)} per epoch, scenario {_label('scenario', scenario)}; "
                    f"{_forms_note(frame, forms)}; {_seed_note(done)}")  # fmt: skip
            for note in (_macs_title_note(lookup), status_note(frame)):
                text = _with_title_note(text, note)
            _suptitle(fig, _paper_title(kind, scenario, text))
        save_figure(fig, figures_dir, _file_stem(kind, scenario))
        figures[scenario] = fig
    return figures


def _per_scenario_bars(
    runs: pd.DataFrame,
    figures_dir: str | Path,
    *,
    kind: str,
    value: str,
    ylabel: str,
    what: str,
    scale: float = 1.0,
    inference: pd.DataFrame | None = None,
    source: str | None = None,
) -> dict[str, Figure]:
    """One figure per scenario, a bar per method in each dataset x model (x training form) panel (mean over
    the completed runs, 95 % interval); bars hatched by ``source`` (an energy-source column) when given.
    Under each bar: its runs' MACs ratio (with ``inference``) and a cross per run left out of the mean."""
    _require(runs, [*ID_COLUMNS, value, *([source] if source else [])], kind)
    palette = method_palette(runs["method"].unique())
    lookup = _macs_lookup(inference)
    figures = {}
    for scenario in scenarios_of(runs) or _scenario_order(runs["scenario"].unique()):
        frame, forms = _scenario_facets(runs, scenario)
        frame = frame.assign(value=pd.to_numeric(frame[value], errors="coerce") * scale)
        methods = _method_order(frame["method"].unique())
        done, left = _completed(frame), _left_out(frame)
        with _theme():
            fig, grid = _facet_grid(frame, forms, panel_w=max(2.8, 0.55 * len(methods) + 1.2))
            hatch_of: dict[str, str] = {}
            for (dataset, model, form), ax in grid.items():
                where = lambda d: d[(d["dataset"] == dataset) & (d["model"] == model) & (d["_facet"] == form)]  # noqa: E731
                panel = where(done)
                st = summarize(panel, "value", ["method"])
                hatches = None
                if source is not None:
                    st["source"] = [_group_source(panel[panel["method"] == m], source) for m in st["method"]]
                    hatch_of = _hatch_map(set(hatch_of) | set(st["source"]))
                    hatches = {i: hatch_of[s] for i, s in st["source"].items()}
                notes = _bar_notes(lookup, where(left) if len(left) else left, dataset=dataset, model=model,
                                   scenario=scenario, methods=methods)  # fmt: skip
                _bars(ax, st, groups=methods, group_col="method", methods=methods, palette=palette, hatches=hatches,
                      group_labels=["" for _ in methods], notes=notes)  # fmt: skip
                ax.set_ylabel(ylabel)
                ax.set_xticks([])
                ax.set_xlabel("method")
            if source is not None:
                _legend_outside(fig, *_method_handles(methods, palette), "method", anchor_y=0.7)
                _source_legend(fig, hatch_of, anchor_y=0.25)
            else:
                _legend_outside(fig, *_method_handles(methods, palette), "method")
            text = f"{what}, scenario {_label('scenario', scenario)}; {_forms_note(frame, forms)}; {_seed_note(done)}"
            for note in (_macs_title_note(lookup), status_note(frame)):
                text = _with_title_note(text, note)
            _suptitle(fig, _paper_title(kind, scenario, text))
        save_figure(fig, figures_dir, _file_stem(kind, scenario))
        figures[scenario] = fig
    return figures


def training_time(runs: pd.DataFrame, figures_dir: str | Path, *, inference: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Total training time per method, one figure per scenario (the paper's Figures 9-11), per training form
    (one column each when the study ran several; the form is in the title); with ``inference``, each bar
    carries its runs' MACs ratio."""
    return _per_scenario_bars(runs, figures_dir, kind="training_time", value="train_time_s",
                              ylabel="total training time (s)", what="total training time", inference=inference)


def peak_memory(runs: pd.DataFrame, figures_dir: str | Path, *, inference: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Peak training memory per method, one figure per scenario and per training form (an extension; the
    paper has no such figure); with ``inference``, each bar carries its runs' MACs ratio."""
    return _per_scenario_bars(runs, figures_dir, kind="peak_memory", value="peak_memory_mb",
                              ylabel="peak memory (MiB)", what="peak memory during training", inference=inference)


# ------------------------------------------------------------------------------- 02 test-set figures


def test_metrics(
    runs: pd.DataFrame, figures_dir: str | Path, metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1"),
    *, inference: pd.DataFrame | None = None,
) -> dict[str, Figure]:
    """Test accuracy, precision, recall and F1 per method, one figure per scenario (the paper's Figures 12-14).

    A black line over the accuracy bars marks the majority-class accuracy of the test split
    (``test_majority_accuracy``: what always answering the most frequent class scores; VisA about 89 %).
    With ``inference``, the accuracy bars carry their runs' MACs ratio; runs that did not complete are
    counted in the title and crossed under their bar, not averaged.

    Returns:
        scenario -> Figure.
    """
    columns = [f"test_{m}" for m in metrics]
    _require(runs, [*ID_COLUMNS, *columns], "test_metrics")
    palette = method_palette(runs["method"].unique())
    lookup = _macs_lookup(inference)
    extra = [c for c in ("status", "run_id", "test_majority_accuracy") if c in runs.columns]
    figures = {}
    for scenario in scenarios_of(runs) or _scenario_order(runs["scenario"].unique()):
        frame, forms = _scenario_facets(runs, scenario)
        done, left = _completed(frame), _left_out(frame)
        long = done.melt(id_vars=[*ID_COLUMNS, "_facet", *extra], value_vars=columns, var_name="metric", value_name="raw")
        long["value"] = pd.to_numeric(long["raw"], errors="coerce") * 100.0
        methods = _method_order(frame["method"].unique())
        with _theme():
            fig, grid = _facet_grid(frame, forms, panel_w=max(3.6, 0.25 * len(methods) * len(metrics) + 1.2))
            majority_drawn = False
            for (dataset, model, form), ax in grid.items():
                where = lambda d: d[(d["dataset"] == dataset) & (d["model"] == model) & (d["_facet"] == form)]  # noqa: E731
                panel = where(long)
                st = summarize(panel, "value", ["metric", "method"])
                notes = _bar_notes(lookup, where(left) if len(left) else left, dataset=dataset, model=model,
                                   scenario=scenario, methods=methods, group=columns[0])  # fmt: skip
                _bars(ax, st, groups=columns, group_col="metric", methods=methods, palette=palette,
                      group_labels=[_METRIC_LABELS[m].replace(" (macro)", "") for m in metrics], notes=notes)
                majority_drawn |= _majority_line(ax, where(frame), columns)
                ax.set_ylabel("test score (%, macro avg.)")
                ax.set_ylim(0, 105)
            handles, labels = _method_handles(methods, palette)
            if majority_drawn:
                handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=1.2))
                labels.append("majority class (accuracy floor)")
            _legend_outside(fig, handles, labels, "method")
            text = (f"test accuracy, precision, recall, F1, scenario {_label('scenario', scenario)}; "
                    f"{_forms_note(frame, forms)}; {_seed_note(done)}")  # fmt: skip
            for note in (_macs_title_note(lookup), status_note(frame)):
                text = _with_title_note(text, note)
            _suptitle(fig, _paper_title("test_metrics", scenario, text))
        save_figure(fig, figures_dir, _file_stem("test_metrics", scenario))
        figures[scenario] = fig
    return figures


def _majority_line(ax, rows: pd.DataFrame, groups: Sequence[str]) -> bool:
    """Draw the majority-class accuracy (%) across the accuracy group of a test-metrics panel; True if drawn."""
    if "test_majority_accuracy" not in rows.columns or "test_accuracy" not in groups:
        return False
    value = mean_interval(pd.to_numeric(rows["test_majority_accuracy"], errors="coerce"))[0]
    if not np.isfinite(value):
        return False
    x = list(groups).index("test_accuracy")
    ax.plot([x - 0.45, x + 0.45], [100 * value, 100 * value], color="black", linestyle="--", linewidth=1.2,
            zorder=6, gid="majority_class")  # fmt: skip
    ax.annotate(f"majority {100 * value:.1f} %", (x + 0.45, 100 * value), fontsize=6, ha="right", va="bottom",
                xytext=(0, 1), textcoords="offset points")  # fmt: skip
    return True


_TABLE1_METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def reference_accuracy_table(
    runs: pd.DataFrame, scenario: str = "mixed", dataset: str | None = "bloodmnist",
    metrics: Sequence[str] = _TABLE1_METRICS,
) -> pd.DataFrame:
    """Table 1: test metrics of the model at its best-validation epoch (the paper's "best accuracy") and at
    the final epoch, dense and ``scenario`` sparse, beside the published figures with their sources.

    One row per dataset x model x method (dense, then each sparse method run in ``scenario``) x published
    figure: the BloodMNIST (28 px) dense baselines of :data:`PUBLISHED_BLOODMNIST_28`, the primary paper's
    Table 1 ``mixed`` figures (whose sparse method the available quote does not name, so they stand beside
    every sparse method) and its approximate VisA figure (:data:`helpers.published.PUBLISHED_PRIMARY`).
    Measured values are the mean over the completed runs (with the 95 % interval when seeds > 1); ``runs``
    says how many completed and which did not; a model or method the study did not run reads NaN.

    Args:
        runs: the ``runs`` table.
        scenario: the sparse scenario (the paper's Table 1: ``mixed``).
        dataset: one dataset, or None for every dataset run plus BloodMNIST (the paper's Table 1).
        metrics: test metrics, each as ``<metric>, best epoch (%)`` and ``<metric>, final epoch (%)``.

    Returns:
        Columns: ``dataset``, ``model``, ``method``, ``scenario``, ``runs``, ``best epoch``, the metric
        columns, ``majority class (%)``, ``published (%)``, ``published source``.
    """
    _require(runs, [*ID_COLUMNS, "test_accuracy"], "reference_accuracy_table")
    published = _table1_published(scenario)
    if dataset is None:
        datasets = _ordered_present([*runs["dataset"].dropna().unique(), "bloodmnist"], list(DATASET_LABELS))
    else:
        datasets = [dataset]
    multi_seed = runs["seed"].nunique() > 1

    def cell(rows: pd.DataFrame, column: str, scale: float = 100.0) -> object:
        if column not in rows.columns:
            return math.nan
        mean, low, high = mean_interval(pd.to_numeric(rows[column], errors="coerce") * scale)
        if not np.isfinite(mean):
            return math.nan
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]" if multi_seed and rows[column].notna().sum() > 1 else round(mean, 2)

    table = []
    for ds in datasets:
        data = runs[runs["dataset"] == ds]
        pub_models = {m for d, m, _ in published if d == ds}
        models = [m for m in MODEL_LABELS if m in set(data["model"]) | pub_models] + sorted(set(data["model"]) - set(MODEL_LABELS))
        sparse_methods = _method_order(runs.loc[(runs["method"] != "dense") & (runs["scenario"] == scenario), "method"].unique())
        for model in models:
            rows_m = data[data["model"] == model]
            for method in ["dense", *(sparse_methods or ["sparse"])]:
                rows = rows_m[rows_m["method"] == method]
                if method != "dense":
                    rows = rows[rows["scenario"] == scenario]
                done = _completed(rows)
                left = _left_out(rows)
                count = f"{len(done)} completed" + (f", {status_note(rows).removeprefix('left out of the means: ')}" if len(left) else "")
                row = {"dataset": _label("dataset", ds), "model": _label("model", model), "method": method,
                       "scenario": "none" if method == "dense" else scenario, "runs": count if len(rows) else "not run",
                       "best epoch": cell(done, "best_epoch", 1.0)}  # fmt: skip
                for metric in metrics:
                    row[f"{metric}, best epoch (%)"] = cell(done, f"test_{metric}_best")
                    row[f"{metric}, final epoch (%)"] = cell(done, f"test_{metric}")
                row["majority class (%)"] = cell(done, "test_majority_accuracy")
                refs = published.get((ds, model, "dense" if method == "dense" else "sparse"), [])
                for value, source in refs or [(math.nan, "no published figure")]:
                    table.append({**row, "published (%)": value, "published source": source})
    return pd.DataFrame(table)


def _table1_published(scenario: str) -> dict[tuple[str, str, str], list[tuple[float, str]]]:
    """(dataset, model, dense | sparse) -> [(accuracy %, source)] of the published figures Table 1 shows."""
    refs: dict[tuple[str, str, str], list[tuple[float, str]]] = {}
    for model, entries in PUBLISHED_BLOODMNIST_28.items():
        refs.setdefault(("bloodmnist", model, "dense"), []).extend(entries)
    for (dataset, model, method, metric), (value, _, source) in PUBLISHED_PRIMARY.items():
        if metric != "test_accuracy":
            continue
        if method == "mixed sparse" and scenario == "mixed":
            refs.setdefault((dataset, model, "sparse"), []).append((float(value), source))
        elif method == "dense and sparse":
            for m in model.split():
                for kind in ("dense", "sparse"):
                    refs.setdefault((dataset, m, kind), []).append((float(value), source))
    return refs


# ------------------------------------------------------------------------------- 03 inference figures


def _per_sample(inference: pd.DataFrame) -> pd.DataFrame:
    """The rows of the smallest batch size measured (batch 1 in the study's protocol), with
    ``latency_ms_per_sample`` (``latency_ms_mean`` is already per image: batch time / batch size)."""
    _require(inference, [*ID_COLUMNS, "variant", "batch_size", "latency_ms_mean"], "inference figures")
    if inference.empty:
        raise ValueError("the inference table is empty; the study's runs have no inference measurements yet")
    smallest = inference["batch_size"].min()
    data = inference[inference["batch_size"] == smallest].copy()
    data["latency_ms_per_sample"] = pd.to_numeric(data["latency_ms_mean"], errors="coerce")
    return data


def _stack_scenarios(df: pd.DataFrame) -> pd.DataFrame:
    """Each scenario's rows with the dense baseline repeated in it, concatenated (for scenario-grouped bars)."""
    scenarios = scenarios_of(df) or _scenario_order(df["scenario"].unique())
    return pd.concat([with_dense_baseline(df, s) for s in scenarios], ignore_index=True)


def inference_latency(inference: pd.DataFrame, figures_dir: str | Path, *, runs: pd.DataFrame | None = None) -> Figure:
    """Average CPU inference time per sample, masked vs physically compacted (the paper's Figure 18).

    Panels: rows = dataset x model, columns = variant; bars grouped by scenario, one per method. The
    compacted bars carry their runs' MACs ratio. With ``runs``, the runs that have no measurement (diverged,
    failed) are counted in the title and crossed where their bar would be.
    """
    data = _stack_scenarios(_per_sample(inference))
    batch = int(data["batch_size"].iloc[0])
    return _variant_bars(
        data, figures_dir, value="latency_ms_per_sample", ylabel="inference time per sample (ms)", kind="inference_latency",
        what=f"average CPU inference time per sample (batch {batch}), per model variant (masked, hooked, compacted)", runs=runs,
        lookup=_macs_lookup(inference),
    )


def _variant_bars(
    data: pd.DataFrame, figures_dir: str | Path, *, value: str, ylabel: str, kind: str, what: str,
    sources: str | None = None, runs: pd.DataFrame | None = None, lookup=None,
) -> Figure:
    """Panels: rows = dataset x model, columns = variant (masked, compacted); bars grouped by scenario, one per
    method; hatched by ``sources`` (an energy-source column) when given. The compacted bars carry the MACs
    ratio (``lookup``); runs of ``runs`` that did not complete are crossed under their slot and counted."""
    data = _completed(_with_run_columns(data, runs, ("status", "training_form")))
    left = _left_out(runs) if runs is not None and "status" in runs.columns else data.iloc[0:0]
    palette = method_palette([*data["method"].unique(), *left.get("method", pd.Series(dtype=str)).unique()])
    methods = _method_order([*data["method"].unique(), *left.get("method", pd.Series(dtype=str)).unique()])
    left_scenarios = left.loc[left["method"] != "dense", "scenario"].unique() if len(left) else []
    scenarios = _scenario_order([*data["scenario"].unique(), *left_scenarios])
    variants = [v for v in ("masked", "compacted") if v in set(data["variant"])] + sorted(set(data["variant"]) - {"masked", "compacted"})
    datasets, models, present = _panel_pairs(data)
    panels = [(d, m) for d in datasets for m in models if (d, m) in present]
    width = max(3.4, 0.22 * len(methods) * len(scenarios) + 1.4)
    hatch_of: dict[str, str] = {}
    with _theme():
        fig, axes = plt.subplots(len(panels), len(variants), figsize=(width * len(variants), 2.9 * len(panels)),
                                 squeeze=False, sharey="row", layout="constrained")
        for i, (dataset, model) in enumerate(panels):
            for j, variant in enumerate(variants):
                ax = axes[i][j]
                panel = data[(data["dataset"] == dataset) & (data["model"] == model) & (data["variant"] == variant)]
                st = summarize(panel, value, ["scenario", "method"])
                hatches = None
                if sources is not None:
                    st["source"] = [
                        _group_source(panel[(panel["scenario"] == r.scenario) & (panel["method"] == r.method)], sources)
                        for r in st.itertuples()
                    ]
                    hatch_of = _hatch_map(set(hatch_of) | set(st["source"]))
                    hatches = {idx: hatch_of[src] for idx, src in st["source"].items()}
                notes: dict[tuple[object, str], str] = {}
                for scenario in scenarios:
                    mine = left[(left["dataset"] == dataset) & (left["model"] == model)] if len(left) else left
                    if len(mine):
                        mine = mine[(mine["scenario"] == scenario) | (mine["method"] == "dense")]
                    notes.update(_bar_notes(lookup if variant == "compacted" else None, mine, dataset=dataset,
                                            model=model, scenario=scenario, methods=methods, group=scenario))  # fmt: skip
                _bars(ax, st, groups=scenarios, group_col="scenario", methods=methods, palette=palette, hatches=hatches,
                      group_labels=scenarios, notes=notes)
                ax.set_title(f"{_label('dataset', dataset)} / {_label('model', model)} — {variant}")
                ax.set_ylabel(ylabel if j == 0 else "")
                ax.set_xlabel("scenario")
        handles, labels = _method_handles(methods, palette)
        if sources is not None:
            _legend_outside(fig, handles, labels, "method", anchor_y=0.7)
            _source_legend(fig, hatch_of, anchor_y=0.25)
        else:
            _legend_outside(fig, handles, labels, "method")
        text = f"{what}; {_seed_note(data)}"
        pooled = _pooled_forms(data)
        if pooled:  # inference does not depend on how a mask was trained, but say what the mean holds
            text += f"; runs trained {' and '.join(pooled)} pooled in each mean"
        for note in (_macs_title_note(lookup) + (" (on the compacted bars)" if lookup is not None else ""),
                     status_note(runs) if runs is not None else ""):  # fmt: skip
            text = _with_title_note(text, note)
        _suptitle(fig, _paper_title(kind, None, text))
    save_figure(fig, figures_dir, _file_stem(kind))
    return fig


def compaction_table(inference: pd.DataFrame, *, mean_over_seeds: bool = False) -> pd.DataFrame:
    """Masked vs physically compacted, one row per run: latency, MACs, non-zero parameters, file size, and the
    compacted model's largest logit difference from the masked one.

    ``speedup`` = masked latency / compacted latency (what the CPU delivers); ``macs_ratio`` = masked MACs /
    compacted MACs (what the arithmetic promises). Uses the smallest batch size measured.

    Args:
        inference: the ``inference`` table with the run ids joined in.
        mean_over_seeds: average the numbers over seeds (one row per dataset, model, method, scenario).
    """
    data = _per_sample(inference)
    _require(data, ["run_id", "macs", "params_nonzero", "model_size_mb", "max_abs_logit_diff"], "compaction_table")
    missing = {"masked", "compacted"} - set(data["variant"])
    if missing:
        raise ValueError(
            f"compaction_table needs a 'masked' and a 'compacted' row per run; missing variant(s) {sorted(missing)} "
            f"(present: {sorted(data['variant'].unique())})"
        )
    values = {"latency_ms_per_sample": "latency_ms", "macs": "macs", "params_nonzero": "params_nonzero",
              "model_size_mb": "size_mb", "max_abs_logit_diff": "max_abs_logit_diff"}
    # set_index / unstack keeps only the runs present (pivot_table(dropna=False) would cross all id levels).
    wide = data.drop_duplicates(["run_id", "variant"]).set_index(["run_id", *ID_COLUMNS, "variant"])[list(values)]
    wide = wide.apply(pd.to_numeric, errors="coerce").unstack("variant")
    table = pd.DataFrame(index=wide.index)
    for column, short in values.items():
        for variant in ("masked", "compacted"):
            if column == "max_abs_logit_diff" and variant == "masked":
                continue  # the masked model is the reference
            table[f"{short}_{variant}" if column != "max_abs_logit_diff" else short] = wide[(column, variant)]
    table["speedup"] = table["latency_ms_masked"] / table["latency_ms_compacted"]
    table["macs_ratio"] = table["macs_masked"] / table["macs_compacted"]
    table = table.reset_index()
    if mean_over_seeds:
        numeric = [c for c in table.columns if c not in ("run_id", *ID_COLUMNS)]
        table = table.groupby(["dataset", "model", "method", "scenario"], as_index=False, sort=False)[numeric].mean()
    order = {m: i for i, m in enumerate(_method_order(table["method"].unique()))}
    return table.sort_values(["dataset", "model", "method", "scenario"], key=lambda c: c.map(order) if c.name == "method"
                             else c).reset_index(drop=True)


def speedup_vs_macs(inference: pd.DataFrame, figures_dir: str | Path, *, runs: pd.DataFrame | None = None) -> Figure:
    """Measured speedup of the compacted model over its masked twin against the MACs ratio (an extension).

    Each point is one run: x = MACs(masked) / MACs(compacted), the speedup the arithmetic promises (the
    inverse of the MACs ratio the other figures write, since a masked model computes the dense MACs);
    y = latency(masked) / latency(compacted), the speedup the CPU delivers. The diagonal is "as promised".
    With ``runs``, runs without a measurement (diverged, failed) are counted in the title.
    """
    points = compaction_table(inference).dropna(subset=["macs_ratio", "speedup"])
    if points.empty:
        raise ValueError("no run has both a masked and a compacted latency and MACs count; nothing to plot")
    palette = method_palette(points["method"].unique())
    methods = _method_order(points["method"].unique())
    scenarios = _scenario_order(points["scenario"].unique())
    with _theme():
        fig, grid = _panel_grid(points, panel_w=3.6, panel_h=3.2)
        for (dataset, model), ax in grid.items():
            panel = points[(points["dataset"] == dataset) & (points["model"] == model)]
            sns.scatterplot(data=panel, x="macs_ratio", y="speedup", hue="method", hue_order=methods, palette=palette,
                            style="scenario", style_order=scenarios, markers=_markers(scenarios), s=50, ax=ax,
                            legend=False, edgecolor="black", linewidth=0.4)
            top = max(1.0, float(np.nanmax(panel[["macs_ratio", "speedup"]].to_numpy()))) * 1.1
            ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8)
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_xlabel("MACs ratio masked / compacted (x)")
            ax.set_ylabel("measured speedup (x)")
        _scatter_legends(fig, methods, scenarios, palette)
        _suptitle(fig, _paper_title("speedup_vs_macs", None, _with_title_note(
            "compaction speedup (CPU latency) against the MACs ratio; dashed = as promised",
            status_note(runs).replace("of the means", "(no measurement)") if runs is not None else "")))
    save_figure(fig, figures_dir, _file_stem("speedup_vs_macs"))
    return fig


def _markers(scenarios: Sequence[str]) -> dict[str, str]:
    """One marker per scenario, the same in every scatter figure (dense's ``none`` is a plus)."""
    fixed = {"uniform": "o", "mixed": "X", "linear_only": "s", "none": "P"}
    spare = iter(("D", "^", "v", "<", ">", "*"))
    return {s: fixed.get(s) or next(spare, "o") for s in scenarios}


def _scatter_legends(fig: Figure, methods: Sequence[str], scenarios: Sequence[str], palette: Mapping[str, str]) -> None:
    markers = _markers(scenarios)
    handles = [plt.Line2D([], [], linestyle="", marker="o", color=palette[m], markeredgecolor="black") for m in methods]
    handles += [plt.Line2D([], [], linestyle="", marker=markers[s], color="grey") for s in scenarios]
    labels = [_label("method", m) for m in methods] + [
        "scenario: none (dense)" if s == "none" else f"scenario: {s}" for s in scenarios
    ]
    _legend_outside(fig, handles, labels, "method / scenario")


def accuracy_latency_pareto(inference: pd.DataFrame, runs: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Test accuracy against inference time per sample of the deployed (compacted) model, with the Pareto front
    (an extension). Points are means over seeds per method and scenario; the line joins the non-dominated ones.
    """
    data = _per_sample(inference)
    deployed = "compacted" if "compacted" in set(data["variant"]) else data["variant"].iloc[0]
    data = data[data["variant"] == deployed]
    _require(runs, ["run_id", "test_accuracy"], "accuracy_latency_pareto")
    data = data.merge(runs[["run_id", "test_accuracy"]], on="run_id", how="left", suffixes=("", "_run"))
    data = _completed(_with_run_columns(data, runs, ("status",)))
    lookup = _macs_lookup(inference)
    keys = ["dataset", "model", "method", "scenario"]
    points = data.groupby(keys, as_index=False).agg(
        latency=("latency_ms_per_sample", "mean"), accuracy=("test_accuracy", "mean")
    )
    points["accuracy"] *= 100.0
    points.loc[points["method"] == "dense", "scenario"] = "none"
    palette = method_palette(points["method"].unique())
    methods = _method_order(points["method"].unique())
    scenarios = _scenario_order(points["scenario"].unique())
    with _theme():
        fig, grid = _panel_grid(points, panel_w=3.8, panel_h=3.2)
        for (dataset, model), ax in grid.items():
            panel = points[(points["dataset"] == dataset) & (points["model"] == model)].copy()
            panel["pareto"] = pareto_front(panel, "latency", "accuracy")
            front = panel[panel["pareto"]].sort_values("latency")
            ax.step(front["latency"], front["accuracy"], where="post", color="grey", linewidth=1.0, zorder=1)
            sns.scatterplot(data=panel, x="latency", y="accuracy", hue="method", hue_order=methods, palette=palette,
                            style="scenario", style_order=scenarios, markers=_markers(scenarios), s=55, ax=ax, legend=False, edgecolor="black",
                            linewidth=0.4, zorder=2)
            for row in panel.itertuples():  # each point's MACs ratio beside it
                if lookup is not None and np.isfinite(row.latency) and np.isfinite(row.accuracy):
                    ratios = _macs_for(lookup, dataset, model, row.method, row.scenario)
                    ax.annotate(_macs_label(ratios, prefix=""), (row.latency, row.accuracy), fontsize=6,
                                xytext=(4, 3), textcoords="offset points")  # fmt: skip
            latencies = panel["latency"].dropna()
            if len(latencies) and latencies.min() > 0 and latencies.max() / latencies.min() > 20:
                ax.set_xscale("log")  # latencies spanning orders of magnitude
            ax.set_xlabel(f"inference time per sample, {deployed} (ms)")
            ax.set_ylabel("test accuracy (%)")
        _scatter_legends(fig, methods, scenarios, palette)
        text = "test accuracy vs CPU inference time; grey line = Pareto front; beside each point its MACs as % of dense"
        _suptitle(fig, _paper_title("accuracy_latency_pareto", None, _with_title_note(text, status_note(runs))))
    save_figure(fig, figures_dir, _file_stem("accuracy_latency_pareto"))
    return fig


# ---------------------------------------------------------------------------------- 04 energy figures


def _is_measured(energy: pd.Series, source: pd.Series) -> pd.Series:
    value = pd.to_numeric(energy, errors="coerce")
    return value.notna() & source.fillna(_UNAVAILABLE).ne(_UNAVAILABLE)


def _group_source(rows: pd.DataFrame, source_col: str) -> str:
    sources = sorted({str(s) for s in rows[source_col].fillna(_UNAVAILABLE)})
    return sources[0] if len(sources) == 1 else "mixed"


def _hatch_map(sources: Iterable[str]) -> dict[str, str]:
    mapping = {}
    spare = iter(_SPARE_HATCHES)
    for source in sorted(set(sources)):
        if source in _SOURCE_HATCHES:
            mapping[source] = _SOURCE_HATCHES[source]
        elif source.startswith("estimate"):
            mapping[source] = _SOURCE_HATCHES["estimate"]
        else:
            mapping[source] = next(spare, "..")
    return mapping


def _source_legend(fig: Figure, hatch_of: Mapping[str, str], *, anchor_y: float) -> None:
    shown = {s: h for s, h in hatch_of.items() if s != _UNAVAILABLE}
    handles = [Patch(facecolor="white", edgecolor="black", hatch=h) for h in shown.values()]
    labels = list(shown)
    handles.append(Patch(facecolor="white", edgecolor="white"))
    labels.append("n/a = not measured")
    fig.legend(handles, labels, title="energy source", loc="center left", bbox_to_anchor=(1.0, anchor_y), frameon=False)


def energy_statement(table: pd.DataFrame, energy: str, source: str, what: str) -> str:
    """A plain sentence on what energy was measured: which sources, how many rows, or that nothing was.

    Args:
        table: ``runs`` (``train_energy_j`` / ``train_energy_source``) or ``inference``
            (``energy_j`` / ``energy_source``).
        energy: the energy column (joules).
        source: the matching source column.
        what: the words for the quantity, e.g. "training energy".
    """
    _require(table, [energy, source], "energy_statement")
    measured = _is_measured(table[energy], table[source])
    sources = sorted({str(s) for s in table[source].fillna(_UNAVAILABLE)})
    if not measured.any():
        return (
            f"No {what} was measured on this machine: source = {', '.join(sources)} for all {len(table)} rows, "
            "so no figure is drawn (a missing measurement is not 0 J). Run on a machine with Zeus-supported "
            "counters (an NVIDIA GPU, or Intel/AMD RAPL counters readable by this user), or set energy: {estimate: true} "
            "for CodeCarbon's estimate, which is labelled as an estimate."
        )
    counts = table.loc[measured, source].value_counts()
    by_source = ", ".join(f"{n} from {s}" for s, n in counts.items())
    missing = int((~measured).sum())
    tail = f"; {missing} rows not measured (shown as n/a)" if missing else ""
    return f"{what.capitalize()} measured for {int(measured.sum())} of {len(table)} rows ({by_source}){tail}."


def training_energy(
    runs: pd.DataFrame, figures_dir: str | Path, *, inference: pd.DataFrame | None = None
) -> dict[str, Figure]:
    """Total training energy per method, one figure per scenario (the paper's Figures 15-17) and per training
    form (one column each when the study ran several; the form is in the title), bars hatched by energy
    source; with ``inference``, each bar carries its runs' MACs ratio. Returns an empty dict when no run has
    a measured energy (nothing is drawn as 0).
    """
    _require(runs, [*ID_COLUMNS, "train_energy_j", "train_energy_source"], "training_energy")
    measured = _is_measured(runs["train_energy_j"], runs["train_energy_source"])
    if not measured.any():
        return {}
    runs = runs.assign(train_energy_j=pd.to_numeric(runs["train_energy_j"], errors="coerce").where(measured))
    return _per_scenario_bars(runs, figures_dir, kind="training_energy", value="train_energy_j", scale=1e-3,
                              ylabel="total training energy (kJ)", what="total training energy", inference=inference,
                              source="train_energy_source")  # fmt: skip


def inference_energy(inference: pd.DataFrame, figures_dir: str | Path, *, runs: pd.DataFrame | None = None) -> Figure | None:
    """CPU inference energy, masked vs compacted (the paper's Figure 19), bars hatched by energy source.

    The value is ``energy_j`` as recorded: the energy of the whole measurement (model load from disk,
    warm-up and ``samples`` timed images). Returns ``None`` when nothing was measured (nothing is drawn as 0).
    The compacted bars carry their runs' MACs ratio; with ``runs``, runs without a measurement (diverged,
    failed) are counted in the title and crossed where their bar would be.
    """
    data = _per_sample(inference)
    _require(data, ["energy_j", "energy_source", "samples"], "inference_energy")
    measured = _is_measured(data["energy_j"], data["energy_source"])
    if not measured.any():
        return None
    data = data.assign(energy=pd.to_numeric(data["energy_j"], errors="coerce").where(measured))
    samples = ", ".join(str(int(n)) for n in sorted(data["samples"].dropna().unique()))
    return _variant_bars(
        _stack_scenarios(data), figures_dir, value="energy", ylabel="inference energy (J)",
        kind="inference_energy", sources="energy_source", runs=runs, lookup=_macs_lookup(inference),
        what=f"CPU inference energy of one measurement (model load + warm-up + {samples} images), per model variant",
    )


# ------------------------------------------------ the paper's Figure 2 and Tables 2-3: data, scenarios, setup

_SPLITS = ("train", "val", "test")


def _as_mapping(params) -> Mapping[str, object]:
    """A study's parameters as a mapping (``helpers.config.StudyParams`` or a plain dict)."""
    return params if isinstance(params, Mapping) else params.to_dict()


def split_table(params: Mapping[str, object], load_splits) -> pd.DataFrame:
    """Images per class in every split of every dataset, loaded the way the study's runs load them.

    Args:
        params: the study's validated parameters (``helpers.config.load_params``): datasets, models, the
            split subsets, ``model_options`` (a model's own subsets), ``dataset_options``, ``data_root``,
            ``image_size``, ``data_seed``.
        load_splits: the data loader, ``helpers.data.load_splits`` (passed in: this module reads tables only).

    Returns:
        One row per dataset x split x class: ``dataset``, ``models`` (the models trained on these splits;
        models with their own subsets get their own rows), ``split``, ``class``, ``images``, and
        ``same_as`` (``test`` for a validation split that is the test split itself, as in VisA's protocol).
    """
    params = _as_mapping(params)
    rows = []
    dataset_options = params.get("dataset_options") or {}
    model_options = params.get("model_options") or {}
    for dataset in params["datasets"]:
        groups: dict[str, tuple[dict[str, object], list[str]]] = {}
        for model in params["models"]:
            subsets = {k: params.get(k) for k in ("train_subset", "val_subset", "test_subset")}
            subsets.update({k: v for k, v in (model_options.get(model) or {}).items() if k in subsets})
            key = repr(sorted(subsets.items()))
            groups.setdefault(key, (subsets, []))[1].append(model)
        for subsets, models in groups.values():
            splits = load_splits(dataset, root=params.get("data_root"), size=params.get("image_size"),
                                 seed=params.get("data_seed", 0), download=True, **subsets,
                                 **dict(dataset_options.get(dataset) or {}))  # fmt: skip
            for name in _SPLITS:
                split = splits[name]
                same = "test" if name == "val" and split is splits["test"] else ""
                for cls, count in zip(split.classes, split.class_counts()):
                    rows.append({"dataset": dataset, "models": ", ".join(models), "split": name, "class": cls,
                                 "images": int(count), "same_as": same})  # fmt: skip
    return pd.DataFrame(rows, columns=["dataset", "models", "split", "class", "images", "same_as"])


def dataset_table(splits: pd.DataFrame) -> pd.DataFrame:
    """The numbers behind Figure 2: per dataset (and models group), classes, images per split, each split's
    share of the whole, and the class balance: the largest class's share of the test split (the accuracy of
    always answering it) and the largest / smallest class ratio of the training split.

    Args:
        splits: :func:`split_table`.
    """
    _require(splits, ["dataset", "models", "split", "class", "images"], "dataset_table")
    rows = []
    for (dataset, models), group in splits.groupby(["dataset", "models"], sort=False):
        sizes = group.groupby("split")["images"].sum()
        same = group.loc[group["split"] == "val", "same_as"].astype(str).eq("test").any() if "same_as" in group else False
        distinct = sizes.get("train", 0) + sizes.get("test", 0) + (0 if same else sizes.get("val", 0))
        train = group[group["split"] == "train"]["images"]
        test = group[group["split"] == "test"]["images"]
        row = {"dataset": _label("dataset", dataset), "models": models, "classes": int(group["class"].nunique())}
        for name in _SPLITS:
            row[f"{name} images"] = int(sizes.get(name, 0))
        row["val"] = "the test split itself" if same else "its own split"
        row["split (train / val / test, %)"] = " / ".join(
            "=test" if (name == "val" and same) else f"{100 * sizes.get(name, 0) / distinct:.0f}" for name in _SPLITS
        ) if distinct else ""
        row["majority class, test (%)"] = round(100 * test.max() / test.sum(), 1) if test.sum() else math.nan
        row["largest / smallest class, train"] = round(train.max() / train.min(), 2) if len(train) and train.min() > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def class_balance(splits: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Figure 2 (paper): the datasets as the study ran them: each class's share of each split, one panel per
    dataset (and per models group with its own subsets), split sizes in the panel title.

    Args:
        splits: :func:`split_table`.
        figures_dir: where ``fig02_class_balance.{png,svg}`` go.
    """
    _require(splits, ["dataset", "models", "split", "class", "images"], "class_balance")
    panels = list(dict.fromkeys(zip(splits["dataset"], splits["models"])))
    if not panels:
        raise ValueError("class_balance: the split table is empty; build it with plots.split_table(params, data.load_splits)")
    colours = dict(zip(_SPLITS, sns.color_palette("colorblind", 3).as_hex()))
    with _theme():
        widths = [max(3.2, 0.45 * splits.loc[splits["dataset"] == d, "class"].nunique() + 1.4) for d, _ in panels]
        fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                                 figsize=(sum(widths), 3.4), width_ratios=widths)  # fmt: skip
        for ax, (dataset, models) in zip(axes[0], panels):
            group = splits[(splits["dataset"] == dataset) & (splits["models"] == models)]
            classes = list(dict.fromkeys(group["class"]))
            sizes = group.groupby("split")["images"].sum()
            for k, name in enumerate(_SPLITS):
                part = group[group["split"] == name].set_index("class")["images"].reindex(classes).fillna(0)
                share = 100 * part / max(part.sum(), 1)
                ax.bar(np.arange(len(classes)) - 0.27 + 0.27 * k, share, width=0.27, color=colours[name],
                       edgecolor="black", linewidth=0.4, label=name)  # fmt: skip
            same = group.loc[group["split"] == "val", "same_as"].astype(str).eq("test").any()
            sizes_text = ", ".join(f"{n} {int(sizes.get(n, 0))}" + (" (= test)" if n == "val" and same else "") for n in _SPLITS)
            ax.set_title(f"{_label('dataset', dataset)} ({models})\n{sizes_text}", fontsize="small")
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels([textwrap.shorten(str(c), 18) for c in classes], rotation=45, ha="right", fontsize=7)
            ax.set_ylabel("share of the split (%)")
            ax.grid(axis="x", visible=False)
        handles = [Patch(facecolor=colours[n], edgecolor="black", linewidth=0.4) for n in _SPLITS]
        _legend_outside(fig, handles, list(_SPLITS), "split")
        _suptitle(fig, f"Figure {PAPER_TABLES['class_balance']} (paper): the datasets as this study ran them — images "
                       "per split and each class's share of its split")
    save_figure(fig, figures_dir, f"fig{PAPER_TABLES['class_balance']:02d}_class_balance")
    return fig


def scenario_table(params: Mapping[str, object]) -> pd.DataFrame:
    """Table 2 (paper): the sparsity scenarios the study ran, with what each removes and how.

    Args:
        params: the validated parameters (scenarios resolved to ``{name, conv, linear}``).
    """
    params = _as_mapping(params)
    rows = []
    for scenario in params["scenarios"]:
        name, conv, linear = scenario["name"], float(scenario["conv"]), float(scenario["linear"])
        rows.append({
            "scenario": name, "conv filters removed (%)": round(100 * conv, 1),
            "linear weights removed (%)": round(100 * linear, 1),
            "conv (structured)": "whole output filters, smallest L1 norm, every conv layer" if conv else "none",
            "linear (unstructured)": "single weights, smallest |w|, every linear layer" if linear else "none",
            "as the paper": "yes" if name in SCENARIO_ORDER else "no (own scenario)",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.attrs["title"] = f"Table {PAPER_TABLES['scenarios']} (paper): sparsity scenarios"
    return table


def _protocol_value(params: Mapping[str, object], key: str) -> object:
    if key == "seeds":
        return len(params["seeds"])
    if key == "loss":
        return "cross-entropy"  # the study's only loss (helpers.train)
    if key == "inference device":
        inference = params.get("inference") or {}
        return f"cpu, batch {', '.join(str(b) for b in inference.get('batch_sizes', [1]))}"
    value = params.get(key)
    return value if not isinstance(value, list) else ", ".join(map(str, value))


def configuration_table(params: Mapping[str, object]) -> pd.DataFrame:
    """Table 3 (paper): the study's configuration beside the paper's protocol
    (:data:`helpers.published.PAPER_PROTOCOL`), each setting marked as the paper's or not, then the settings
    the paper does not fix (models, datasets, methods, subsets, image size, per-model budgets, threads,
    inference samples).

    Args:
        params: the validated parameters.
    """
    params = _as_mapping(params)
    rows = []
    for key, paper in PAPER_PROTOCOL.items():
        ours = _protocol_value(params, key)
        same = ours == paper or (isinstance(paper, float) and isinstance(ours, (int, float)) and math.isclose(ours, paper))
        rows.append({"setting": key, "this study": str(ours), "paper": str(paper), "as the paper": "yes" if same else "no"})
    inference = params.get("inference") or {}
    others = {
        "datasets": ", ".join(params["datasets"]), "models": ", ".join(params["models"]),
        "methods": ", ".join(params.get("methods", [])), "image_size": params.get("image_size"),
        "train / val / test subsets": " / ".join(str(params.get(k)) for k in ("train_subset", "val_subset", "test_subset")),
        "model_options": params.get("model_options") or "none", "dataset_options": params.get("dataset_options") or "none",
        "device": params.get("device"), "threads (training / inference)": f"{params.get('threads')} / {inference.get('threads')}",
        "inference samples / warm-up": f"{inference.get('samples')} / {inference.get('warmup')}",
    }  # fmt: skip
    for key, value in others.items():
        rows.append({"setting": key, "this study": str(value), "paper": "", "as the paper": ""})
    table = pd.DataFrame(rows)
    table.attrs["title"] = f"Table {PAPER_TABLES['configuration']} (paper): configuration"
    return table


# ------------------------------------------------------------------ 05 / 06 companion-study figures
#
# Criteria study (Lajić, Peer, Emeršič 2025) and granularity study (Gurram, Sindhura, Bandari 2025),
# drawn from the same tidy tables (helpers.companion): runs with method ``criteria`` carry a
# ``criterion``, runs with method ``granularity`` a ``granularity``; ``dense`` runs are the baseline.

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

# The published figures (PUBLISHED_CRITERIA, PUBLISHED_GRANULARITY) live in helpers.published, with sources.
_PUBLISHED_CRITERIA_NAMES = ("greedy_output_norm", "l1", "bn_slimming")
_STAGES = (("accuracy_before", "before\npruning"), ("accuracy_pruned", "right after\npruning"),
           ("accuracy_finetuned", "after\nfine-tuning"))  # fmt: skip


def _ordered_present(values: Iterable[str], order: Sequence[str]) -> list[str]:
    present = {v for v in values if isinstance(v, str) and v}
    return [v for v in order if v in present] + sorted(present - set(order))


def _handles(names: Sequence[str], palette: Mapping[str, str], labels: Mapping[str, str]) -> tuple[list, list[str]]:
    return ([Patch(facecolor=palette.get(n, "#999999"), edgecolor="black", linewidth=0.5) for n in names],
            [labels.get(n, n) for n in names])  # fmt: skip


def _companion_runs(runs: pd.DataFrame, method: str, what: str) -> pd.DataFrame:
    column = "criterion" if method == "criteria" else "granularity"
    _require(runs, [*ID_COLUMNS, "status", column], what)
    data = runs[runs["method"] == method]
    if data.empty:
        raise ValueError(f"{what}: the runs table has no {method} runs; run a study with study_kind: {method}")
    return data


def criteria_accuracy(runs: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Test accuracy before pruning, right after removing the filters and after fine-tuning, per criterion.

    Panels: rows = datasets, columns = models; one line per criterion across the three stages (mean over
    seeds, 95 % interval with several seeds). ``bn_slimming_l1`` starts from its own dense model (trained
    with the L1 penalty on gamma), so its "before" point differs.
    """
    data = _companion_runs(runs, "criteria", "criteria_accuracy")
    data = data[data["status"] == "completed"]
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
    data = _companion_runs(runs, "criteria", "criteria_selection_time")
    data = data[data["status"] == "completed"]
    _require(data, ["selection_time_s"], "criteria_selection_time")
    criteria = _ordered_present(data["criterion"], CRITERION_ORDER)
    with _theme():
        fig, grid = _panel_grid(data, panel_w=4.2, panel_h=0.32 * len(criteria) + 1.4)
        for (dataset, model), ax in grid.items():
            panel = data[(data["dataset"] == dataset) & (data["model"] == model)]
            st = summarize(panel.assign(v=pd.to_numeric(panel["selection_time_s"], errors="coerce")), "v", ["criterion"])
            st = st.set_index("criterion").reindex(criteria)
            y = np.arange(len(criteria))
            xerr = None
            if (st["n"] > 1).any():
                xerr = np.array([st["mean"] - st["ci_low"], st["ci_high"] - st["mean"]])
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
    data = _companion_runs(runs, "criteria", "criteria_table")
    data = data[data["status"] == "completed"]
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
    """Ours beside Lajić et al.'s Tables 1-3, led by the drop: per dataset, model and criterion, the accuracy
    lost from before pruning to after fine-tuning (percentage points), then the two accuracies, for this
    study (mean over seeds) and as published.

    The drop leads because it is what carries over between training budgets: a dense model trained for
    fewer epochs, or on other data, starts elsewhere, but how much 40 % of its filters cost after
    fine-tuning is comparable. Rows: every published dataset x model family (VGG16, ResNet18, ResNet50),
    and every dataset x model this study ran (its model named in ``our model``; ``vgg16_bn_cifar`` is
    compared with the paper's VGG16, see :func:`helpers.published.model_family`). Criteria: the paper's
    three (greedy output norm, L1, BN slimming without the L1 penalty), then this study's others. NaN
    where one side has no figure. Published figures: :data:`helpers.published.PUBLISHED_CRITERIA`.
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


def _round(value: float, digits: int = 2) -> float:
    return round(float(value), digits) if np.isfinite(value) else math.nan


def _family_rank(family: str) -> int:
    order = list(PUBLISHED_CRITERIA_MODELS)
    return order.index(family) if family in order else len(order)


def criteria_vs_published(runs: pd.DataFrame | None, figures_dir: str | Path) -> Figure:
    """The accuracy each criterion costs (before pruning minus after fine-tuning, percentage points),
    ours beside Lajić et al.'s, per dataset and model: the drop leads (bars); each panel's title gives
    the accuracy before pruning, ours and published. Ours are solid bars, published ones hatched and
    lighter; an empty slot is a figure that one side does not have. Drawn from
    :func:`published_criteria_table`.
    """
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
        handles = [Patch(facecolor=CRITERION_PALETTE.get(c, "#999999"), edgecolor="black", linewidth=0.5) for c in criteria]
        labels = [CRITERION_LABELS.get(c, c) for c in criteria]
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
    """Size on disk, CPU latency per image, accuracy and MACs per granularity, beside the dense baseline.

    The shape of Gurram et al.'s table, measured: rows = dataset x model, columns = the four metrics;
    bars grouped by parameter budget, one per granularity; the dense model is the dashed line. A
    granularity with nothing to remove in the model (``not_applicable``) is marked "n/a".
    """
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
    """Gurram et al.'s ordering of the granularities beside ours, per measure (size, time, accuracy).

    One row per case (dataset, model, budget) x measure x granularity, with the published value and
    rank and ours (mean over seeds) and rank; rank 1 is the best (smallest, fastest, most accurate;
    ties share the lower rank). Only granularities that ran in the case are ranked, on both sides, and
    the dense model is left out: the question is the order of the granularities. Gurram et al. name
    neither model nor dataset, so their values are not comparable with ours; their order is.
    """
    data = _granularity_frame(runs, inference)
    data = data[(data["method"] == "granularity") & (data["status"] == "completed")]
    rows = []
    for (dataset, model, budget), case in data.groupby(["dataset", "model", "budget"], sort=False):
        granularities = [g for g in GRANULARITY_ORDER if g in set(case["granularity"])]
        for measure, (column, _) in _ORDERING_MEASURES.items():
            better = GRANULARITY_MEASURES[measure][1]
            ours = pd.Series({g: mean_interval(case.loc[case["granularity"] == g, column])[0] for g in granularities})
            published = pd.Series({g: PUBLISHED_GRANULARITY[(g, measure)][0] for g in granularities})
            ascending = better == "lower"
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
    """Does our ordering of the granularities agree with Gurram et al.'s? One panel per measure (size,
    CPU time, accuracy): each granularity at (published rank, our rank), one colour per case (dataset,
    model, budget), the diagonal is perfect agreement; Kendall's tau-b per case in the legend.

    Returns:
        The figure, and the table of Kendall's tau per case and measure (``kendall_tau``, and
        ``granularities``: how many were ranked; with 4-5 points tau moves in steps of 0.2-0.33).
    """
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


# -------------------------------------------------------------------------------- the paper's claims

_VERDICT_COLOURS = {"holds": "#1b7837", "does not hold": "#b2182b", "inconclusive": "#999999", "untestable here": "#ffffff"}


def claims_verdicts(claims: pd.DataFrame, figures_dir: str | Path | None = None) -> Figure:
    """One cell per claim x (dataset, model, scope), coloured by verdict: where the paper's findings hold here.

    Args:
        claims: the claims table (``results/claims.csv``, :func:`helpers.claims.evaluate_claims`).
        figures_dir: where to save ``claims_verdicts.png|svg``; not saved when None.
    """
    _require(claims, ("claim_id", "dataset", "model", "scope", "verdict"), "claims")
    table = claims.assign(case=claims["dataset"] + " · " + claims["model"] + " · " + claims["scope"].astype(str))
    ids = sorted(table["claim_id"].unique(), key=lambda c: (int("".join(ch for ch in c if ch.isdigit())), c))
    cases = sorted(table["case"].unique())
    with _theme():
        fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(ids), 1.0 + 0.28 * len(cases)), layout="constrained")
        for i, claim in enumerate(ids):
            for j, case in enumerate(cases):
                row = table[(table["claim_id"] == claim) & (table["case"] == case)]
                if row.empty:
                    continue
                verdict = row["verdict"].iloc[0]
                ax.add_patch(plt.Rectangle((i, j), 1, 1, facecolor=_VERDICT_COLOURS[verdict], edgecolor="#444444",
                                           hatch="//" if verdict == "untestable here" else None))
        ax.set_xlim(0, len(ids))
        ax.set_ylim(len(cases), 0)
        ax.set_xticks([i + 0.5 for i in range(len(ids))], ids)
        ax.set_yticks([j + 0.5 for j in range(len(cases))], cases, fontsize=7)
        ax.set_xlabel("claim (helpers.claims.CLAIMS)")
        counts = table["verdict"].value_counts()
        handles = [plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="#444444", hatch="//" if v == "untestable here" else None)
                   for v, c in _VERDICT_COLOURS.items()]
        ax.legend(handles, [f"{v} ({int(counts.get(v, 0))})" for v in _VERDICT_COLOURS], loc="upper left",
                  bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
        ax.set_title("The paper's claims on this study's runs")
    if figures_dir is not None:
        save_figure(fig, figures_dir, "claims_verdicts")
    return fig
