"""The primary paper's findings, as checks over a study's result tables.

Douzandeh Zenoozi et al. (Frontiers in Computer Science 2025) state qualitative findings; each becomes a
check over ``runs.csv`` and ``inference.csv`` (:mod:`helpers.results`) giving one row per claim x dataset x
model (x scope: a method, a scenario or an inference variant) with the statistic, its 95 % interval where
there are at least two seeds (Student's t over the differences paired with the same seed's reference run;
with one seed a point value, as the ``interval`` column says), and a verdict (:data:`VERDICTS`) with its reason.

How each wording is made testable (the thresholds are ours; the paper gives none):

1. "far more": the accuracy lost at 80 % conv sparsity exceeds the loss at 50 % by more than
   :data:`FAR_MORE` (5 points), per method.
2. "as accurate as dense": the paired difference lies within +-:data:`EQUIVALENCE` (2 points), per method.
3. SET's test accuracy is higher at 50 % than at 80 % conv sparsity.
4. SET's training energy is the lowest of the methods in the scenario (paired per seed against the
   lowest other method). Only measured energy decides (``zeus-*`` sources): estimates never do.
5. SET trains in at most dense's time in a "large majority" of its runs (the paper: 85 of 90): the
   fraction is >= :data:`LARGE_MAJORITY` (80 %) and its Clopper-Pearson 95 % interval lies above one
   half; it does not hold when the whole interval is below 80 %.
6. SET's CPU latency (median per image, :data:`LATENCY`, batch 1) is at most dense's + :data:`SAME_LATENCY_S` (0.002 s).
7. ResNet18's training energy is lower than VGG16's on the same data (paired per method, scenario, seed).
8. Pruned models infer faster than dense (8a) and 80 % faster than 50 % (8b), for the masked variant
   (as the paper measured) and the compacted one (our extension), as latency ratios.

A verdict with an interval: ``holds`` when the whole interval is on the claim's side of its threshold,
``does not hold`` when it is all on the other side, else ``inconclusive``; a point value decides alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.results import load_tables, write_csv_atomic

__all__ = [
    "provenance_lines",
    "CLAIMS",
    "CLAIM_COLUMNS",
    "VERDICTS",
    "FAR_MORE",
    "EQUIVALENCE",
    "LARGE_MAJORITY",
    "SAME_LATENCY_S",
    "MEASURED_ENERGY",
    "LATENCY",
    "evaluate_claims",
    "write_claims",
    "results_markdown",
    "paired_interval",
]

VERDICTS: tuple[str, ...] = ("holds", "does not hold", "inconclusive", "untestable here")
FAR_MORE = 0.05
EQUIVALENCE = 0.02
LARGE_MAJORITY = 0.8
SAME_LATENCY_S = 0.002
#: Energy sources that are measurements (helpers.results.ENERGY_SOURCES); nothing else decides a claim.
MEASURED_ENERGY: tuple[str, ...] = ("zeus-gpu", "zeus-cpu-rapl")
#: The latency the inference claims compare: the median per image, robust to the stalls of a shared
#: machine (one stalled forward pass moves a mean of 100 by several times; the paper reports a mean).
LATENCY = "latency_ms_p50"

CLAIM_COLUMNS: tuple[str, ...] = (
    "claim_id", "claim", "dataset", "model", "scope", "statistic", "value", "ci_low", "ci_high", "n",
    "interval", "verdict", "reason",
)  # fmt: skip

#: claim id -> the paper's finding, as worded in the issue that made it a check.
CLAIMS: dict[str, str] = {
    "1": "80 % conv sparsity (uniform) costs far more test accuracy than 50 % (mixed), for every method",
    "2": "linear_only is as accurate as dense (paired difference within +-2 points)",
    "3": "going from 80 % to 50 % conv sparsity improves SET's test accuracy",
    "4": "SET needs the least training energy of the methods in each scenario",
    "5": "SET's training time is at most dense's in the large majority of runs (paper: 85 of 90)",
    "6": "SET's CPU inference time equals dense's within 0.002 s per sample, or is lower (paper: 12 of 18 equal)",
    "7": "ResNet18 trains with less energy than VGG16 on the same data",
    "8a": "pruned models infer faster than dense on a CPU",
    "8b": "80 % conv sparsity infers faster than 50 % on a CPU",
}

_METHODS = ("pre_training", "in_training", "post_training", "set")


@dataclass(frozen=True)
class _Stat:
    value: float
    low: float
    high: float
    n: int
    interval: str


_NO_PAIRS = _Stat(math.nan, math.nan, math.nan, 0, "none")


def paired_interval(differences: Iterable[float], *, what: str = "seeds") -> _Stat:
    """Mean of paired differences with its 95 % Student-t interval (a point value below two pairs)."""
    d = np.asarray([x for x in differences if x is not None and math.isfinite(x)], dtype=float)
    if d.size == 0:
        return _NO_PAIRS
    mean = float(d.mean())
    if d.size < 2:
        return _Stat(mean, math.nan, math.nan, 1, "point value (one pair: no interval)")
    from scipy import stats  # here, not at the top: every run's process imports this module (about 1.5 s)

    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return _Stat(mean, mean - half, mean + half, int(d.size), f"95 % paired t-interval over {d.size} {what}")


def _side(stat: _Stat, threshold: float, above: bool) -> tuple[str, str]:
    """Verdict for 'the statistic is above (or below) ``threshold``'."""
    word = ">" if above else "<"
    if stat.n == 0:
        return "untestable here", "no pairs of runs to compare"
    if stat.n == 1:
        ok = stat.value > threshold if above else stat.value < threshold
        return ("holds" if ok else "does not hold"), f"point value {stat.value:.4g} {word if ok else 'not ' + word} {threshold:g} (one seed, no interval)"
    span = f"[{stat.low:.4g}, {stat.high:.4g}]"
    if above and stat.low > threshold or not above and stat.high < threshold:
        return "holds", f"the whole interval {span} is {word} {threshold:g}"
    if above and stat.high <= threshold or not above and stat.low >= threshold:
        return "does not hold", f"the whole interval {span} is {'<=' if above else '>='} {threshold:g}"
    return "inconclusive", f"the interval [{stat.low:.4g}, {stat.high:.4g}] contains {threshold:g}"


def _row(claim: str, dataset: str, model: str, scope: str, statistic: str, stat: _Stat, verdict: str,
         reason: str) -> dict:  # fmt: skip
    return {
        "claim_id": claim, "claim": CLAIMS[claim], "dataset": dataset, "model": model, "scope": scope,
        "statistic": statistic, "value": stat.value, "ci_low": stat.low, "ci_high": stat.high, "n": stat.n,
        "interval": stat.interval, "verdict": verdict, "reason": reason,
    }  # fmt: skip


def _by_seed(runs: pd.DataFrame, column: str, **where: str) -> dict[int, float]:
    sel = runs
    for key, value in where.items():
        sel = sel[sel[key] == value]
    return {int(s): float(v) for s, v in zip(sel["seed"], sel[column])}


def _paired(a: dict[int, float], b: dict[int, float], op: Callable[[float, float], float]) -> list[float]:
    return [op(a[s], b[s]) for s in sorted(set(a) & set(b))]


def _accuracy_claims(runs: pd.DataFrame, dataset: str, model: str, metric: str) -> list[dict]:
    rows = []
    dense = _by_seed(runs, metric, method="dense")
    for method in _METHODS:
        uniform = _by_seed(runs, metric, method=method, scenario="uniform")
        mixed = _by_seed(runs, metric, method=method, scenario="mixed")
        stat = paired_interval(_paired(mixed, uniform, lambda m, u: m - u))
        verdict, reason = _side(stat, FAR_MORE, above=True)
        rows.append(_row("1", dataset, model, method, f"{metric}: mixed - uniform (same seed)", stat, verdict,
                         f"'far more' read as > {FAR_MORE:g}; {reason}"))
        linear = _by_seed(runs, metric, method=method, scenario="linear_only")
        stat = paired_interval(_paired(linear, dense, lambda x, d: x - d))
        verdict, reason = _equivalent(stat, EQUIVALENCE)
        rows.append(_row("2", dataset, model, method, f"{metric}: linear_only - dense (same seed)", stat, verdict, reason))
    set_u = _by_seed(runs, metric, method="set", scenario="uniform")
    set_m = _by_seed(runs, metric, method="set", scenario="mixed")
    stat = paired_interval(_paired(set_m, set_u, lambda m, u: m - u))
    verdict, reason = _side(stat, 0.0, above=True)
    rows.append(_row("3", dataset, model, "set", f"{metric}: set mixed - set uniform (same seed)", stat, verdict, reason))
    return rows


def _equivalent(stat: _Stat, margin: float) -> tuple[str, str]:
    if stat.n == 0:
        return "untestable here", "no pairs of runs to compare"
    if stat.n == 1:
        ok = abs(stat.value) <= margin
        return ("holds" if ok else "does not hold"), (
            f"point value {stat.value:.4g} {'within' if ok else 'outside'} +-{margin:g} (one seed, no interval)"
        )
    if -margin <= stat.low and stat.high <= margin:
        return "holds", f"the interval [{stat.low:.4g}, {stat.high:.4g}] lies within +-{margin:g}"
    if stat.low > margin or stat.high < -margin:
        return "does not hold", f"the interval [{stat.low:.4g}, {stat.high:.4g}] lies outside +-{margin:g}"
    return "inconclusive", f"the interval [{stat.low:.4g}, {stat.high:.4g}] crosses +-{margin:g}"


def _energy_state(runs: pd.DataFrame) -> tuple[bool, str]:
    sources = set(runs["train_energy_source"].dropna().astype(str)) if "train_energy_source" in runs else set()
    measured = sources & set(MEASURED_ENERGY)
    if measured and runs.loc[runs["train_energy_source"].isin(MEASURED_ENERGY), "train_energy_j"].notna().any():
        return True, ", ".join(sorted(measured))
    if any(s.startswith("estimate") for s in sources):
        return False, (f"training energy was only estimated ({', '.join(sorted(sources))}); estimates never decide "
                       "a claim (they are reported separately in the energy notebook)")
    return False, "no energy meter on this machine (train_energy_source: unavailable): energy was not measured"


def _energy_claim(runs: pd.DataFrame, dataset: str, model: str) -> list[dict]:
    ok, why = _energy_state(runs)
    if not ok:
        return [_row("4", dataset, model, scenario, "train_energy_j: set - lowest other method", _NO_PAIRS,
                     "untestable here", why) for scenario in ("uniform", "mixed", "linear_only")]
    measured = runs[runs["train_energy_source"].isin(MEASURED_ENERGY)]
    rows = []
    for scenario in ("uniform", "mixed", "linear_only"):
        set_e = _by_seed(measured, "train_energy_j", method="set", scenario=scenario)
        others = [_by_seed(measured, "train_energy_j", method=m, scenario=scenario) for m in _METHODS if m != "set"]
        diffs = []
        for seed, value in sorted(set_e.items()):
            rivals = [o[seed] for o in others if seed in o]
            if rivals:
                diffs.append(value - min(rivals))
        stat = paired_interval(diffs)
        verdict, reason = _side(stat, 0.0, above=False)
        rows.append(_row("4", dataset, model, scenario, "train_energy_j: set - lowest other method (same seed)",
                         stat, verdict, f"energy from {why}; {reason}"))
    return rows


def _time_claim(runs: pd.DataFrame, dataset: str, model: str) -> dict:
    dense = _by_seed(runs, "train_time_s", method="dense")
    sets = runs[runs["method"] == "set"]
    flags = [float(t) <= dense[int(s)] for s, t in zip(sets["seed"], sets["train_time_s"]) if int(s) in dense]
    n, k = len(flags), int(sum(flags))
    if n == 0:
        return _row("5", dataset, model, "set", "fraction of set runs with train_time_s <= dense's", _NO_PAIRS,
                    "untestable here", "no set runs with a dense run of the same seed")
    from scipy import stats  # lazy, as in paired_interval: every run's process imports this module

    low = float(stats.beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    high = float(stats.beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    stat = _Stat(k / n, low, high, n, f"95 % Clopper-Pearson interval over {n} set runs ({k} at most dense's time)")
    recorded = sets["training_form"].dropna() if "training_form" in sets else pd.Series(["masked"])
    forms = ", ".join(sorted(set(recorded.astype(str)))) or "in a form not recorded"
    if k / n >= LARGE_MAJORITY and low > 0.5:
        verdict, reason = "holds", f"{k} of {n} runs (>= {LARGE_MAJORITY:g}) and the interval [{low:.3g}, {high:.3g}] is > 0.5"
    elif high < LARGE_MAJORITY:
        verdict, reason = "does not hold", f"the whole interval [{low:.3g}, {high:.3g}] is < {LARGE_MAJORITY:g}"
    elif n < 5:  # too few runs for an interval to exclude anything: the fraction decides, labelled
        verdict = "holds" if k / n >= LARGE_MAJORITY else "does not hold"
        reason = f"{k} of {n} runs (too few for the interval to decide; the fraction does)"
    else:
        verdict, reason = "inconclusive", f"{k} of {n} runs; the interval [{low:.3g}, {high:.3g}] cannot tell"
    return _row("5", dataset, model, "set", "fraction of set runs with train_time_s <= dense's", stat, verdict,
                f"'large majority' read as >= {LARGE_MAJORITY:g}; set trained {forms}; {reason}")


def _latency(inference: pd.DataFrame, runs: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Per run: mean latency in s per sample at batch size 1 of ``variant`` (dense runs: their masked row,
    the dense model itself)."""
    inf = inference[inference["batch_size"] == 1] if "batch_size" in inference else inference
    dense_ids = set(runs.loc[runs["method"] == "dense", "run_id"])
    wanted = np.where(inf["run_id"].isin(dense_ids), "masked", variant)
    lat = inf[inf["variant"] == wanted].groupby("run_id", as_index=False)[LATENCY].mean()
    merged = lat.merge(runs[["run_id", "method", "scenario", "seed"]], on="run_id")
    merged["latency_s"] = merged[LATENCY] / 1000.0
    return merged


