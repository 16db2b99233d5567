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

# Table 1 references: model -> list of (accuracy %, source).
PUBLISHED_BLOODMNIST_28: dict[str, list[tuple[float, str]]] = {
    "vgg16": [(94.85, "Doerrich et al. 2024 (MedMNIST+, arXiv 2404.15786), VGG16 end-to-end, 28 px")],
    "resnet18": [
        (91.93, "Doerrich et al. 2024 (MedMNIST+, arXiv 2404.15786), ResNet18 end-to-end, 28 px"),
        (95.8, "Yang et al. 2023 (MedMNIST v2, Sci. Data 10:41), ResNet-18 (28)"),
    ],
}

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
) -> None:
    """Grouped bars: one group per ``groups`` value, one bar per method, whiskers from ``ci_low/ci_high``.

    ``stats`` rows carry ``method``, ``mean``, ``ci_low``, ``ci_high``, ``n`` and ``group_col``; a row whose
    mean is NaN is drawn as an "n/a" mark (never a zero bar); a missing row leaves a gap.
    """
    # Grouped by method itself: one centred bar per group; otherwise the methods side by side in each group.
    one_per_group = group_col == "method"
    width = 0.7 if one_per_group else 0.8 / max(len(methods), 1)
    for gi, group in enumerate(groups):
        rows = stats if group_col is None else stats[stats[group_col] == group]
        for mi, method in enumerate(methods):
            row = rows[rows["method"] == method]
            if row.empty:
                continue
            row = row.iloc[0]
            x = gi if one_per_group else gi - 0.4 + width * (mi + 0.5)
            if not np.isfinite(row["mean"]):
                ax.text(x, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color=palette[method])
                continue
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


# ----------------------------------------------------------------------------------- 01 training figures


def training_curves(
    epochs: pd.DataFrame, figures_dir: str | Path, *, metric: str = "accuracy", phase: str = "train"
) -> dict[str, Figure]:
    """Training accuracy or loss per epoch, one figure per scenario (the paper's Figures 3-8).

    Panels: rows = datasets, columns = models; one line per method, the dense baseline in every figure.

    Args:
        epochs: the ``epochs`` table with the run ids joined in.
        figures_dir: where the PNG / SVG files go.
        metric: ``accuracy`` or ``loss`` (or another metric column of ``epochs``).
        phase: ``train`` or ``val``.

    Returns:
        scenario -> Figure.
    """
    _require(epochs, [*ID_COLUMNS, "epoch", "phase", metric], "training_curves")
    data = epochs[epochs["phase"] == phase]
    if data.empty:
        raise ValueError(
            f"no rows with phase {phase!r} in the epochs table (phases present: {sorted(epochs['phase'].unique())}); "
            "pass phase='train' or 'val'"
        )
    kind = f"training_{metric}" if phase == "train" else f"{phase}_{metric}"
    percent = metric in _PCT_METRICS
    palette = method_palette(data["method"].unique())
    figures = {}
    for scenario in scenarios_of(data) or _scenario_order(data["scenario"].unique()):
        frame = with_dense_baseline(data, scenario)
        frame = frame.assign(value=_as_percent(frame, metric) if percent else pd.to_numeric(frame[metric], errors="coerce"))
        methods = _method_order(frame["method"].unique())
        multi_seed = frame["seed"].nunique() > 1
        with _theme():
            fig, grid = _panel_grid(frame)
            for (dataset, model), ax in grid.items():
                panel = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
                sns.lineplot(
                    data=panel, x="epoch", y="value", hue="method", hue_order=methods, palette=palette, ax=ax,
                    errorbar=_interval if multi_seed else None, marker="o", markersize=4, legend=False,
                )
                ax.set_xlabel("epoch")
                ylabel = _METRIC_LABELS.get(metric, metric) + (" (%)" if percent else "")
                ax.set_ylabel(f"{phase} {ylabel}")
                ax.xaxis.get_major_locator().set_params(integer=True)
            handles = [plt.Line2D([], [], color=palette[m], marker="o", markersize=4) for m in methods]
            _legend_outside(fig, handles, [_label("method", m) for m in methods], "method")
            _suptitle(fig, 
                _paper_title(kind, scenario, f"{phase} {_METRIC_LABELS.get(metric, metric)} per epoch, "
                             f"scenario {_label('scenario', scenario)}; {_seed_note(frame)}")
            )
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
) -> dict[str, Figure]:
    """One figure per scenario, a bar per method in each dataset x model panel (mean, 95 % interval)."""
    _require(runs, [*ID_COLUMNS, value], kind)
    palette = method_palette(runs["method"].unique())
    figures = {}
    for scenario in scenarios_of(runs) or _scenario_order(runs["scenario"].unique()):
        frame = with_dense_baseline(runs, scenario)
        frame = frame.assign(value=pd.to_numeric(frame[value], errors="coerce") * scale)
        methods = _method_order(frame["method"].unique())
        with _theme():
            fig, grid = _panel_grid(frame, panel_w=max(2.8, 0.55 * len(methods) + 1.2))
            for (dataset, model), ax in grid.items():
                panel = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
                st = summarize(panel, "value", ["method"])
                _bars(ax, st, groups=methods, group_col="method", methods=[m for m in methods], palette=palette,
                      group_labels=["" for _ in methods])
                ax.set_ylabel(ylabel)
                ax.set_xticks([])
                ax.set_xlabel("method")
            _legend_outside(fig, *_method_handles(methods, palette), "method")
            _suptitle(fig, _paper_title(kind, scenario, f"{what}, scenario {_label('scenario', scenario)}; {_seed_note(frame)}"))
        save_figure(fig, figures_dir, _file_stem(kind, scenario))
        figures[scenario] = fig
    return figures


