"""Run the study's notebooks with Papermill and gather them into one HTML report.

``python -m helpers study PARAMS.yaml`` ends in :func:`run_notebooks`: the notebooks of the study's kind
(:mod:`helpers.studies`) run in order with the study file's parameters injected (Papermill's ``parameters``
cell), the executed copies go to ``<study>/notebooks/`` and ``<study>/report.html`` gathers them with a
table of contents. A failing notebook raises :class:`NotebookExecutionError`; finished runs stay on disk,
so rerunning the command resumes.

The notebooks call :func:`notebook_params` (the parameters among their variables) and
:func:`ensure_results` (validate, produce missing runs, load the tables). They run from ``notebooks/``,
so a relative ``out`` is read against the repository root (:func:`repo_root`), as on the command line.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import html
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from helpers import config, results, runner, studies
from helpers.files import atomic_write

with warnings.catch_warnings():  # tqdm.auto warns in a Jupyter kernel without ipywidgets; bars are off there anyway
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

__all__ = [
    "NOTEBOOKS",
    "STUDY_NOTEBOOKS",
    "NotebookExecutionError",
    "repo_root",
    "notebooks_dir",
    "notebook_params",
    "resolve_out",
    "ensure_results",
    "run_notebooks",
    "build_report",
]

#: The notebooks of each kind of study (the study file's ``study_kind`` key), as the kinds name them.
STUDY_NOTEBOOKS: dict[str, tuple[str, ...]] = {name: k.notebooks for name, k in studies.KINDS.items()}
#: The paper notebooks, in the order the study runs them.
NOTEBOOKS: tuple[str, ...] = STUDY_NOTEBOOKS[studies.DEFAULT_KIND]


class NotebookExecutionError(RuntimeError):
    """A notebook of the study raised; the message names the notebook, the cell and the error. Attributes:
    ``notebook`` (file name), ``output_path`` (the executed notebook, saved with the error) and
    ``cell_index`` (of the failing cell in it; None if no cell ran)."""

    def __init__(self, message: str, *, notebook: str, output_path: Path, cell_index: int | None = None):
        super().__init__(message)
        self.notebook = notebook
        self.output_path = output_path
        self.cell_index = cell_index


def repo_root() -> Path:
    """The nearest folder above this package (or the working directory) holding both ``pyproject.toml``
    and ``notebooks/``; FileNotFoundError when neither lies in a checkout."""
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
                return folder
    raise FileNotFoundError(
        f"no pruning-study checkout (a folder with pyproject.toml and notebooks/) above {starts[0]} or {starts[1]}; "
        "run from the repository or install it with pip install -e ."
    )


def notebooks_dir() -> Path:
    """``<repo>/notebooks``: where the paper notebooks live."""
    return repo_root() / "notebooks"


def notebook_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the study parameters (keys of ``helpers.config.KEYS``) among a notebook's variables
    ``namespace`` (``globals()`` after the parameters cell and Papermill's), ready for :func:`ensure_results`.
    A variable whose name is close to a key is ignored with a warning."""
    keys = tuple(config.KEYS)
    for name, value in namespace.items():
        # A misspelt papermill parameter (-p epoch 3) would otherwise be silently ignored.
        if name in keys or name.startswith("_") or not isinstance(value, (str, int, float, bool, list, dict)):
            continue
        close = difflib.get_close_matches(name, keys, n=1, cutoff=0.8)
        if close:
            warnings.warn(
                f"notebook variable {name!r} is not a study parameter and is ignored; did you mean {close[0]!r}?",
                stacklevel=2,
            )
    return {key: copy.deepcopy(namespace[key]) for key in keys if key in namespace}


def resolve_out(params: Mapping[str, Any], root: Path | None = None) -> dict[str, Any]:
    """``params`` with a relative ``out`` made absolute against the repository root (default ``outputs``).

    Notebooks run from ``notebooks/`` and the command line from anywhere; both must find the same study folder.
    """
    resolved = dict(params)
    out = Path(os.path.expanduser(str(resolved.get("out") or "outputs")))
    if not out.is_absolute():
        out = (root or repo_root()) / out
    resolved["out"] = str(out)
    return resolved


