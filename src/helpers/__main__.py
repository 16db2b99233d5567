"""Command line: ``python -m helpers {train,study} PARAMS.yaml [--out DIR] [--set key=value ...]``.

``train`` runs the study's grid (finished runs are skipped, interrupted ones resume) and writes the tables
under ``<out>/<name>/results/``; ``study`` then executes the study's notebooks (:mod:`helpers.study`).

Exit status: 0 when every run finished (``completed`` or ``diverged``), 1 when some run failed (the next
call retries it), a table could not be written or a notebook failed, 2 for invalid parameters (nothing
is written). Errors are one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import helpers.study  # looked up at call time (helpers.study.run_notebooks), so tests can stand in for it
from helpers import executors
from helpers.config import ParamsError, load_params
from helpers.files import WriteFailedError
from helpers.results import load_tables
from helpers.runner import run_study

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m helpers``."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Run the pruning study.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,study}")
    for name, help_text in (
        ("train", "run the grid of PARAMS and write the results tables"),
        ("study", "run the grid, then execute the study's notebooks with papermill"),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("params", help="study parameter file (YAML), e.g. params/smoke.yaml")
        cmd.add_argument("--out", default=None, help="output root (default: the file's `out`, else outputs)")
        cmd.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a parameter (YAML value; nested keys as inference.samples=10); repeatable",
        )  # fmt: skip
        cmd.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None, *, fork_server: bool = False) -> int:
    """Entry point for ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``fork_server``: fork the local executor's fork server from this process once the parameters are read
    (:func:`helpers.executors.prestart_fork_server`); only for a process that has run no torch operation.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        params = load_params(args.params, args.overrides)
        if args.out is not None:
            params = load_params({**params.to_dict(), "out": args.out})
        if fork_server:
            executors.prestart_fork_server(params["executor"])
        study_dir = run_study(params, progress=not args.quiet)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WriteFailedError as exc:  # a table could not be written (disk full, ...): one line, retry later
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        executors.discard_prestarted()  # unused (every run was already finished, or the grid failed to start)

    runs = load_tables(study_dir)["runs"]
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
    print(f"{len(runs)} runs ({summary}); tables in {study_dir / 'results'}")
    failed = int(counts.get("failed", 0))
    if args.command == "study":
        try:
            report = helpers.study.run_notebooks(params.to_dict(), study_dir, progress=not args.quiet)
        except helpers.study.NotebookExecutionError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        print(f"figures in {study_dir / 'figures'}")
        print(f"executed notebooks in {study_dir / 'notebooks'}")
        print(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(fork_server=True))