def _inference_claims(runs: pd.DataFrame, inference: pd.DataFrame, dataset: str, model: str) -> list[dict]:
    rows = []
    if inference.empty:
        return rows
    masked = _latency(inference, runs, "masked")
    dense = _by_seed(masked, "latency_s", method="dense")
    for scenario in ("uniform", "mixed", "linear_only"):
        set_lat = _by_seed(masked, "latency_s", method="set", scenario=scenario)
        stat = paired_interval(_paired(set_lat, dense, lambda s, d: s - d))
        verdict, reason = _side(stat, SAME_LATENCY_S, above=False)
        rows.append(_row("6", dataset, model, scenario, "latency s/sample, masked variant: set - dense (same seed)",
                         stat, verdict, reason))
    for variant in ("masked", "compacted"):
        lat = masked if variant == "masked" else _latency(inference, runs, "compacted")
        dense = _by_seed(lat, "latency_s", method="dense")
        ratios, steps = [], []
        for method in _METHODS:
            uniform = _by_seed(lat, "latency_s", method=method, scenario="uniform")
            mixed = _by_seed(lat, "latency_s", method=method, scenario="mixed")
            ratios += _paired(uniform, dense, lambda p, d: p / d) + _paired(mixed, dense, lambda p, d: p / d)
            steps += _paired(uniform, mixed, lambda u, m: u / m)
        for claim, values, what in (("8a", ratios, "pruned / dense (uniform and mixed)"), ("8b", steps, "uniform / mixed")):
            stat = paired_interval(values, what="method x scenario x seed pairs" if claim == "8a" else "method x seed pairs")
            verdict, reason = _side(stat, 1.0, above=False)
            rows.append(_row(claim, dataset, model, variant, f"latency ratio {what}, {variant} variant", stat, verdict,
                             reason))
    return rows


