"""The look shared by every figure (palettes, labels, the paper's figure numbers, theme, panel grids, bars,
saving) and the table helpers the studies' figures use (seed intervals, run ids, dense baseline, Pareto fronts).
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

from helpers.published import PUBLISHED_BLOODMNIST_BASELINES


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
    "vgg16_mini": "VGG16 mini (widths / 8)", "resnet18_mini": "ResNet18 mini (widths / 8)",
}  # fmt: skip

SCENARIO_ORDER: tuple[str, ...] = ("uniform", "mixed", "linear_only")
_SCENARIO_LABELS: dict[str, str] = {
    "uniform": "uniform (conv 80 %, linear 80 %)",
    "mixed": "mixed (conv 50 %, linear 80 %)",
    "linear_only": "linear_only (conv 0 %, linear 80 %)",
}

# The primary study's figure numbers: (figure kind, scenario) -> number. Figures 3-8 are read as two families of
# three (training accuracy, then loss, per scenario), like Figures 9-11, 12-14 and 15-17.
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
            "pass a table from helpers.results.load_tables with the run ids joined in (helpers.plots.with_run_ids)"
        )


def method_palette(methods: Iterable[str] = ()) -> dict[str, str]:
    """The method -> colour dict: :data:`METHOD_PALETTE` plus stable colours for any other method given."""
    palette = dict(METHOD_PALETTE)
    extra = sorted({m for m in methods if m not in palette})
    for i, method in enumerate(extra):
        palette[method] = _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)]
    return palette


def _method_order(methods: Iterable[str]) -> list[str]:
    return _ordered_present(methods, METHOD_ORDER)


def _scenario_order(scenarios: Iterable[str]) -> list[str]:
    return _ordered_present(scenarios, SCENARIO_ORDER)


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
    """``(mean, low, high)``: the mean of ``values`` (e.g. one metric over seeds; non-finite values dropped) and
    its two-sided Student-t interval of coverage ``confidence``. With one finite value the interval collapses
    onto the mean; with none all three are NaN."""
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
    """Mean over seeds of the numeric column ``value`` with its 95 % interval, one row per ``by`` group (the
    ids other than ``seed``, usually): the ``by`` columns, ``mean``, ``ci_low``, ``ci_high``, ``n`` (finite values)."""
    _require(df, [value, *by], "summarize")
    rows = []
    for key, group in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_interval(group[value])
        n = int(np.isfinite(pd.to_numeric(group[value], errors="coerce").to_numpy(dtype=float)).sum())
        rows.append({**dict(zip(by, key)), "mean": mean, "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def with_run_ids(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the run's id columns (:data:`ID_COLUMNS`) joined in on ``run_id``; columns it has are kept."""
    _require(table, ["run_id"], "with_run_ids (table)")
    _require(runs, ["run_id"], "with_run_ids (runs)")
    return _with_run_columns(table, runs, ID_COLUMNS)


def _with_run_columns(
    table: pd.DataFrame, runs: pd.DataFrame | None, columns: Sequence[str] = ("status", "training_form")
) -> pd.DataFrame:
    """``table`` (epochs, inference) with the run's ``columns`` that it lacks joined in from ``runs`` on ``run_id``."""
    if runs is None or "run_id" not in table.columns or "run_id" not in runs.columns:
        return table
    missing = [c for c in columns if c not in table.columns and c in runs.columns]
    if not missing:
        return table
    return table.merge(runs[["run_id", *missing]].drop_duplicates("run_id"), on="run_id", how="left")


def scenarios_of(df: pd.DataFrame) -> list[str]:
    """The pruning scenarios present in ``df`` (the dense baseline's own scenario value excluded), in study order."""
    _require(df, ["scenario", "method"], "scenarios_of")
    sparse = df[df["method"] != "dense"]
    return _scenario_order(sparse["scenario"].dropna().unique())