def ensure_results(params: Mapping[str, Any], *, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """Validate ``params`` (a relative ``out`` is read against the repository root), produce any missing run
    (:func:`helpers.runner.run_study` skips finished ones, so every notebook can call this and run on its
    own) and load the results tables; ``progress`` shows the runner's progress bar.

    Returns:
        ``(study_dir, tables)`` with ``tables`` the ``runs``, ``epochs`` and ``inference`` DataFrames
        (``helpers.results.load_tables``; id columns joined in).

    Raises:
        helpers.config.ParamsError: parameters that cannot be run (the message names the key and the fix).
    """
    validated = config.load_params(resolve_out(params))
    study_dir = Path(runner.run_study(validated, progress=progress))
    return study_dir, results.load_tables(study_dir)


# --------------------------------------------------------------------------------------------- running


def _plain(value: Any) -> Any:
    """Parameters as YAML-like plain data (Papermill writes them into the notebook as Python literals)."""
    if hasattr(value, "to_dict") and not isinstance(value, Mapping):
        value = value.to_dict()  # helpers.config.StudyParams
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()
    return ""


def run_notebooks(
    params: Mapping[str, Any],
    study_dir: str | os.PathLike,
    notebooks: Sequence[str | os.PathLike] | None = None,
    progress: bool = True,
    *,
    exclude_input: bool = False,
    timeout: int | None = None,
) -> Path:
    """Execute the study's notebooks in order with ``params`` and write ``<study_dir>/report.html``.

    Args:
        params: the study's parameters (a dict or ``StudyParams``), each injected into every notebook, with
            ``out`` set so that the notebooks find ``study_dir``.
        study_dir: the study folder (``<out>/<name>``); executed notebooks go to ``<study_dir>/notebooks/``.
        notebooks: names in ``notebooks/`` or paths; default the study kind's (:data:`STUDY_NOTEBOOKS`).
        progress: show a progress bar over notebooks and cells.
        exclude_input: leave the code cells' source out of the report (outputs and markdown stay).
        timeout: seconds a single cell may run; None for no limit.

    Returns:
        The report's path.

    Raises:
        NotebookExecutionError: a notebook raised (the report is still written with what ran, the executed
            notebook keeps the error, no finished run is lost); rerun the command to resume.
        FileNotFoundError: a notebook that does not exist.
    """
    import papermill  # heavy (nbclient, jupyter): only when notebooks run
    from papermill.exceptions import PapermillExecutionError  # with papermill, for the same reason

    study_dir = Path(study_dir).resolve()
    values = _plain(params)
    if values.get("name") == study_dir.name:
        values["out"] = str(study_dir.parent)
    if notebooks is None:
        kind = values.get("study_kind") or studies.DEFAULT_KIND
        if kind not in STUDY_NOTEBOOKS:
            raise ValueError(f"unknown study_kind {kind!r}; expected one of {', '.join(STUDY_NOTEBOOKS)}")
        notebooks = STUDY_NOTEBOOKS[kind]
    sources = _notebook_paths(notebooks)
    executed_dir = study_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    executed: list[Path] = []
    status: dict[str, str] = {}
    # Every key goes to every notebook (notebook_params reads the undeclared ones): papermill's "Passed
    # unknown parameter" warnings (about 20 per notebook) are expected, so they are dropped.
    logging.getLogger("papermill").addFilter(_drop_unknown_parameter_warning)  # addFilter skips a filter already added
    bar = tqdm(sources, desc="notebooks", unit="notebook", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.name)
        output = executed_dir / source.name
        executed.append(output)
        try:
            papermill.execute_notebook(
                str(source), str(output), parameters=values, kernel_name="python3", cwd=str(source.parent),
                progress_bar={"leave": False} if progress else False, execution_timeout=timeout,
            )
        except Exception as err:  # also a kernel that could not start, died, timed out: still name the notebook
            status[source.name] = "failed"
            _report_partial(executed, sources, status, study_dir, exclude_input)
            if isinstance(err, PapermillExecutionError):
                message = (
                    f"notebook {source.name} failed in cell {err.cell_index} (execution count {err.exec_count}: "
                    f"{_first_line(err.source)!r}) with {err.ename}: {err.evalue}. The executed notebook with the "
                    f"traceback is {output}; finished runs are kept under {study_dir / 'runs'}, so rerunning the "
                    "same command resumes."
                )
                raise NotebookExecutionError(message, notebook=source.name, output_path=output,
                                             cell_index=err.cell_index) from None
            raise NotebookExecutionError(
                f"notebook {source.name} could not be executed: {type(err).__name__}: {err}. "
                f"Partial output (if any) is in {output}.",
                notebook=source.name, output_path=output,
            ) from err
        status[source.name] = "ok"
    bar.close()
    return build_report(executed, study_dir / "report.html", title=f"Study {study_dir.name}",
                        status=status, exclude_input=exclude_input)


def _drop_unknown_parameter_warning(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Passed unknown parameter")


def _report_partial(executed, sources, status, study_dir, exclude_input) -> None:
    for source in sources:
        status.setdefault(source.name, "not run")
    build_report([p for p in executed if p.is_file()], study_dir / "report.html", title=f"Study {study_dir.name}",
                 status=status, exclude_input=exclude_input)


def _notebook_paths(notebooks: Sequence[str | os.PathLike] | None) -> list[Path]:
    folder = notebooks_dir()
    paths = []
    for item in notebooks if notebooks is not None else NOTEBOOKS:
        path = Path(item)
        if not path.is_absolute() and not path.is_file():
            path = folder / path
        if not path.is_file():
            raise FileNotFoundError(
                f"notebook {item} not found (looked in {folder}); expected one of {', '.join(NOTEBOOKS)} or a path"
            )
        paths.append(path.resolve())
    return paths


def build_report(
    notebooks: Sequence[str | os.PathLike],
    report_path: str | os.PathLike,
    *,
    title: str = "Study report",
    status: Mapping[str, str] | None = None,
    exclude_input: bool = False,
) -> Path:
    """Gather executed notebooks into one self-contained HTML page (nbconvert's ``HTMLExporter``, figures
    embedded) with a table of contents, each notebook under its own anchored heading.

    Args:
        notebooks: executed notebooks, in order.
        report_path: the HTML file to write (and return).
        title: the page's heading.
        status: notebook file name -> ``ok`` / ``failed`` / ``not run``, shown in the table of contents.
        exclude_input: leave code cells' source out (outputs and markdown stay).
    """
    import nbformat  # heavy (nbconvert, jinja2): only when a report is built
    from nbconvert import HTMLExporter  # heavy, as nbformat

    report_path = Path(report_path)
    status = dict(status or {})
    paths = [Path(p) for p in notebooks]
    toc = [f"# {html.escape(title)}", "", "| notebook | status |", "|---|---|"]
    for path in paths:
        toc.append(f"| [{path.stem}](#nb-{path.stem}) | {status.get(path.name, 'ok')} |")
    for name, state in status.items():
        if name not in {p.name for p in paths}:
            toc.append(f"| {Path(name).stem} | {state} |")
    merged = nbformat.v4.new_notebook()
    merged.cells.append(nbformat.v4.new_markdown_cell("\n".join(toc)))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not merged.metadata and nb.metadata:
            merged.metadata = copy.deepcopy(nb.metadata)
            merged.metadata.pop("papermill", None)
        merged.cells.append(nbformat.v4.new_markdown_cell(
            f'<a id="nb-{path.stem}"></a>\n\n---\n\n*Notebook `{path.name}` ({status.get(path.name, "ok")}), '
            f"executed copy: `{path}`*"
        ))
        merged.cells.extend(nb.cells)
    for i, cell in enumerate(merged.cells):
        cell["id"] = f"cell-{i}"  # unique ids across the merged notebooks
    quiet = logging.getLogger("helpers.study.report")
    quiet.setLevel(logging.ERROR)  # nbconvert warns about figures without alt text, once per report
    exporter = HTMLExporter(exclude_input=exclude_input, log=quiet)
    body, _ = exporter.from_notebook_node(merged)
    atomic_write(report_path, lambda fh: fh.write(body.encode("utf-8")), mode="wb")
    return report_path
