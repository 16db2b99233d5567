"""Figures and tables of the study's notebooks, drawn with seaborn / matplotlib from the tidy results tables.

Every figure function takes a tidy table (one row per observation, with the run's id columns
``dataset, model, method, scenario, seed`` joined in, see ``helpers.results``) and a figures folder, saves
the figure there as PNG and SVG under a name that says what it shows, and returns the matplotlib
``Figure`` (or a dict of figures, one per scenario). Figures that mirror a figure of the primary study
(Douzandeh Zenoozi et al., *A comparative study of neural network pruning strategies for industrial
applications*, Frontiers in Computer Science 2025, doi 10.3389/fcomp.2025.1563942) carry its number in the
title and in the file name (``fig03_...``); the extensions say "extension" instead.

The package reads only result tables (and, for Figure 2, a study's parameters and its splits); it imports
nothing that trains or runs a study. Its modules:

- :mod:`helpers.plots.style`: palettes, labels, figure numbers, theme, panel grids, bars, saving, and the
  table helpers every figure shares (intervals over seeds, run ids, the dense baseline, summary tables).
- :mod:`helpers.plots.primary`: the primary study's figures 3-19, Table 1 and the claims' verdicts.
- :mod:`helpers.plots.protocol`: the primary study's Figure 2 and Tables 2-3 (data, scenarios, setup).
- :mod:`helpers.plots.criteria`: the criteria study's figures and its comparison with the published ones.
- :mod:`helpers.plots.granularity`: the granularity study's figures and its rank agreement.

Every public name of these modules is importable from ``helpers.plots`` itself.

Conventions held across all figures:

- One colour per method everywhere (:data:`METHOD_PALETTE`); the dense baseline is drawn in every
  scenario's figure (a dense run has no sparsity, so it is the reference of every scenario).
- With more than one seed, a point or bar is the mean over seeds and the whiskers / band are a 95 %
  Student-t interval of that mean (:func:`mean_interval`); with one seed, the single value without whiskers.
- Accuracy-like metrics (stored as fractions in ``[0, 1]``) are shown in percent.
- Energy is never drawn as 0 when nothing was measured: a missing (NaN) energy is marked "n/a", every
  drawn bar is hatched by its ``energy_source``, and a figure with no measured energy at all is not drawn
  (the function returns ``None`` and :func:`energy_statement` says so in words).
"""

from __future__ import annotations

from helpers.plots.style import (
    DATASET_LABELS,
    ID_COLUMNS,
    METHOD_LABELS,
    METHOD_ORDER,
    METHOD_PALETTE,
    MODEL_LABELS,
    MissingColumnsError,
    PAPER_FIGURES,
    PAPER_TABLES,
    PUBLISHED_BLOODMNIST_28,
    SCENARIO_ORDER,
    TRAINING_FORM_ORDER,
    last_epoch,
    mean_interval,
    method_palette,
    pareto_front,
    save_figure,
    scenarios_of,
    summarize,
    summary_table,
    with_dense_baseline,
    with_run_ids,
)
from helpers.plots.primary import (
    accuracy_latency_pareto,
    claims_verdicts,
    compaction_table,
    energy_statement,
    inference_energy,
    inference_latency,
    macs_ratio_table,
    peak_memory,
    reference_accuracy_table,
    speedup_vs_macs,
    status_note,
    test_metrics,
    training_curves,
    training_energy,
    training_form_statement,
    training_time,
)
from helpers.plots.protocol import (
    class_balance,
    configuration_table,
    dataset_table,
    scenario_table,
    split_table,
)
from helpers.plots.criteria import (
    CRITERION_LABELS,
    CRITERION_ORDER,
    CRITERION_PALETTE,
    criteria_accuracy,
    criteria_selection_time,
    criteria_table,
    criteria_vs_published,
    published_criteria_table,
)
from helpers.plots.granularity import (
    GRANULARITY_LABELS,
    GRANULARITY_ORDER,
    GRANULARITY_PALETTE,
    granularity_ordering_table,
    granularity_rank_agreement,
    granularity_table,
    granularity_tradeoffs,
)
from helpers.published import PUBLISHED_CRITERIA, PUBLISHED_GRANULARITY

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