def with_dense_baseline(df: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """Rows of ``scenario`` plus the dense baseline's rows (kept once when repeated per scenario), relabelled as
    that scenario: a dense run has no sparsity, so whatever scenario it carries it is every scenario's reference."""
    _require(df, ["scenario", "method"], "with_dense_baseline")
    sparse = df[(df["method"] != "dense") & (df["scenario"] == scenario)]
    dense = df[df["method"] == "dense"]
    run = ("run_id",) if "run_id" in dense.columns else ("dataset", "model", "seed")
    dense = dense.drop_duplicates([c for c in (*run, "epoch", "phase", "variant", "batch_size") if c in dense.columns])
    return pd.concat([dense.assign(scenario=scenario), sparse], ignore_index=True)


def pareto_front(df: pd.DataFrame, cost: str, benefit: str) -> pd.Series:
    """Which rows are Pareto-optimal (no other row has a lower-or-equal ``cost`` and a higher-or-equal ``benefit``,
    one strictly): a boolean Series aligned with ``df``; a row with a NaN in either column is never optimal."""
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

    ``df``: a tidy table with the id columns (``runs``, or :func:`last_epoch` of ``epochs``); ``value`` is
    multiplied by ``scale`` (100: fractions in percent) and shown with ``digits`` decimals. A cell is the mean
    over seeds, with its 95 % interval ``[low, high]`` when several; NaN where nothing ran or was measured. The
    dense baseline's column is its own scenario value (``none``)."""
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
    """Set only these rcParams for the block and put back only these. Not ``plt.rc_context``: that restores
    *every* rcParam, including ``interactive``, which Jupyter's inline backend switches on when a kernel's
    first figure is created; restoring it would stop every later figure from being displayed."""
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
    return datasets, models, set(zip(df["dataset"], df["model"]))


def _panel_grid(
    df: pd.DataFrame, *, panel_w: float = 3.6, panel_h: float = 2.8, sharey: bool = False,
    forms: Sequence[str] | None = None,
):
    """A grid of panels, rows = datasets, columns = models; panels with no data are removed. Returns the
    figure and ``{(dataset, model): ax}``; with ``forms`` (the values of ``df["_facet"]``), one column per
    model x form (titled with the form when several) and ``{(dataset, model, form): ax}``."""
    datasets, models, present = _panel_pairs(df)
    if forms is not None:
        present = set(zip(df["dataset"], df["model"], df["_facet"]))
    columns = [(m, f) for m in models for f in (forms or [None])]
    fig, axes = plt.subplots(
        len(datasets), len(columns), figsize=(panel_w * len(columns), panel_h * len(datasets)),
        squeeze=False, sharey=sharey, layout="constrained",
    )
    grid = {}
    for i, dataset in enumerate(datasets):
        for j, (model, form) in enumerate(columns):
            ax = axes[i][j]
            key = (dataset, model) if forms is None else (dataset, model, form)
            if key in present:
                title = f"{_label('dataset', dataset)} / {_label('model', model)}"
                ax.set_title(title + (f"\ntrained {form}" if forms is not None and len(forms) > 1 else ""))
                grid[key] = ax
            else:
                ax.remove()
    return fig, grid


def _suptitle(fig: Figure, text: str) -> None:
    """The figure's title (with the paper's figure number), wrapped to the figure's width."""
    width = max(45, int(fig.get_figwidth() * 11))
    fig.suptitle("\n".join(textwrap.wrap(text, width=width)))


def _legend_outside(fig: Figure, handles: list, labels: list[str], title: str, *, anchor_y: float = 0.5) -> None:
    fig.legend(handles, labels, title=title, loc="center left", bbox_to_anchor=(1.0, anchor_y), frameon=False)


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

    ``stats`` rows carry ``method``, ``mean``, ``ci_low``, ``ci_high``, ``n``, ``group_col``; a NaN mean is drawn
    as "n/a" (never a zero bar), a missing row leaves a gap. ``notes`` ((group, method) -> text: MACs ratio, runs
    left out of the mean) are written upright at the foot of the bar's slot, drawn or not."""
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


def _seed_note(df: pd.DataFrame) -> str:
    seeds = df["seed"].nunique() if "seed" in df.columns else 1
    return f"mean and 95 % interval over {seeds} seeds" if seeds > 1 else "one seed"


def _ordered_present(values: Iterable[str], order: Sequence[str]) -> list[str]:
    present = {v for v in values if isinstance(v, str) and v}
    return [v for v in order if v in present] + sorted(present - set(order))


def _handles(names: Sequence[str], palette: Mapping[str, str], labels: Mapping[str, str]) -> tuple[list, list[str]]:
    return ([Patch(facecolor=palette.get(n, "#999999"), edgecolor="black", linewidth=0.5) for n in names],
            [labels.get(n, n) for n in names])  # fmt: skip


def _round(value: float, digits: int = 2) -> float:
    return round(float(value), digits) if np.isfinite(value) else math.nan
