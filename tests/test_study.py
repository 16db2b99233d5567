"""Tests of helpers.study (Papermill runner, report) and of the committed paper notebooks' structure."""

from __future__ import annotations

import logging

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from helpers import config, study

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [ROOT / "notebooks" / name for name in study.NOTEBOOKS]


def _parameters_cell(nb) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


def _write_notebook(path: Path, *sources: str, parameters: str = "value = 1") -> Path:
    cells = [nbformat.v4.new_markdown_cell("# A test notebook")]
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    cells.append(params)
    cells.extend(nbformat.v4.new_code_cell(s) for s in sources)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------------------------ the paper notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_the_smoke_profile(path):
    """The notebooks' defaults never drift from params/smoke.yaml (papermill -f injects every key of a file)."""
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {}
    exec(_parameters_cell(nb).source, namespace)  # the cell is plain assignments
    defined = {k: v for k, v in namespace.items() if not k.startswith("__")}
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    assert defined == smoke
    assert set(defined) <= set(config.KEYS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_stripped_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "**Question.**" in nb.cells[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs must be stripped (nbstripout)"
            assert "def " not in cell.source and "class " not in cell.source, "logic belongs in helpers"
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "study.ensure_results(params)" in sources  # the notebook produces its runs when they are missing
    assert "figures_dir" in sources


def test_nbstripout_from_the_pre_commit_config_leaves_the_notebooks_unchanged():
    hook = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"][0]
    assert hook["id"] == "nbstripout"
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", *hook["args"], *map(str, NOTEBOOKS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_paper_figure_is_drawn_by_a_notebook():
    sources = "\n".join(c.source for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells)
    for call in ("training_curves", 'metric="loss"', "training_time", "peak_memory", "test_metrics",
                 "reference_accuracy_table", "inference_latency", "speedup_vs_macs", "accuracy_latency_pareto",
                 "training_energy", "inference_energy", "energy_statement"):
        assert f"plots.{call}" in sources or call in sources, call


# ---------------------------------------------------------------------------------------------- helpers


def test_repo_root_and_out_resolution(tmp_path):
    assert study.repo_root() == ROOT
    assert study.notebooks_dir() == ROOT / "notebooks"
    assert study.resolve_out({"out": "outputs"})["out"] == str(ROOT / "outputs")
    assert study.resolve_out({})["out"] == str(ROOT / "outputs")
    assert study.resolve_out({"out": str(tmp_path)})["out"] == str(tmp_path)


def test_notebook_params_takes_only_params_keys_as_copies():
    inference = {"samples": 5}
    namespace = {"name": "x", "inference": inference, "In": [], "tables": {}, "plots": object()}
    got = study.notebook_params(namespace)
    assert got == {"name": "x", "inference": {"samples": 5}}
    got["inference"]["samples"] = 6
    assert inference["samples"] == 5


def test_notebook_params_warns_about_a_misspelt_parameter():
    with pytest.warns(UserWarning, match="did you mean 'epochs'"):
        assert study.notebook_params({"epoch": 3, "name": "x"}) == {"name": "x"}


def test_plain_turns_params_into_literals():
    params = config.load_params(ROOT / "params" / "smoke.yaml")
    plain = study._plain({"p": params, "path": Path("/a"), "t": (1, 2)})
    assert plain["path"] == "/a" and plain["t"] == [1, 2]
    assert plain["p"]["name"] == "smoke"


def test_ensure_results_rejects_bad_parameters_before_running():
    with pytest.raises(config.ParamsError, match="optimizer"):
        study.ensure_results({"name": "bad", "datasets": ["digits"], "models": ["resnet18"], "optimizer": "adamm"})


# ---------------------------------------------------------------------------------------------- running


def test_run_notebooks_injects_parameters_and_writes_the_report(tmp_path, caplog):
    first = _write_notebook(tmp_path / "a.ipynb", "print(f'value={value}, name={name}')")
    second = _write_notebook(
        tmp_path / "b.ipynb",
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from IPython.display import Image, display\nfig = plt.figure(); plt.plot([1, 2])\n"
        "fig.savefig('plot.png'); display(Image('plot.png'))",
    )
    study_dir = tmp_path / "out" / "demo"
    with caplog.at_level(logging.INFO, logger="papermill"):
        report = study.run_notebooks({"name": "demo", "value": 7}, study_dir, notebooks=[first, second], progress=False)
    assert report == study_dir.resolve() / "report.html"
    # `name` is not in the parameters cell: read on purpose (study.notebook_params), so papermill's warning about
    # it is dropped, while its other messages still pass
    messages = [r.getMessage() for r in caplog.records if r.name == "papermill"]
    assert messages and not [m for m in messages if "unknown parameter" in m], messages
    executed = nbformat.read(study_dir / "notebooks" / "a.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "value=7, name=demo" in text
    page = report.read_text()
    assert 'id="nb-a"' in page and 'id="nb-b"' in page and 'href="#nb-b"' in page  # table of contents
    assert "data:image/png;base64" in page  # figures embedded, one self-contained page
    assert "print(f&#39;value" in page or "print(f'value" in page or "value=7" in page
    hidden = study.build_report([study_dir / "notebooks" / "a.ipynb"], tmp_path / "r.html", exclude_input=True)
    assert "value=7, name=demo" in hidden.read_text() and "print(f" not in hidden.read_text()


def test_failing_notebook_names_notebook_and_cell_and_keeps_the_executed_copy(tmp_path):
    good = _write_notebook(tmp_path / "01_good.ipynb", "x = 2")
    bad = _write_notebook(tmp_path / "02_bad.ipynb", "y = 1", "raise ValueError(f'bad value {value}')")
    never = _write_notebook(tmp_path / "03_never.ipynb", "z = 3")
    study_dir = tmp_path / "study"
    (study_dir / "runs" / "finished-run").mkdir(parents=True)
    with pytest.raises(study.NotebookExecutionError) as info:
        study.run_notebooks({"value": 3}, study_dir, notebooks=[good, bad, never], progress=False)
    message = str(info.value)
    assert "02_bad.ipynb" in message
    assert "raise ValueError(f'bad value {value}')" in message  # the failing cell's first line
    assert "ValueError: bad value 3" in message
    assert f"cell {info.value.cell_index}" in message
    executed = nbformat.read(study_dir / "notebooks" / "02_bad.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].evalue == "bad value 3"
    assert not (study_dir / "notebooks" / "03_never.ipynb").exists()
    assert (study_dir / "runs" / "finished-run").is_dir()  # nothing finished is removed
    page = (study_dir / "report.html").read_text()
    assert "failed" in page and "not run" in page


def test_unknown_notebook_is_named():
    with pytest.raises(FileNotFoundError, match="05_missing.ipynb"):
        study.run_notebooks({}, Path("unused"), notebooks=["05_missing.ipynb"], progress=False)
