"""Pruning for the study: scenarios, the five methods, sparsity reports, compaction and model files.

The protocol follows Douzandeh Zenoozi et al., *A comparative study of neural network pruning strategies
for industrial applications* (Frontiers in Computer Science 2025). Modules: ``scenarios`` (what
fraction), ``structure`` (which layers, which residual groups), ``masks`` (which units, enforcement, ER
densities), ``methods`` (when), ``report`` (what was achieved), ``compact`` (physical removal with
torch-pruning, MACs), ``io`` (model files), ``hooked`` (the ``torch.nn.utils.prune`` form, whose
inference cost the study measures), ``sparse`` (CSR linear layers, chosen per layer by measurement) and
``filters`` (which layers read a group's channels, and removing chosen channels: the companion studies'
primitives).
"""

from .compact import CompactionMap, compact, compact_with_map, count_macs
from .filters import Consumer, find_consumers, mask_filters, prune_filters
from .hooked import load_hooked, save_hooked, to_hooked
from .io import load_model, save_model
from .masks import MaskSet, erk_allocation
from .methods import METHODS, REGROW, SET_ALLOCATIONS, CompactedTraining, PruningMethod, UnknownMethodError, make_method, method_class
from .report import SUMMARY_KEYS, sparsity_report, summarize_sparsity
from .scenarios import (
    SCENARIOS,
    InvalidSparsityError,
    Scenario,
    UnknownScenarioError,
    parse_scenario,
    units_removed,
)
from .sparse import LINEAR_FORMATS, SparseLinear, choose_linear_formats
from .structure import NoPrunableLayerError, find_structure

__all__ = [
    "Scenario",
    "SCENARIOS",
    "parse_scenario",
    "units_removed",
    "METHODS",
    "method_class",
    "REGROW",
    "SET_ALLOCATIONS",
    "make_method",
    "PruningMethod",
    "CompactedTraining",
    "MaskSet",
    "erk_allocation",
    "find_structure",
    "sparsity_report",
    "summarize_sparsity",
    "SUMMARY_KEYS",
    "compact",
    "compact_with_map",
    "CompactionMap",
    "count_macs",
    "Consumer",
    "find_consumers",
    "mask_filters",
    "prune_filters",
    "save_model",
    "load_model",
    "to_hooked",
    "save_hooked",
    "load_hooked",
    "SparseLinear",
    "choose_linear_formats",
    "LINEAR_FORMATS",
    "UnknownMethodError",
    "UnknownScenarioError",
    "InvalidSparsityError",
    "NoPrunableLayerError",
]