def _model_energy_claim(runs: pd.DataFrame, dataset: str) -> dict:
    ok, why = _energy_state(runs)
    if not {"resnet18", "vgg16"} <= set(runs["model"]):
        return _row("7", dataset, "resnet18 vs vgg16", "all", "train_energy_j ratio", _NO_PAIRS, "untestable here",
                    "the study has not both resnet18 and vgg16 on this dataset")
    if not ok:
        return _row("7", dataset, "resnet18 vs vgg16", "all", "train_energy_j ratio resnet18 / vgg16", _NO_PAIRS,
                    "untestable here", why)
    measured = runs[runs["train_energy_source"].isin(MEASURED_ENERGY)]
    key = ["method", "scenario", "seed"]
    pairs = measured[measured["model"] == "resnet18"].merge(measured[measured["model"] == "vgg16"], on=key)
    stat = paired_interval(np.log(pairs["train_energy_j_x"] / pairs["train_energy_j_y"]), what="method x scenario x seed pairs")
    ratio = _Stat(math.exp(stat.value), math.exp(stat.low), math.exp(stat.high), stat.n, stat.interval + " (geometric)") \
        if stat.n else stat
    verdict, reason = _side(ratio, 1.0, above=False)
    return _row("7", dataset, "resnet18 vs vgg16", "all", "train_energy_j ratio resnet18 / vgg16 (same method, scenario, seed)",
                ratio, verdict, f"energy from {why}; {reason}")


