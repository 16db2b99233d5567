"""Figures and tables of the study's notebooks, drawn with seaborn / matplotlib from the tidy results tables.

Every figure function takes a tidy table (one row per observation, the run's id columns
``dataset, model, method, scenario, seed`` joined in, see ``helpers.results``) and a figures folder, saves the
figure there as PNG and SVG under a name that says what it shows, and returns the ``Figure`` (or a dict, one per
scenario). A figure mirroring one of the primary study (:data:`helpers.published.DOUZANDEH_ZENOOZI_2025`)
carries its number in the title and file name (``fig03_...``); the extensions say "extension" instead.

The package reads only result tables (and, for Figure 2, a study's parameters and its splits); it imports
nothing that trains or runs a study. Every public name of its modules (``style``: what all figures share;
``primary`` and ``protocol``: the primary study's; ``criteria``, ``granularity``) is importable from here.

Conventions of all figures: one colour per method (:data:`METHOD_PALETTE`); the dense baseline in every
scenario's figure; with several seeds a point or bar is the mean, its whiskers / band a 95 % Student-t
interval (:func:`mean_interval`); accuracy-like metrics (fractions in ``[0, 1]``) in percent. Energy is never
drawn as 0 when nothing was measured: a missing (NaN) energy is marked "n/a", every bar is hatched by its
``energy_source``, and with no measured energy no figure is drawn (``None`` or an empty dict is returned;
:func:`energy_statement` says so in words).
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
