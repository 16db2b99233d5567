"""The primary study's figures (Douzandeh Zenoozi et al. 2025): training curves, time and memory (notebook
01), test metrics and Table 1 against the published figures of :mod:`helpers.published` (02), inference
latency, compaction and speedup (03), training and inference energy (04), and the claims' verdicts (07).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

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
    PUBLISHED_BLOODMNIST_28,
    METHOD_LABELS,
    TRAINING_FORM_ORDER,
    _METRIC_LABELS,
    _NOT_RECORDED,
    _PCT_METRICS,
    _SOURCE_HATCHES,
    _SPARE_HATCHES,
    _UNAVAILABLE,
    _bars,
    _file_stem,
    _handles,
    _interval,
    _label,
    _legend_outside,
    _method_order,
    _ordered_present,
    _panel_grid,
    _panel_pairs,
    _paper_title,
    _require,
    _scenario_order,
    _seed_note,
    _suptitle,
    _theme,
    _with_run_columns,
    mean_interval,
    method_palette,
    pareto_front,
    save_figure,
    scenarios_of,
    summarize,
    with_dense_baseline,
)
from helpers.published import PUBLISHED_PRIMARY


# ------------------------------------------------ what a figure holds: run status, training form, MACs

_METHOD_SHORT = {"dense": "dense", "pre_training": "Pre", "in_training": "In", "post_training": "Post", "set": "SET"}


def _completed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of completed runs (all rows when the table has no ``status``): what means are taken over."""
    return df[df["status"].fillna("completed") == "completed"] if "status" in df.columns else df