def evaluate_claims(runs: pd.DataFrame, inference: pd.DataFrame | None = None, *, metric: str = "test_accuracy") -> pd.DataFrame:
    """Check every claim on a study's tables: one row per claim x dataset x model x scope, columns
    :data:`CLAIM_COLUMNS`. Only ``completed`` runs count (a diverged or failed run is no evidence); claims 6 and 8
    are untestable without ``inference``; ``metric`` is the accuracy claims 1-3 compare (``test_accuracy``, the
    final model, or ``test_accuracy_best``, the paper's Table 1 "best accuracy")."""
    runs = runs[runs["status"] == "completed"] if "status" in runs else runs
    inference = inference if inference is not None else pd.DataFrame(columns=["run_id", "variant", LATENCY])
    rows: list[dict] = []
    for dataset in sorted(runs["dataset"].unique()):
        data_runs = runs[runs["dataset"] == dataset]
        for model in sorted(data_runs["model"].unique()):
            sel = data_runs[data_runs["model"] == model]
            rows += _accuracy_claims(sel, dataset, model, metric)
            rows += _energy_claim(sel, dataset, model)
            rows.append(_time_claim(sel, dataset, model))
            inf = inference[inference["run_id"].isin(sel["run_id"])]
            found = _inference_claims(sel, inf, dataset, model)
            if not found:
                found = [_row(c, dataset, model, "all", "latency", _NO_PAIRS, "untestable here", "no inference table")
                         for c in ("6", "8a", "8b")]
            rows += found
        rows.append(_model_energy_claim(data_runs, dataset))
    table = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    return table.sort_values(["claim_id", "dataset", "model", "scope"], kind="stable").reset_index(drop=True)