def training_time(runs: pd.DataFrame, figures_dir: str | Path) -> dict[str, Figure]:
    """Total training time per method, one figure per scenario (the paper's Figures 9-11)."""
    return _per_scenario_bars(runs, figures_dir, kind="training_time", value="train_time_s",
                              ylabel="total training time (s)", what="total training time")


def peak_memory(runs: pd.DataFrame, figures_dir: str | Path) -> dict[str, Figure]:
    """Peak training memory per method, one figure per scenario (an extension; the paper has no such figure)."""
    return _per_scenario_bars(runs, figures_dir, kind="peak_memory", value="peak_memory_mb",
                              ylabel="peak memory (MiB)", what="peak memory during training")


# ------------------------------------------------------------------------------- 02 test-set figures


def test_metrics(
    runs: pd.DataFrame, figures_dir: str | Path, metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1")
) -> dict[str, Figure]:
    """Test accuracy, precision, recall and F1 per method, one figure per scenario (the paper's Figures 12-14).

    Returns:
        scenario -> Figure.
    """
    columns = [f"test_{m}" for m in metrics]
    _require(runs, [*ID_COLUMNS, *columns], "test_metrics")
    palette = method_palette(runs["method"].unique())
    figures = {}
    for scenario in scenarios_of(runs) or _scenario_order(runs["scenario"].unique()):
        frame = with_dense_baseline(runs, scenario)
        long = frame.melt(id_vars=list(ID_COLUMNS), value_vars=columns, var_name="metric", value_name="raw")
        long["value"] = pd.to_numeric(long["raw"], errors="coerce") * 100.0
        methods = _method_order(long["method"].unique())
        with _theme():
            fig, grid = _panel_grid(long, panel_w=max(3.6, 0.25 * len(methods) * len(metrics) + 1.2))
            for (dataset, model), ax in grid.items():
                panel = long[(long["dataset"] == dataset) & (long["model"] == model)]
                st = summarize(panel, "value", ["metric", "method"])
                _bars(ax, st, groups=columns, group_col="metric", methods=methods, palette=palette,
                      group_labels=[_METRIC_LABELS[m].replace(" (macro)", "") for m in metrics])
                ax.set_ylabel("test score (%, macro avg.)")
                ax.set_ylim(0, 105)
            _legend_outside(fig, *_method_handles(methods, palette), "method")
            _suptitle(fig, _paper_title("test_metrics", scenario, f"test accuracy, precision, recall, F1, scenario "
                                      f"{_label('scenario', scenario)}; {_seed_note(frame)}"))
        save_figure(fig, figures_dir, _file_stem("test_metrics", scenario))
        figures[scenario] = fig
    return figures