def _left_out(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``df`` that did not complete (diverged, failed): shown, never averaged silently."""
    if "status" not in df.columns or df.empty:
        return df.iloc[0:0]
    rows = df[df["status"].fillna("completed") != "completed"]
    return rows.drop_duplicates("run_id") if "run_id" in rows.columns else rows


def status_note(runs: pd.DataFrame, *, examples: int = 3) -> str:
    """The runs a figure or mean leaves out, in words: ``""`` when every run completed, else e.g.
    ``"left out of the means: 1 diverged (set uniform resnet18 s0)"``, naming ``examples`` runs per status.
    ``runs``: the rows the figure would hold (any table with ``status``; one run may have many rows)."""
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
    return _ordered_present(sparse["_form"], TRAINING_FORM_ORDER) if (counts > 1).any() else []


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


def _scenario_title(fig, kind: str, scenario: str, what: str, *, frame: pd.DataFrame, forms, done, lookup) -> None:
    """One scenario's figure title: what it shows, the training forms and seeds, then the MACs and status notes."""
    text = f"{what}, scenario {_label('scenario', scenario)}; {_forms_note(frame, forms)}; {_seed_note(done)}"
    for note in (_macs_title_note(lookup), status_note(frame)):
        text = _with_title_note(text, note)
    _suptitle(fig, _paper_title(kind, scenario, text))


def _forms_note(frame: pd.DataFrame, forms: Sequence[str]) -> str:
    """What the figure's runs trained as, for its title (from the table, never assumed)."""
    dense_forms = _ordered_present(_forms(frame[frame["method"] == "dense"]), TRAINING_FORM_ORDER)
    dense = f"; dense baseline: {', '.join(dense_forms)}" if dense_forms and dense_forms != list(forms) else ""
    if len(forms) > 1:
        return f"training forms {' and '.join(forms)} side by side (one column each{dense})"
    if forms[0] == _NOT_RECORDED:
        return "training form not recorded"
    return f"training form: {forms[0]}{dense}"


def macs_ratio_table(inference: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each run's MACs as a fraction of the dense model's: the compacted model's ``macs`` (``inference``, with
    the run ids joined in) over the dense run's (same dataset and model), at the smallest batch size measured:
    what a pruned model needs once its removed filters are gone (with ``set_allocation: erk`` SET keeps more of
    the early convs, so runs at more MACs than the other methods at the same scenario). With ``runs``, every run
    appears (one without inference rows, e.g. diverged, with a NaN ratio) with its ``status``, ``training_form``
    and ``set_allocation``. One row per run: the id columns, ``macs_compacted``, ``macs_dense``, ``macs_ratio``."""
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
    lookup: dict[tuple[str, str, str, str], list[float]] = {}
    for row in macs_ratio_table(inference).itertuples():
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
    if method == "dense":  # the dense run's ratio, whatever scenario it carries
        return next((ratios for (d, m, me, _), ratios in lookup.items() if (d, m, me) == (dataset, model, "dense")), [])
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
    """What was run, as Markdown generated from the ``runs`` table: one sentence per training form present (which
    runs trained masked, which compacted, and what that means for their time, energy and memory), then the runs
    left out. Notebooks print this, not a hard-coded sentence that could describe the wrong form."""
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
    """Training accuracy or loss per epoch, one figure per scenario (the paper's Figures 3-8): scenario -> Figure.

    ``epochs`` (run ids joined in) gives ``metric`` (``accuracy``, ``loss`` or another column) in ``phase``
    (``train`` or ``val``). Panels: rows = datasets, columns = models (x training forms when several ran); one
    line per method (mean over the completed runs), the dense baseline in every figure. ``runs`` gives each run's
    ``status`` and ``training_form`` (without it all runs count as completed, form not recorded): a diverged or
    failed run is drawn alone, dotted, ending in a cross, counted in the title, not in the mean. With
    ``inference``, each method's MACs ratio is written in every panel.
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
        frame = frame.assign(value=pd.to_numeric(frame[metric], errors="coerce") * (100.0 if percent else 1.0))
        methods = _method_order(frame["method"].unique())
        done, left = _completed(frame), _left_out(frame)
        multi_seed = done["seed"].nunique() > 1
        with _theme():
            fig, grid = _panel_grid(frame, forms=forms)
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
            what = f"{phase} {_METRIC_LABELS.get(metric, metric)} per epoch"
            _scenario_title(fig, kind, scenario, what, frame=frame, forms=forms, done=done, lookup=lookup)
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
            fig, grid = _panel_grid(frame, forms=forms, panel_w=max(2.8, 0.55 * len(methods) + 1.2))
            hatch_of: dict[str, str] | None = {} if source is not None else None
            for (dataset, model, form), ax in grid.items():
                where = lambda d: d[(d["dataset"] == dataset) & (d["model"] == model) & (d["_facet"] == form)]  # noqa: E731
                panel = where(done)
                st = summarize(panel, "value", ["method"])
                hatches, hatch_of = _source_hatches(st, panel, ["method"], source, hatch_of)
                notes = _bar_notes(lookup, where(left) if len(left) else left, dataset=dataset, model=model,
                                   scenario=scenario, methods=methods)  # fmt: skip
                _bars(ax, st, groups=methods, group_col="method", methods=methods, palette=palette, hatches=hatches,
                      group_labels=["" for _ in methods], notes=notes)  # fmt: skip
                ax.set_ylabel(ylabel)
                ax.set_xticks([])
                ax.set_xlabel("method")
            _method_legend(fig, methods, palette, hatch_of)
            _scenario_title(fig, kind, scenario, what, frame=frame, forms=forms, done=done, lookup=lookup)
        save_figure(fig, figures_dir, _file_stem(kind, scenario))
        figures[scenario] = fig
    return figures


def training_time(runs: pd.DataFrame, figures_dir: str | Path, *, inference: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Total training time per method, one figure per scenario (the paper's Figures 9-11), one column per
    training form when the study ran several; with ``inference``, each bar carries its runs' MACs ratio."""
    return _per_scenario_bars(runs, figures_dir, kind="training_time", value="train_time_s",
                              ylabel="total training time (s)", what="total training time", inference=inference)


def peak_memory(runs: pd.DataFrame, figures_dir: str | Path, *, inference: pd.DataFrame | None = None) -> dict[str, Figure]:
    """Peak training memory per method (an extension), drawn as :func:`training_time`."""
    return _per_scenario_bars(runs, figures_dir, kind="peak_memory", value="peak_memory_mb",
                              ylabel="peak memory (MiB)", what="peak memory during training", inference=inference)


# ------------------------------------------------------------------------------- 02 test-set figures


def test_metrics(
    runs: pd.DataFrame, figures_dir: str | Path, metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1"),
    *, inference: pd.DataFrame | None = None,
) -> dict[str, Figure]:
    """Test accuracy, precision, recall and F1 per method, one figure per scenario (the paper's Figures 12-14):
    scenario -> Figure. A black line over the accuracy bars marks the test split's majority-class accuracy
    (``test_majority_accuracy``: always answering the most frequent class; VisA about 89 %). With ``inference``,
    the accuracy bars carry their runs' MACs ratio; runs that did not complete are counted in the title and crossed."""
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
            fig, grid = _panel_grid(frame, forms=forms, panel_w=max(3.6, 0.25 * len(methods) * len(metrics) + 1.2))
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
            handles, labels = _handles(methods, palette, METHOD_LABELS)
            if majority_drawn:
                handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=1.2))
                labels.append("majority class (accuracy floor)")
            _legend_outside(fig, handles, labels, "method")
            what = "test accuracy, precision, recall, F1"
            _scenario_title(fig, "test_metrics", scenario, what, frame=frame, forms=forms, done=done, lookup=lookup)
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


def reference_accuracy_table(
    runs: pd.DataFrame, scenario: str = "mixed", dataset: str | None = "bloodmnist",
    metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1", "auc"),
) -> pd.DataFrame:
    """Table 1: test metrics of the model at its best-validation epoch (the paper's "best accuracy") and at the
    final epoch, dense and ``scenario`` sparse (the paper: ``mixed``), beside the published figures: one row per
    dataset (``dataset``, or None: every dataset run plus BloodMNIST) x model x method (dense, then each sparse
    method run in ``scenario``) x published figure. These are the BloodMNIST (28 px) dense baselines of
    :data:`PUBLISHED_BLOODMNIST_28`, the primary paper's Table 1 ``mixed`` figures (whose sparse method the
    available quote does not name, so they stand beside every sparse method) and its approximate VisA figure
    (:data:`helpers.published.PUBLISHED_PRIMARY`). Measured values are the mean over the completed runs (with
    the 95 % interval when seeds > 1); a model or method not run reads NaN. Columns: ``dataset``, ``model``,
    ``method``, ``scenario``, ``runs`` (how many completed, which did not), ``best epoch``, ``<metric>, best
    epoch (%)`` and ``<metric>, final epoch (%)`` per metric, ``majority class (%)``, ``published (%)``,
    ``published source``."""
    _require(runs, [*ID_COLUMNS, "test_accuracy"], "reference_accuracy_table")
    published = _table1_published(scenario)
    datasets = [dataset] if dataset is not None else _ordered_present(
        [*runs["dataset"].dropna().unique(), "bloodmnist"], list(DATASET_LABELS))
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
                done, note = _completed(rows), status_note(rows).removeprefix("left out of the means: ")
                count = f"{len(done)} completed" + (f", {note}" if note else "")
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
    data = inference[inference["batch_size"] == inference["batch_size"].min()].copy()
    data["latency_ms_per_sample"] = pd.to_numeric(data["latency_ms_mean"], errors="coerce")
    return data


def _stack_scenarios(df: pd.DataFrame) -> pd.DataFrame:
    """Each scenario's rows with the dense baseline repeated in it, concatenated (for scenario-grouped bars)."""
    scenarios = scenarios_of(df) or _scenario_order(df["scenario"].unique())
    return pd.concat([with_dense_baseline(df, s) for s in scenarios], ignore_index=True)


def inference_latency(inference: pd.DataFrame, figures_dir: str | Path, *, runs: pd.DataFrame | None = None) -> Figure:
    """Average CPU inference time per sample, masked vs physically compacted (the paper's Figure 18): rows = dataset
    x model, columns = variant; bars by scenario, one per method, the compacted ones with their runs' MACs ratio.
    With ``runs``, runs without a measurement (diverged, failed) are counted in the title and crossed."""
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
    """The figure of :func:`inference_latency` and :func:`inference_energy` (MACs ratios from ``lookup``), bars
    hatched by ``sources`` (an energy-source column) when given."""
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
    hatch_of: dict[str, str] | None = {} if sources is not None else None
    with _theme():
        fig, axes = plt.subplots(len(panels), len(variants), figsize=(width * len(variants), 2.9 * len(panels)),
                                 squeeze=False, sharey="row", layout="constrained")
        for i, (dataset, model) in enumerate(panels):
            for j, variant in enumerate(variants):
                ax = axes[i][j]
                panel = data[(data["dataset"] == dataset) & (data["model"] == model) & (data["variant"] == variant)]
                st = summarize(panel, value, ["scenario", "method"])
                hatches, hatch_of = _source_hatches(st, panel, ["scenario", "method"], sources, hatch_of)
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
        _method_legend(fig, methods, palette, hatch_of)
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
    """Masked vs physically compacted, one row per run of ``inference`` (run ids joined in; per dataset, model,
    method and scenario with ``mean_over_seeds``) at the smallest batch size: latency, MACs, non-zero parameters,
    file size, the compacted model's largest logit difference from the masked one, ``speedup`` = masked /
    compacted latency (delivered) and ``macs_ratio`` = masked / compacted MACs (promised by the arithmetic)."""
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
    """Measured speedup of the compacted model over its masked twin against the MACs ratio (an extension): one
    point per run at x = MACs(masked) / MACs(compacted), the promised speedup (the inverse of the MACs ratio the
    other figures write, as a masked model computes the dense MACs), y = latency(masked) / latency(compacted),
    the delivered one; the diagonal is "as promised". With ``runs``, runs without a measurement are counted."""
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


def _group_source(rows: pd.DataFrame, source_col: str) -> str:
    sources = sorted({str(s) for s in rows[source_col].fillna(_UNAVAILABLE)})
    return sources[0] if len(sources) == 1 else "mixed"


def _source_hatches(
    st: pd.DataFrame, panel: pd.DataFrame, keys: list[str], source: str | None, hatch_of: dict[str, str] | None
) -> tuple[dict[object, str] | None, dict[str, str] | None]:
    """Hatch each bar (row of ``st``, from ``summarize(panel, ..., keys)``) by the energy source of its rows in
    ``panel`` ("mixed" when they differ): ``(row index -> hatch, hatch_of)``, ``hatch_of`` (source -> hatch,
    shared by a figure's panels) grown by this panel's sources; ``(None, hatch_of)`` without ``source``."""
    if source is None:
        return None, hatch_of
    groups = dict(list(panel.groupby(keys, sort=False)))
    st["source"] = [_group_source(groups[tuple(k)], source) for k in st[keys].itertuples(index=False)]
    hatch_of = _hatch_map(set(hatch_of) | set(st["source"]))
    return {i: hatch_of[s] for i, s in st["source"].items()}, hatch_of


def _method_legend(
    fig: Figure, methods: Sequence[str], palette: Mapping[str, str], hatch_of: Mapping[str, str] | None
) -> None:
    """The method legend, and with ``hatch_of`` (energy source -> hatch) the energy-source legend below it."""
    handles, labels = _handles(methods, palette, METHOD_LABELS)
    _legend_outside(fig, handles, labels, "method", anchor_y=0.5 if hatch_of is None else 0.7)
    if hatch_of is None:
        return
    shown = {s: h for s, h in hatch_of.items() if s != _UNAVAILABLE}
    handles = [Patch(facecolor="white", edgecolor="black", hatch=h) for h in shown.values()]
    handles.append(Patch(facecolor="white", edgecolor="white"))
    fig.legend(handles, [*shown, "n/a = not measured"], title="energy source", loc="center left",
               bbox_to_anchor=(1.0, 0.25), frameon=False)  # fmt: skip


def energy_statement(table: pd.DataFrame, energy: str, source: str, what: str) -> str:
    """A plain sentence on what ``energy`` (a column in joules of ``table``: ``runs``' ``train_energy_j`` or
    ``inference``'s ``energy_j``, with its ``source`` column) was measured: which sources, how many rows, or
    that nothing was; ``what`` names the quantity, e.g. "training energy"."""
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
    """Total training energy per method, one figure per scenario (the paper's Figures 15-17), drawn as
    :func:`training_time` and hatched by energy source; an empty dict when no run has a measured energy."""
    _require(runs, [*ID_COLUMNS, "train_energy_j", "train_energy_source"], "training_energy")
    measured = _is_measured(runs["train_energy_j"], runs["train_energy_source"])
    if not measured.any():
        return {}
    runs = runs.assign(train_energy_j=pd.to_numeric(runs["train_energy_j"], errors="coerce").where(measured))
    return _per_scenario_bars(runs, figures_dir, kind="training_energy", value="train_energy_j", scale=1e-3,
                              ylabel="total training energy (kJ)", what="total training energy", inference=inference,
                              source="train_energy_source")  # fmt: skip


def inference_energy(inference: pd.DataFrame, figures_dir: str | Path, *, runs: pd.DataFrame | None = None) -> Figure | None:
    """CPU inference energy, masked vs compacted (the paper's Figure 19), drawn as :func:`inference_latency`
    with bars hatched by energy source; ``None`` when nothing was measured. The value is ``energy_j`` as
    recorded: the whole measurement (model load from disk, warm-up and ``samples`` timed images)."""
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


# -------------------------------------------------------------------------------- the paper's claims

_VERDICT_COLOURS = {"holds": "#1b7837", "does not hold": "#b2182b", "inconclusive": "#999999", "untestable here": "#ffffff"}


def claims_verdicts(claims: pd.DataFrame, figures_dir: str | Path | None = None) -> Figure:
    """One cell per claim x (dataset, model, scope) of ``claims`` (:func:`helpers.claims.evaluate_claims`),
    coloured by verdict; saved as ``claims_verdicts.png|svg`` in ``figures_dir`` unless it is None."""
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
