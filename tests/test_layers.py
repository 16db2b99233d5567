"""The package's layering (pyproject.toml's [tool.importlinter] contracts) holds: `lint-imports` passes on
this checkout, and an upward import hidden inside a function would make it fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    command = [str(LINT_IMPORTS) if LINT_IMPORTS.is_file() else "lint-imports", "--config", str(ROOT / "pyproject.toml"),
               "--no-cache"]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_lint_imports_passes():
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lazy_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "helpers", tmp_path / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    lifecycle = tmp_path / "helpers" / "lifecycle.py"
    lifecycle.write_text(lifecycle.read_text() + "\n\ndef _sneaky():\n    from helpers import runner\n\n    return runner\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0 and "helpers.lifecycle -> helpers.runner" in result.stdout, result.stdout