def reference_accuracy_table(runs: pd.DataFrame, scenario: str = "mixed", dataset: str = "bloodmnist") -> pd.DataFrame:
    """Table 1: dense and ``scenario`` sparse test accuracy next to the published BloodMNIST (28 px) references.

    One row per model that has a published reference or appears in ``runs`` for ``dataset``. Measured values
    are the mean over seeds (with the 95 % interval when seeds > 1); a model or method the study did not run
    reads NaN. The reference sources are in :data:`PUBLISHED_BLOODMNIST_28`.

    Returns:
        Columns: ``model``, ``dense (%)``, one ``<method> <scenario> (%)`` column per sparse method run,
        ``published (%)``, ``published source``.
    """
    _require(runs, [*ID_COLUMNS, "test_accuracy"], "reference_accuracy_table")
    data = runs[runs["dataset"] == dataset]
    models = [m for m in MODEL_LABELS if m in set(data["model"]) | set(PUBLISHED_BLOODMNIST_28)]
    sparse_methods = _method_order(data.loc[(data["method"] != "dense") & (data["scenario"] == scenario), "method"].unique())
    multi_seed = data["seed"].nunique() > 1

    def cell(rows: pd.DataFrame) -> object:
        mean, low, high = mean_interval(rows["test_accuracy"].astype(float) * 100.0)
        if not np.isfinite(mean):
            return math.nan
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]" if multi_seed else round(mean, 2)

    table = []
    for model in models:
        rows = data[data["model"] == model]
        refs = PUBLISHED_BLOODMNIST_28.get(model, [(math.nan, "no published 28 px reference")])
        for ref_value, ref_source in refs:
            row = {"model": _label("model", model), "dense (%)": cell(rows[rows["method"] == "dense"])}
            for method in sparse_methods:
                row[f"{_label('method', method)} {scenario} (%)"] = cell(
                    rows[(rows["method"] == method) & (rows["scenario"] == scenario)]
                )
            row["published (%)"] = ref_value
            row["published source"] = ref_source
            table.append(row)
    return pd.DataFrame(table)


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


