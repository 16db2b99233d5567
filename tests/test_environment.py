"""The two install routes (pip via pyproject.toml, conda via environment.yml) list the same packages."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    name, _, rest = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?(.*)$", requirement.strip()).groups()
    return name.lower().replace("_", "-") + (_ or "") + rest.replace(" ", "")


def _pyproject_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return [_normalise(r) for r in tomllib.load(fh)["project"]["dependencies"]]


def _conda_pip_dependencies() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    return [_normalise(r) for r in pip_sections[0]]


def test_environment_yml_matches_pyproject():
    pyproject, conda = _pyproject_dependencies(), _conda_pip_dependencies()
    assert sorted(pyproject) == sorted(conda), (
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pyproject))}"
    )


def test_conda_environment_pins_python_311():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_exactly():
    deps = _pyproject_dependencies()
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert commands == ["make test"], f".ci/run must run only the README's test command, found {commands}"
    assert "make test" in readme


def test_committed_notebooks_have_no_outputs():
    import json

    tracked = subprocess.run(
        ["git", "ls-files", "notebooks/*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    for path in tracked:
        nb = json.loads((ROOT / path).read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path} has outputs: strip it"