def write_claims(study_dir: str | os.PathLike, tables: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Evaluate the claims on a study's tables (``runs``, ``inference``; read from ``<study_dir>/results/`` when
    not given), write them to ``<study_dir>/results/claims.csv`` (atomically) and return them."""
    study_dir = Path(study_dir)
    tables = tables if tables is not None else load_tables(study_dir)
    claims = evaluate_claims(tables["runs"], tables.get("inference"))
    write_csv_atomic(study_dir / "results" / "claims.csv", claims)
    return claims


def _mean_ci(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    if len(v) < 2:
        return f"{100 * v.mean():.1f}"
    stat = paired_interval(v)
    return f"{100 * stat.value:.1f} ± {100 * (stat.high - stat.value):.1f}"


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def provenance_lines(study_dir: str | os.PathLike, runs: pd.DataFrame, *, command: str,
                     wall_time_s: float | None) -> list[str]:
    """The head of a ``RESULTS.md``: title, command, wall time, run counts, machine, packages and commit
    (from the run folders' ``environment.json``), then a blank line."""
    study_dir = Path(study_dir)
    envs = sorted((study_dir / "runs").glob("*/environment.json"))
    env = json.loads(envs[0].read_text()) if envs else {}
    commits = sorted({json.loads(p.read_text()).get("git_commit") or "unknown" for p in envs})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    status = runs["status"].value_counts().to_dict()
    return [
        f"# Results: `{study_dir.name}`",
        "",
        f"- Command: `{command}`",
        f"- Wall time: {wall_time_s / 60:.1f} min ({wall_time_s:.0f} s)" if wall_time_s else "- Wall time: not measured",
        f"- Runs: {len(runs)} ({', '.join(f'{v} {k}' for k, v in status.items())})",
        f"- Machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, GPU: {env.get('gpu') or 'none'}; "
        f"Python {env.get('python', '?')}; {packages}",
        f"- Code: pruning-study commit {', '.join(c[:10] for c in commits)}",
        "",
    ]


def results_markdown(study_dir: str | os.PathLike, *, command: str, wall_time_s: float | None, notes: str = "") -> str:
    """``RESULTS.md`` for a study folder (read: its ``results/`` tables and a run's ``environment.json``): where
    and how it was made (``command``, in ``wall_time_s``; None: not measured), Table 1, cost, the claim verdicts,
    then ``notes``, the hand-written part: what differs from the paper and why, and what the verdicts mean."""
    study_dir = Path(study_dir)
    tables = load_tables(study_dir)
    runs, inference = tables["runs"], tables["inference"]
    claims_path = study_dir / "results" / "claims.csv"
    claims = pd.read_csv(claims_path) if claims_path.is_file() else evaluate_claims(runs, inference)
    done = runs[runs["status"] == "completed"]
    lines = [
        *provenance_lines(study_dir, runs, command=command, wall_time_s=wall_time_s),
        "## Table 1: test accuracy (%)",
        "",
        "Mean over seeds ± half-width of the 95 % t-interval (a single value where one seed ran). *Final*: the "
        "model after the last epoch; *best*: the model of the best-validation epoch (the paper's Table 1).",
        "",
    ]
    table = []
    for (model, method, scenario), group in done.groupby(["model", "method", "scenario"], sort=True):
        table.append({
            "model": model, "method": method, "scenario": scenario, "seeds": len(group),
            "final": _mean_ci(group["test_accuracy"]),
            "best": _mean_ci(group["test_accuracy_best"]) if "test_accuracy_best" in group else "–",
            "balanced (final)": _mean_ci(group["test_balanced_accuracy"]) if "test_balanced_accuracy" in group else "–",
            "train time (s)": f"{group['train_time_s'].mean():.0f}",
        })  # fmt: skip
    lines.append(_table(pd.DataFrame(table)))
    if "test_majority_accuracy" in done:
        majority = done.groupby("dataset")["test_majority_accuracy"].first()
        lines += ["", "Majority-class accuracy of the test split (the floor): "
                  + ", ".join(f"{d} {100 * v:.1f} %" for d, v in majority.items())]
    if not inference.empty:
        lat = inference[(inference["batch_size"] == 1) & inference["run_id"].isin(done["run_id"])]
        lat = lat.drop(columns=[c for c in ("model", "method", "scenario") if c in lat]).merge(
            done[["run_id", "model", "method", "scenario"]], on="run_id")
        pivot = lat.pivot_table(index=["model", "method", "scenario"], columns="variant", values=LATENCY,
                                aggfunc="mean").round(2).reset_index()
        macs = lat[lat["variant"] == "compacted"].groupby(["model", "method", "scenario"])["macs"].mean()
        dense_macs = lat[(lat["method"] == "dense") & (lat["variant"] == "masked")].groupby("model")["macs"].mean()
        pivot["MACs ratio (compacted / dense)"] = [
            f"{macs.get((m, me, sc), math.nan) / dense_macs.get(m, math.nan):.3f}" for m, me, sc in
            zip(pivot["model"], pivot["method"], pivot["scenario"])]  # fmt: skip
        lines += ["", "## CPU inference latency (median ms per image, batch 1)", "", _table(pivot)]
    lines += ["", "## The paper's claims", "",
              "Verdicts from `results/claims.csv` (`helpers.claims`; thresholds in its docstring).", ""]
    shown = claims.assign(
        value=claims["value"].map(lambda v: f"{v:.4g}" if pd.notna(v) else "–"),
        interval=[f"[{lo:.4g}, {hi:.4g}]" if pd.notna(lo) else ("point" if n == 1 else "–")
                  for lo, hi, n in zip(claims["ci_low"], claims["ci_high"], claims["n"])],
    )[["claim_id", "model", "scope", "statistic", "value", "interval", "verdict", "reason"]]
    lines.append(_table(shown))
    counts = claims.groupby("claim_id")["verdict"].value_counts().unstack(fill_value=0)
    lines += ["", "Verdicts per claim:", "", _table(counts.reset_index())]
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"