def inference_latency(inference: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Average CPU inference time per sample, masked vs physically compacted (the paper's Figure 18).

    Panels: rows = dataset x model, columns = variant; bars grouped by scenario, one per method.
    """
    data = _stack_scenarios(_per_sample(inference))
    batch = int(data["batch_size"].iloc[0])
    return _variant_bars(
        data, figures_dir, value="latency_ms_per_sample", ylabel="inference time per sample (ms)", kind="inference_latency",
        what=f"average CPU inference time per sample (batch {batch}), masked vs compacted",
    )


def _variant_bars(
    data: pd.DataFrame, figures_dir: str | Path, *, value: str, ylabel: str, kind: str, what: str,
    sources: str | None = None,
) -> Figure:
    """Panels: rows = dataset x model, columns = variant (masked, compacted); bars grouped by scenario, one per
    method; hatched by ``sources`` (an energy-source column) when given."""
    palette = method_palette(data["method"].unique())
    methods = _method_order(data["method"].unique())
    scenarios = _scenario_order(data["scenario"].unique())
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
                _bars(ax, st, groups=scenarios, group_col="scenario", methods=methods, palette=palette, hatches=hatches,
                      group_labels=scenarios)
                ax.set_title(f"{_label('dataset', dataset)} / {_label('model', model)} — {variant}")
                ax.set_ylabel(ylabel if j == 0 else "")
                ax.set_xlabel("scenario")
        handles, labels = _method_handles(methods, palette)
        if sources is not None:
            _legend_outside(fig, handles, labels, "method", anchor_y=0.7)
            _source_legend(fig, hatch_of, anchor_y=0.25)
        else:
            _legend_outside(fig, handles, labels, "method")
        _suptitle(fig, _paper_title(kind, None, f"{what}; {_seed_note(data)}"))
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


def speedup_vs_macs(inference: pd.DataFrame, figures_dir: str | Path) -> Figure:
    """Measured speedup of the compacted model over its masked twin against the MACs ratio (an extension).

    Each point is one run: x = MACs(masked) / MACs(compacted), the speedup the arithmetic promises;
    y = latency(masked) / latency(compacted), the speedup the CPU delivers. The diagonal is "as promised".
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
        _suptitle(fig, _paper_title("speedup_vs_macs", None,
                                  "compaction speedup (CPU latency) against the MACs ratio; dashed = as promised"))
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
            latencies = panel["latency"].dropna()
            if len(latencies) and latencies.min() > 0 and latencies.max() / latencies.min() > 20:
                ax.set_xscale("log")  # latencies spanning orders of magnitude
            ax.set_xlabel(f"inference time per sample, {deployed} (ms)")
            ax.set_ylabel("test accuracy (%)")
        _scatter_legends(fig, methods, scenarios, palette)
        _suptitle(fig, _paper_title("accuracy_latency_pareto", None,
                                  "test accuracy vs CPU inference time; grey line = Pareto front"))
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


def training_energy(runs: pd.DataFrame, figures_dir: str | Path) -> dict[str, Figure]:
    """Total training energy per method, one figure per scenario (the paper's Figures 15-17), bars hatched by
    energy source. Returns an empty dict when no run has a measured energy (nothing is drawn as 0).
    """
    _require(runs, [*ID_COLUMNS, "train_energy_j", "train_energy_source"], "training_energy")
    if not _is_measured(runs["train_energy_j"], runs["train_energy_source"]).any():
        return {}
    runs = runs.assign(train_energy_j=pd.to_numeric(runs["train_energy_j"], errors="coerce").where(
        _is_measured(runs["train_energy_j"], runs["train_energy_source"])))
    palette = method_palette(runs["method"].unique())
    figures = {}
    for scenario in scenarios_of(runs) or _scenario_order(runs["scenario"].unique()):
        frame = with_dense_baseline(runs, scenario)
        frame = frame.assign(value=frame["train_energy_j"] / 1000.0)
        methods = _method_order(frame["method"].unique())
        with _theme():
            fig, grid = _panel_grid(frame, panel_w=max(2.8, 0.55 * len(methods) + 1.2))
            hatch_of: dict[str, str] = {}
            for (dataset, model), ax in grid.items():
                panel = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
                st = summarize(panel, "value", ["method"])
                st["source"] = [_group_source(panel[panel["method"] == m], "train_energy_source") for m in st["method"]]
                hatch_of = _hatch_map(set(hatch_of) | set(st["source"]))
                _bars(ax, st, groups=methods, group_col="method", methods=methods, palette=palette,
                      hatches={i: hatch_of[s] for i, s in st["source"].items()}, group_labels=["" for _ in methods])
                ax.set_xticks([])
                ax.set_xlabel("method")
                ax.set_ylabel("total training energy (kJ)")
            _legend_outside(fig, *_method_handles(methods, palette), "method", anchor_y=0.7)
            _source_legend(fig, hatch_of, anchor_y=0.25)
            _suptitle(fig, _paper_title("training_energy", scenario, f"total training energy, scenario "
                                      f"{_label('scenario', scenario)}; {_seed_note(frame)}"))
        save_figure(fig, figures_dir, _file_stem("training_energy", scenario))
        figures[scenario] = fig
    return figures


def inference_energy(inference: pd.DataFrame, figures_dir: str | Path) -> Figure | None:
    """CPU inference energy, masked vs compacted (the paper's Figure 19), bars hatched by energy source.

    The value is ``energy_j`` as recorded: the energy of the whole measurement (model load from disk,
    warm-up and ``samples`` timed images). Returns ``None`` when nothing was measured (nothing is drawn as 0).
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
        kind="inference_energy", sources="energy_source",
        what=f"CPU inference energy of one measurement (model load + warm-up + {samples} images), masked vs compacted",
    )


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
