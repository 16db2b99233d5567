"""pruning-study: the library behind a reproducible study of CNN pruning strategies.

Modules and subpackages, one job each, roughly in the order data flows:

- ``helpers.__main__``: the command line, ``python -m helpers {train,study} PARAMS.yaml``.
- ``helpers.study``: runs the study's notebooks with Papermill and gathers them into one HTML report.
- ``helpers.runner``: runs a study of any kind: plan, the executor, the tables (idempotent, resumable).
- ``helpers.config``: loads, overrides and validates study parameters (shared keys; the kinds check theirs).
- ``helpers.studies``: the registry of the kinds of study (primary, criteria, granularity); the only place that knows them.
- ``helpers.primary``: the primary study: its keys, its grid of run specs and its ``run_one``.
- ``helpers.companion``: the two companion studies (criteria, granularity): their keys, plans and ``run_one``.
- ``helpers.executors``: where runs execute, handed the study's kind as the task: this process, own processes or Dask.
- ``helpers.lifecycle``: one run folder's life: work folder, checkpoint, resume, failure record, atomic finish.
- ``helpers.rundata``: a run's data prepared for its model and cached per process; the device and dataset checks.
- ``helpers.criteria``: filter-selection criteria and the criteria study's protocol (after Lajić et al. 2025).
- ``helpers.granularity``: pruning granularities at matched budgets (after Gurram et al. 2025).
- ``helpers.train``: the training loop: ``train_one_epoch``, ``evaluate`` and a resumable ``fit``.
- ``helpers.measure``: energy windows, peak memory, classification metrics, CPU inference benchmarks.
- ``helpers.pruning``: scenarios, the pruning methods, filter primitives, sparsity reports, compaction, model files.
- ``helpers.data``: every dataset of the study as uint8 splits (``registry``, ``splits``, ``fetch``,
  ``decode`` and one reader per dataset).
- ``helpers.transforms``: tensor transforms: statistics, normalisation, resizing, augmentation, streaming.
- ``helpers.models``: the CNNs of the study, built from torchvision (VGG16 / VGG16-BN / ResNet18 / ResNet50).
- ``helpers.params``: the orchestration's vocabulary: ``StudyParams``, ``RunSpec``, ``StudyKind``, ``ParamsError``, value checks.
- ``helpers.files``: atomic writes and safe loads of the study's files.
- ``helpers.results``: the tidy result tables rebuilt from the run folders, and their columns.
- ``helpers.claims``: the primary paper's findings, checked against a study's result tables.
- ``helpers.published``: published figures that the notebooks show beside the study's own, with sources.
- ``helpers.plots``: figures and tables from the result tables only (``style``, then ``primary``,
  ``protocol``, ``criteria``, ``granularity``).
"""

__version__ = "0.1.0"
