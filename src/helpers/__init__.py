"""pruning-study: the library behind a reproducible study of CNN pruning strategies.

Modules and subpackages, one job each, roughly in the order data flows:

- ``helpers.__main__``: the command line, ``python -m helpers {train,study} PARAMS.yaml``.
- ``helpers.study``: runs the study's notebooks with Papermill and gathers them into one HTML report.
- ``helpers.config``: loads, validates and overrides study parameters, and expands the grid.
- ``helpers.runner``: plans and runs the primary study's grid (idempotent, resumable) and collects the tables.
- ``helpers.executors``: where runs execute: in this process or on a Dask cluster.
- ``helpers.companion``: plans and runs the two companion studies (criteria, granularity).
- ``helpers.criteria``: filter-selection criteria and the criteria study's protocol (after Lajić et al. 2025).
- ``helpers.granularity``: pruning granularities at matched budgets (after Gurram et al. 2025).
- ``helpers.train``: the training loop: ``train_one_epoch``, ``evaluate`` and a resumable ``fit``.
- ``helpers.measure``: energy windows, peak memory, classification metrics, CPU inference benchmarks.
- ``helpers.pruning``: scenarios, the pruning methods, filter primitives, sparsity reports, compaction, model files.
- ``helpers.data``: every dataset of the study as uint8 splits (``registry``, ``splits``, ``fetch``,
  ``decode`` and one reader per dataset).
- ``helpers.transforms``: tensor transforms: statistics, normalisation, resizing, augmentation, streaming.
- ``helpers.models``: the CNNs of the study, built from torchvision (VGG16 / VGG16-BN / ResNet18 / ResNet50).
- ``helpers.files``: atomic writes and safe loads of the study's files.
- ``helpers.results``: the tidy result tables rebuilt from the run folders, and their columns.
- ``helpers.claims``: the primary paper's findings, checked against a study's result tables.
- ``helpers.published``: published figures that the notebooks show beside the study's own, with sources.
- ``helpers.plots``: figures and tables from the result tables only (``style``, then ``primary``,
  ``protocol``, ``criteria``, ``granularity``).
"""

__version__ = "0.1.0"
