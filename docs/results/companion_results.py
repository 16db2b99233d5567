"""Write ``RESULTS.md`` for a companion study folder (criteria or granularity) from its result tables.

    PYTHONPATH=src python docs/results/companion_results.py STUDY_DIR --command "..." --wall-time-s 989 \
        --notes docs/results/criteria_bloodmnist/notes.md > docs/results/criteria_bloodmnist/RESULTS.md

The header (command, wall time, machine, packages, commit) comes from the run folders' environment.json,
as for the primary study (``helpers.claims.results_markdown``); the tables are the notebooks' own
(``helpers.plots.criteria_table`` / ``published_criteria_table``, ``granularity_table`` /
``granularity_ordering_table`` and Kendall's tau); the notes are the hand-written reading.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from helpers import plots
from helpers.claims import provenance_lines
from helpers.results import load_tables


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "/")


def _table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def criteria_sections(runs: pd.DataFrame) -> list[str]:
    ours = plots.criteria_table(runs)
    published = plots.published_criteria_table(runs)
    return [
        "## Our runs",
        "",
        "Test accuracy of the dense model (*before*), right after one-shot pruning, and after fine-tuning.",
        "",
        _table(ours),
        "",
        "## Beside Lajić et al.",
        "",
        "The drop (before minus after fine-tuning, percentage points) is what carries over between training "
        "budgets and datasets; the published rows are Lajić et al.'s tables (`helpers.published.PUBLISHED_CRITERIA`).",
        "",
        _table(published.drop(columns=["source"]).assign(source=published["source"].str.replace(r" \(ROSUS 2025\)", "", regex=True))),
    ]


def latency_section(runs: pd.DataFrame, inference: pd.DataFrame, what: str) -> list[str]:
    """Median CPU latency per image at batch 1, size and MACs of each run's deployed model."""
    cols = ["run_id", "variant", "latency_ms_p50", "model_size_mb", "macs"]
    rows = inference[inference["batch_size"] == 1][cols].merge(runs[["run_id", "method", what, "slimming_lambda"]], on="run_id")
    rows[what] = rows[what].fillna("dense").where(rows["method"] != "dense", "dense (lambda " + rows["slimming_lambda"].astype(str) + ")")
    rows = rows.assign(macs=(rows["macs"] / 1e6).round(2), latency_ms_p50=rows["latency_ms_p50"].round(2),
                       model_size_mb=rows["model_size_mb"].round(1))
    rows = rows.rename(columns={"latency_ms_p50": "latency p50 (ms)", "model_size_mb": "size (MB)", "macs": "MACs (M)"})
    return ["", "## CPU inference (batch 1)", "", _table(rows[[what, "variant", "latency p50 (ms)", "size (MB)", "MACs (M)"]])]


def granularity_sections(runs: pd.DataFrame, inference: pd.DataFrame, figures: Path) -> list[str]:
    ours = plots.granularity_table(runs, inference)
    _, tau = plots.granularity_rank_agreement(runs, inference, figures)
    ordering = plots.granularity_ordering_table(runs, inference)
    lines = [
        "## Our runs",
        "",
        _table(ours),
        "",
        "## Beside Gurram et al.: the ordering only",
        "",
        "Gurram et al. name neither their model nor their dataset, so only the ordering of the granularities "
        "can be compared: rank 1 is the best (smallest size, lowest latency, highest accuracy).",
        "",
        _table(ordering),
        "",
        "Kendall's tau-b between the published ranks and ours, per case and measure (1: the same order, "
        "-1: reversed; with 4-5 granularities it moves in steps of 0.2-0.33):",
        "",
        _table(tau),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--command", required=True)
    parser.add_argument("--wall-time-s", type=float, default=None)
    parser.add_argument("--notes", type=Path, default=None, help="a markdown file appended as the reading")
    args = parser.parse_args()
    args.study = args.study.resolve()
    tables = load_tables(args.study)
    runs, inference = tables["runs"], tables["inference"]
    kind = str(runs["study_kind"].dropna().iloc[0])
    lines = provenance_lines(args.study, runs, command=args.command, wall_time_s=args.wall_time_s)
    if kind == "criteria":
        lines += criteria_sections(runs) + latency_section(runs, inference, "criterion")
    elif kind == "granularity":
        lines += granularity_sections(runs, inference, args.study / "figures")
    else:
        raise SystemExit(f"{args.study} is a {kind} study; primary studies use helpers.claims.results_markdown")
    if args.notes is not None:
        lines += ["", args.notes.read_text().strip()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
