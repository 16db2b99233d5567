"""The two install routes (pip via pyproject.toml, conda via environment.yml) list the same packages and the
Pythons the README promises; the Makefile tries those Pythons, newest first; CI runs the README's command on
the oldest."""

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


# ------------------------------------------------------------------ the Pythons the README promises


def _readme_pythons() -> list[str]:
    """The minor versions in the README's "Both need only Python 3.11, 3.12 or 3.13 and `make`"."""
    text = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(r"need only Python (3\.\d+(?:(?:,| or|, or) 3\.\d+)*) and `make`", text)
    assert found, "README.md must say which Pythons it supports: 'Both need only Python 3.x, 3.y or 3.z and `make`'"
    return re.findall(r"3\.\d+", found.group(1))


def _minors_allowed(specifier: str) -> list[str]:
    """The 3.x minor versions (x < 30) that a PEP 440 specifier admits, judged at their first and a late patch."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(specifier)
    return [f"3.{m}" for m in range(30) if spec.contains(f"3.{m}.0") or spec.contains(f"3.{m}.99")]


def _conda_python_spec() -> str:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python\b(?!-)", d)]
    assert len(specs) == 1, f"environment.yml needs exactly one python line, found {specs}"
    spec = specs[0][len("python") :].replace(" ", "")
    if re.fullmatch(r"=?\d+(\.\d+)*(\.\*)?", spec):  # conda's python=3.11 (or python 3.11) means 3.11.*
        return "==" + spec.lstrip("=").removesuffix(".*") + ".*"
    return spec


def test_readme_promises_consecutive_pythons():
    promised = _readme_pythons()
    minors = [int(v.split(".")[1]) for v in promised]
    assert minors == list(range(minors[0], minors[-1] + 1)) and len(minors) >= 1, promised


def test_requires_python_is_what_the_readme_promises():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    requires = project["requires-python"]
    assert _minors_allowed(requires) == _readme_pythons(), (
        f"pyproject.toml requires-python {requires!r} admits {_minors_allowed(requires)}, "
        f"the README promises {_readme_pythons()}"
    )
    versioned = r"Programming Language :: Python :: 3\.\d+"
    classified = [c.rsplit(" :: ", 1)[1] for c in project.get("classifiers", []) if re.fullmatch(versioned, c)]
    assert classified == _readme_pythons(), f"classifiers say {classified}, the README {_readme_pythons()}"


def test_conda_python_is_what_the_readme_promises():
    spec = _conda_python_spec()
    assert _minors_allowed(spec) == _readme_pythons(), (
        f"environment.yml's python {spec!r} admits {_minors_allowed(spec)}, the README promises {_readme_pythons()}"
    )


def test_makefile_tries_the_promised_pythons_newest_first():
    found = re.search(r"^SUPPORTED_PYTHONS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "Makefile: SUPPORTED_PYTHONS := (newest first) is missing"
    assert found.group(1).split() == sorted(_readme_pythons(), key=lambda v: -int(v.split(".")[1]))


def test_drift_checks_can_fail():
    """The checks above really compare: a narrower or wider range is told apart from the promise."""
    assert _minors_allowed(">=3.11,<3.12") == ["3.11"]
    assert _minors_allowed(">=3.11") != _readme_pythons()
    assert _minors_allowed(">=3.11,<3.14") == ["3.11", "3.12", "3.13"]


def _fake_bin(tmp_path: Path, working: list[str], broken: list[str]) -> Path:
    """A PATH folder where ``pythonX.Y`` of ``working`` run this interpreter and ``broken`` fail like a pyenv shim."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for version in working:
        (bin_dir / f"python{version}").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for version in broken:
        shim = f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n"
        (bin_dir / f"python{version}").write_text(shim)
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


def _which_python(bin_dir: Path, **env: str) -> str:
    import os
    import shutil

    make = shutil.which("make")
    if make is None:
        import pytest

        pytest.skip("make is not installed")
    environ = {k: v for k, v in os.environ.items() if k not in {"PYTHON", "MAKEFLAGS", "MFLAGS"}}
    environ.update(PATH=f"{bin_dir}:/usr/bin:/bin", **env)
    # /usr/bin may hold a Debian python3.x: the fake folder comes first, so the check names only versions
    # the fake folder decides (3.13 and 3.12 here); 3.11 may be found in either.
    done = subprocess.run(
        [make, "-s", "--no-print-directory", "-C", str(ROOT), "which-python", "VENV=/nonexistent-venv"],
        env=environ, capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout.splitlines()[0]


def test_make_picks_the_newest_python_that_runs(tmp_path):
    line = _which_python(_fake_bin(tmp_path, working=["3.12"], broken=["3.13"]))
    assert line.startswith("PYTHON=python3.12 (newest of"), line


def test_make_python_override(tmp_path):
    line = _which_python(_fake_bin(tmp_path, working=["3.13", "3.12"], broken=[]), PYTHON="python3.12")
    assert line.startswith("PYTHON=python3.12 (set by PYTHON)"), line


def test_torch_is_pinned_exactly():
    deps = _pyproject_dependencies()
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    commands = [line for line in lines if not line.startswith(("set ", "cd ", "export "))]
    assert commands == ["make test"], f".ci/run must run only the README's test command, found {commands}"
    assert "make test" in readme


def test_ci_stays_on_the_oldest_supported_python():
    ci = (ROOT / ".ci" / "run").read_text()
    exports = re.findall(r"^\s*export\s+(\w+)=(\S+)\s*$", ci, re.M)
    oldest = f"python{_readme_pythons()[0]}"
    assert exports == [("PYTHON", oldest)], f".ci/run must export only PYTHON={oldest}, found {exports}"


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
