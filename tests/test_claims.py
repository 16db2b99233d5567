"""helpers.claims: every claim of the paper decides synthetic tables whose verdicts are known."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from helpers.claims import CLAIM_COLUMNS, CLAIMS, VERDICTS, evaluate_claims, paired_interval

METHODS = ("pre_training", "in_training", "post_training", "set")
SCENARIOS = ("uniform", "mixed", "linear_only")
NOISE = (0.0, 0.004, -0.004, 0.002)  # per seed: small, so intervals are narrow


def tables(*, seeds=(0, 1, 2), acc=None, energy_source="zeus-gpu", energy=None, time=None, latency=None,
           models=("resnet18", "vgg16")):  # fmt: skip
    """Synthetic runs / inference tables. Each of ``acc``, ``energy``, ``time`` and ``latency`` maps
    (model, method, scenario, seed) to a value; the defaults make every claim hold."""
    acc = acc or (lambda mo, me, sc, s: {"none": 0.90, "linear_only": 0.90, "mixed": 0.85, "uniform": 0.60}[sc] + NOISE[s])
    energy = energy or (lambda mo, me, sc, s: (1.0 if mo == "resnet18" else 3.0) * (0.5 if me == "set" else 1.0) * (1 + NOISE[s]))
    time = time or (lambda mo, me, sc, s: 100.0 if me != "set" else 90.0)
    latency = latency or (lambda mo, me, sc, s, var: {"none": 10.0, "linear_only": 9.0, "mixed": 8.0, "uniform": 6.0}[sc] * (1 + NOISE[s]))
    runs, inference = [], []
    for model in models:
        for seed in seeds:
            grid = [("dense", "none")] + [(m, sc) for m in METHODS for sc in SCENARIOS]
            for method, scenario in grid:
                run_id = f"blood-{model}-{method}-{scenario}-s{seed}"
                runs.append({
                    "run_id": run_id, "dataset": "bloodmnist", "model": model, "method": method, "scenario": scenario,
                    "seed": seed, "status": "completed", "test_accuracy": acc(model, method, scenario, seed),
                    "train_time_s": time(model, method, scenario, seed),
                    "train_energy_j": energy(model, method, scenario, seed) if energy_source != "unavailable" else math.nan,
                    "train_energy_source": energy_source, "training_form": "masked",
                })  # fmt: skip
                for variant in ("masked", "compacted"):
                    inference.append({"run_id": run_id, "variant": variant, "batch_size": 1,
                                      "latency_ms_p50": latency(model, method, scenario, seed, variant)})
    return pd.DataFrame(runs), pd.DataFrame(inference)


def verdicts(claims: pd.DataFrame, claim_id: str) -> set[str]:
    return set(claims.loc[claims.claim_id == claim_id, "verdict"])


def test_every_claim_holds_where_the_tables_say_so() -> None:
    claims = evaluate_claims(*tables())
    assert list(claims.columns) == list(CLAIM_COLUMNS)
    assert set(claims.claim_id) == set(CLAIMS)
    assert set(claims.verdict) <= set(VERDICTS)
    for claim_id in CLAIMS:
        assert verdicts(claims, claim_id) == {"holds"}, claims[claims.claim_id == claim_id][["scope", "reason"]]
    assert (claims.reason.str.len() > 0).all()
    one = claims[(claims.claim_id == "2") & (claims.model == "vgg16") & (claims.scope == "set")].iloc[0]
    assert one.n == 3 and "paired t-interval over 3 seeds" in one.interval and one.ci_low <= one.value <= one.ci_high


def test_claims_that_the_tables_contradict_do_not_hold() -> None:
    runs, inference = tables(
        # 80 % and 50 % conv sparsity cost the same; linear_only loses 10 points; SET is better at 80 %
        acc=lambda mo, me, sc, s: {"none": 0.90, "linear_only": 0.80, "mixed": 0.70, "uniform": 0.70}[sc]
        + (0.05 if (me == "set" and sc == "uniform") else 0.0) + NOISE[s],
        energy=lambda mo, me, sc, s: (3.0 if mo == "resnet18" else 1.0) * (2.0 if me == "set" else 1.0) * (1 + NOISE[s]),
        time=lambda mo, me, sc, s: 100.0 if me != "set" else 150.0,
        # pruned models 10 ms slower than dense, and 80 % slower than 50 %
        latency=lambda mo, me, sc, s, var: {"none": 10.0, "linear_only": 20.0, "mixed": 20.0, "uniform": 25.0}[sc] + NOISE[s],
    )
    claims = evaluate_claims(runs, inference)
    for claim_id in CLAIMS:
        assert verdicts(claims, claim_id) == {"does not hold"}, claims[claims.claim_id == claim_id][["scope", "reason"]]


def test_noisy_seeds_are_inconclusive() -> None:
    swing = (0.06, -0.06, 0.0)
    runs, inference = tables(
        acc=lambda mo, me, sc, s: {"none": 0.90, "linear_only": 0.90 + swing[s], "mixed": 0.80 + swing[s],
                                   "uniform": 0.75}[sc],  # fmt: skip
    )
    claims = evaluate_claims(runs, inference)
    for claim_id in ("1", "2", "3"):
        assert verdicts(claims, claim_id) == {"inconclusive"}, claims[claims.claim_id == claim_id][["scope", "reason"]]


def test_energy_claims_are_untestable_without_a_meter_and_never_decided_on_an_estimate() -> None:
    claims = evaluate_claims(*tables(energy_source="unavailable"))
    for claim_id in ("4", "7"):
        rows = claims[claims.claim_id == claim_id]
        assert set(rows.verdict) == {"untestable here"}
        assert rows.reason.str.contains("not measured").all()
        assert rows.value.isna().all()
    estimated = evaluate_claims(*tables(energy_source="estimate-codecarbon-cpu"))
    rows = estimated[estimated.claim_id.isin(["4", "7"])]
    assert set(rows.verdict) == {"untestable here"} and rows.reason.str.contains("estimate").all()
    # the other claims are unaffected
    assert verdicts(estimated, "1") == {"holds"}


def test_one_seed_gives_labelled_point_values() -> None:
    claims = evaluate_claims(*tables(seeds=(0,)))
    rows = claims[claims.claim_id.isin(["1", "2", "3", "6"])]
    assert rows.interval.str.startswith("point value").all()
    assert rows.ci_low.isna().all() and rows.ci_high.isna().all()
    assert set(rows.verdict) == {"holds"} and rows.reason.str.contains("one seed").all()


def test_failed_and_diverged_runs_are_no_evidence_and_a_missing_inference_table_is_untestable() -> None:
    runs, _ = tables()
    runs.loc[runs.method == "set", "status"] = "diverged"
    claims = evaluate_claims(runs, None)
    assert verdicts(claims, "3") == {"untestable here"}
    assert verdicts(claims, "8a") == {"untestable here"} and verdicts(claims, "6") == {"untestable here"}


def test_set_runs_without_a_recorded_training_form_are_still_judged() -> None:
    runs, inference = tables()
    runs.loc[runs.method == "set", "training_form"] = math.nan  # an older results table, or a hand-made one
    claims = evaluate_claims(runs, inference)
    rows = claims[claims.claim_id == "5"]
    assert set(rows.verdict) == {"holds"} and rows.reason.str.contains("form not recorded").all()
    assert evaluate_claims(runs.drop(columns="training_form"), inference).query("claim_id == '5'").reason.str.contains(
        "set trained masked").all()


def test_paired_interval_matches_a_t_interval() -> None:
    stat = paired_interval([1.0, 2.0, 3.0])
    assert stat.value == 2.0 and stat.n == 3
    assert stat.low == pytest.approx(2.0 - 4.302652729911275 * 1.0 / math.sqrt(3))
    assert paired_interval([]).n == 0


EVIDENCE = Path(__file__).parents[1] / "docs" / "results"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in EVIDENCE.glob("*/claims.csv")))
def test_committed_verdicts_follow_from_the_committed_tables(folder):
    """A committed evidence folder's claims.csv is what helpers.claims decides from its own runs / inference tables."""
    root = EVIDENCE / folder
    committed = pd.read_csv(root / "claims.csv")
    decided = evaluate_claims(pd.read_csv(root / "runs.csv"), pd.read_csv(root / "inference.csv"))
    key = ["claim_id", "model", "scope"]
    merged = committed[key + ["verdict"]].astype(str).merge(decided[key + ["verdict"]].astype(str), on=key, how="outer",
                                                            suffixes=("_committed", "_decided"), indicator=True)  # fmt: skip
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    assert (merged["verdict_committed"] == merged["verdict_decided"]).all(), merged
