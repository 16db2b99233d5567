"""helpers.companion: the criteria and granularity studies planned, run end to end on a tiny grid, written to
the documented tidy tables, drawn, and driven by notebooks 05 / 06 whose defaults are the smoke profiles."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from helpers import companion, config, plots, results, runner, study
from helpers.config import ParamsError, expand_grid, load_params
from helpers.results import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
COMPANION_NOTEBOOKS = {"05_criteria.ipynb": "criteria_smoke", "06_granularity.ipynb": "granularity_smoke"}


def _tiny(out, kind: str, **changes):
    params = {
        "name": f"tiny_{kind}", "study_kind": kind, "datasets": ["digits"], "models": ["resnet18_mini"], "epochs": 1,
        "batch_size": 16, "lr": 1e-3, "train_subset": 48, "val_subset": 20, "test_subset": 30, "threads": 1,
        "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1]}, "finetune": {"epochs": 1, "batch_size": 16},
        "criteria": ["l1", "bn_slimming_l1"], "granularities": ["weight", "neuron", "structured"], "budgets": [0.5],
        "out": str(out),
        # in this process: a process per run is tested in test_executors (a companion study on the fork server)
        "executor": {"kind": "local", "process_per_run": False},
    }  # fmt: skip
    params.update(changes)
    return load_params(params)


@pytest.fixture(scope="module")
def criteria_study(tmp_path_factory):
    params = _tiny(tmp_path_factory.mktemp("criteria"), "criteria")
    return params, runner.run_study(params, progress=False)


@pytest.fixture(scope="module")
def granularity_study(tmp_path_factory):
    params = _tiny(tmp_path_factory.mktemp("granularity"), "granularity")
    return params, runner.run_study(params, progress=False)


# ------------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    "profile",
    ["criteria", "criteria_smoke", "criteria_bloodmnist", "granularity", "granularity_smoke", "granularity_bloodmnist"],
)
def test_companion_profiles_validate_and_plan_only_companion_runs(profile):
    params = load_params(ROOT / "params" / f"{profile}.yaml")
    assert params["study_kind"] == profile.split("_")[0]
    assert expand_grid(params) == []  # the primary grid is empty; helpers.companion plans these runs
    specs = companion.plan(params)
    seen = set()
    for spec in specs:  # every pruned run comes after the dense run it loads
        assert spec.method == "dense" or spec.dense_run_id in seen
        seen.add(spec.run_id)
    assert len({s.run_id for s in specs}) == len(specs)


def test_criteria_plan_trains_a_second_dense_model_only_for_slimming_with_the_penalty():
    params = load_params(ROOT / "params" / "criteria_smoke.yaml")
    specs = {s.run_id: s for s in companion.plan(params)}
    dense = [s for s in specs.values() if s.method == "dense"]
    assert sorted(s.params["slimming_lambda"] for s in dense) == [0.0, params["slimming_lambda"]]
    for spec in specs.values():
        if spec.method == "criteria":
            lam = specs[spec.dense_run_id].params["slimming_lambda"]
            assert (lam > 0) == (spec.params["criterion"] == "bn_slimming_l1")
            assert spec.scenario == "conv0.4_linear0"


def test_paper_protocols_are_the_defaults():
    p = load_params({"name": "x", "datasets": ["cifar10"], "models": ["resnet18"], "study_kind": "criteria"})
    assert p["filter_sparsity"] == 0.4
    assert p["finetune"]["lrs"] == [1e-3, 1e-4, 1e-5] and p["finetune"]["batch_size"] == 32
    assert p["finetune"]["epochs"] is None  # 10 epochs up to 10 classes, 20 above
    assert p["finetune"]["hflip"] and p["finetune"]["rotation_degrees"] > 0
    assert load_params({"name": "x", "datasets": ["digits"], "models": ["resnet18"]})["study_kind"] == "primary"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"study_kind": "criterion"}, "study_kind 'criterion'"),
        ({"criteria": ["l2"]}, "criterion 'l2'"),
        ({"granularities": ["filter"]}, "granularity 'filter'"),
        ({"budgets": [1.2]}, "budgets must be at most"),
        ({"budgets": [0.5, 0.5]}, "repeated"),
        ({"filter_sparsity": 0}, "filter_sparsity must be greater than 0"),
        ({"finetune": {"lrs": []}}, "finetune.lrs"),
        ({"finetune": {"epoch": 3}}, "did you mean 'epochs'"),
        ({"models": ["vgg16"], "criteria": ["bn_slimming"]}, "use vgg16_bn instead of vgg16"),
        ({"greedy_rescore": "every"}, "greedy_rescore 'every'"),
        ({"dense_lr_schedule": "step"}, "dense_lr_schedule 'step'"),
    ],
)
def test_bad_companion_values_name_the_key_and_the_fix(changes, needle):
    with pytest.raises(ParamsError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        _tiny("unused", "criteria", **changes)


# ------------------------------------------------------------------------------------------ the runs


def test_slimming_hooks_add_the_l1_subgradient_of_gamma():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(3, 1, 5, 5)
    model(x)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -1.0, 2.0, -0.1]))
    lam = 0.3
    model(x).sum().backward()
    plain = model[1].weight.grad.clone()
    model.zero_grad()
    handles = companion.slimming_hooks(model, lam)
    model(x).sum().backward()
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(model[1].weight.grad, plain + lam * torch.sign(model[1].weight.detach()))


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -1.0, 2.0, -0.1]))
    return model


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_slimming_penalty_moves_gamma_by_lr_times_lambda_whatever_the_optimizer(optimizer):
    from helpers.pruning import make_method
    from helpers.train import make_optimizer

    lam, lr = 0.01, 0.1
    x = torch.randn(3, 1, 5, 5)
    for with_penalty in (False, True):
        model = _bn_net()
        opt = make_optimizer(optimizer, model, lr=lr)
        method, handles = make_method("dense", None, seed=0), []
        if with_penalty:
            method, handles = companion.slimming_penalty(model, lam, opt, method)
        before = model[1].weight.detach().clone()
        (0.0 * model(x).sum()).backward()  # the loss leaves gamma alone: only the penalty moves it
        opt.step()
        method.after_step(model, opt)
        for handle in handles:
            handle.remove()
        moved = model[1].weight.detach() - before
        expected = -lr * lam * torch.sign(before) if with_penalty else torch.zeros(4)
        torch.testing.assert_close(moved, expected)


def test_the_subgradient_alone_under_adam_would_ignore_lambda():
    # why slimming_penalty does not hand Adam the sub-gradient: Adam's first step moves gamma by lr
    # whatever lambda is (its update is m / sqrt(v) = sign(grad)), so lambda would not set the strength
    for lam in (1e-4, 1.0):
        model = _bn_net()
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        handles = companion.slimming_hooks(model, lam)
        before = model[1].weight.detach().clone()
        (0.0 * model(torch.randn(3, 1, 5, 5)).sum()).backward()
        opt.step()
        for handle in handles:
            handle.remove()
        torch.testing.assert_close(model[1].weight.detach() - before, -0.1 * torch.sign(before), rtol=1e-3, atol=1e-6)


def test_dense_lr_schedules():
    assert [companion.dense_lr(0.1, e, 4) for e in range(4)] == [0.1] * 4
    cosine = [companion.dense_lr(0.1, e, 4, "cosine") for e in range(4)]
    assert cosine[0] == pytest.approx(0.1) and cosine[2] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    with pytest.raises(ValueError, match="'step'.*constant, cosine"):
        companion.dense_lr(0.1, 0, 4, "step")


def test_new_keys_keep_existing_run_ids_and_separate_greedy_each():
    base = {s.run_id for s in companion.plan(_tiny("unused", "criteria", criteria=["greedy_output_norm", "l1"]))}
    same = {s.run_id for s in companion.plan(_tiny("unused", "criteria", criteria=["greedy_output_norm", "l1"],
                                                   greedy_rescore="once", dense_lr_schedule="constant"))}  # fmt: skip
    assert same == base
    each = {s.run_id: s for s in companion.plan(_tiny("unused", "criteria", criteria=["greedy_output_norm", "l1"],
                                                      greedy_rescore="each"))}  # fmt: skip
    changed = {s.params["criterion"] or s.method for rid, s in each.items() if rid not in base}
    assert changed == {"greedy_output_norm"}
    cosine = {s.run_id for s in companion.plan(_tiny("unused", "criteria", criteria=["greedy_output_norm", "l1"],
                                                     dense_lr_schedule="cosine"))}  # fmt: skip
    assert not cosine & base


def test_criteria_study_writes_the_three_stages_per_criterion(criteria_study):
    params, study_dir = criteria_study
    tables = results.load_tables(study_dir)
    runs = tables["runs"]
    assert (runs["status"] == "completed").all() and len(runs) == 4  # two dense models, two criteria
    pruned = runs[runs["method"] == "criteria"].set_index("criterion")
    assert sorted(pruned.index) == ["bn_slimming_l1", "l1"]
    for stage in ("accuracy_before", "accuracy_pruned", "accuracy_finetuned"):
        assert pruned[stage].between(0, 1).all()
    pd.testing.assert_series_equal(pruned["accuracy_finetuned"], pruned["test_accuracy"], check_names=False)
    # ResNet18's 4800 filters lose 40 % per conv group (rounded per group)
    assert pruned["filters_removed"].div(pruned["filters_total"]).between(0.39, 0.41).all()
    dense = runs[runs["method"] == "dense"].set_index("run_id")
    for row in pruned.itertuples():
        assert row.accuracy_before == pytest.approx(dense.loc[row.reused_run_id, "test_accuracy"])
        assert (dense.loc[row.reused_run_id, "slimming_lambda"] > 0) == (row.Index == "bn_slimming_l1")
    finetune = tables["epochs"][tables["epochs"]["phase"] == "finetune"]
    assert set(finetune["run_id"]) == set(pruned["run_id"]) and (finetune["lr"] == 1e-3).all()
    inference = tables["inference"].set_index("run_id")
    assert set(inference["variant"]) == {"dense", "compacted"}
    for row in pruned.itertuples():  # the pruned model is smaller than the dense one it came from
        assert inference.loc[row.run_id, "model_size_mb"] < inference.loc[row.reused_run_id, "model_size_mb"]
        assert inference.loc[row.run_id, "macs"] == row.macs_after < row.macs_before


def test_granularity_study_measures_each_deployable_form(granularity_study):
    params, study_dir = granularity_study
    tables = results.load_tables(study_dir)
    runs = tables["runs"].set_index("granularity", drop=False)
    assert runs.loc["neuron", "status"] == "not_applicable"
    assert "no hidden linear layer" in runs.loc["neuron", "error"]
    for name in ("weight", "structured"):
        assert runs.loc[name, "status"] == "completed"
        assert runs.loc[name, "budget_achieved"] == pytest.approx(0.5, abs=runs.loc[name, "budget_tolerance"] + 1e-9)
    measured = tables["inference"].merge(tables["runs"][["run_id", "granularity"]], on="run_id")
    by = {("dense" if r.method == "dense" else r.granularity): r for r in measured.itertuples()}
    assert set(by) == {"dense", "weight", "structured"}  # nothing measured for a granularity that does not apply
    assert by["structured"].size_format == "compacted" and by["structured"].model_size_mb < 0.7 * by["dense"].model_size_mb
    assert by["structured"].macs < by["dense"].macs
    assert by["weight"].variant == "masked" and by["weight"].macs == by["dense"].macs  # dense kernels compute the zeros
    assert by["weight"].macs_nonzero < by["dense"].macs_nonzero


def test_a_rerun_skips_finished_runs(criteria_study):
    params, study_dir = criteria_study
    stamps = {p: p.stat().st_mtime_ns for p in (study_dir / "runs").glob("*/result.json")}
    runner.run_study(params, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (study_dir / "runs").glob("*/result.json")} == stamps
    assert not (study_dir / "runs" / ".work").exists()


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    params = _tiny(tmp_path, "granularity", granularities=["structured"],
                   executor={"kind": "local", "process_per_run": False})  # the patch lives in this process

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(companion, "apply_granularity", boom)
    runs = results.load_tables(runner.run_study(params, progress=False))["runs"].set_index("method")
    assert runs.loc["dense", "status"] == "completed"
    assert runs.loc["granularity", "status"] == "failed" and "simulated failure" in runs.loc["granularity", "error"]


@pytest.mark.parametrize("fixture", ["criteria_study", "granularity_study"])
def test_every_column_written_is_documented(fixture, request):
    _, study_dir = request.getfixturevalue(fixture)
    for table, frame in results.load_tables(study_dir).items():
        undocumented = set(frame.columns) - set(COLUMNS[table]) - set(results.ID_COLUMNS)
        assert not undocumented, (table, undocumented)
        assert list(frame.columns[: len(COLUMNS[table])]) == list(COLUMNS[table])


# ------------------------------------------------------------------------------------------ figures


def test_companion_figures_and_tables(criteria_study, granularity_study, tmp_path):
    crit = results.load_tables(criteria_study[1])
    fig = plots.criteria_accuracy(crit["runs"], tmp_path)
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 3]
    assert len(lines) == 2  # one line per criterion, three stages each
    assert {line.get_color() for line in lines} == {plots.CRITERION_PALETTE["l1"], plots.CRITERION_PALETTE["bn_slimming_l1"]}
    plots.criteria_selection_time(crit["runs"], tmp_path)
    table = plots.criteria_table(crit["runs"])
    assert list(table["criterion"]) == ["l1", "bn_slimming_l1"]
    published = plots.published_criteria_table(crit["runs"])
    digits = published[published["dataset"] == "digits"]  # ours only: the paper has no digits
    assert set(digits["criterion"]) >= {"l1", "bn_slimming_l1"} and digits["drop, published (pp)"].isna().all()
    cifar = published[published["dataset"].isin(["CIFAR-10", "CIFAR-100"])]
    assert cifar["source"].str.contains("Lajić, Peer, Emeršič 2025 \\(ROSUS 2025\\), Table [12]").all()
    assert cifar["drop, published (pp)"].notna().all()

    gran = results.load_tables(granularity_study[1])
    plots.granularity_tradeoffs(gran["runs"], gran["inference"], tmp_path)
    table = plots.granularity_table(gran["runs"], gran["inference"]).set_index("granularity")
    assert list(table.index) == ["dense", "weight", "neuron", "structured"]
    assert table.loc["neuron", "status"] == "not applicable"
    assert table.loc["structured", "size (MiB)"] < table.loc["dense", "size (MiB)"]
    for name in ("criteria_accuracy_stages", "criteria_selection_time", "granularity_tradeoffs"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_figures_refuse_tables_without_companion_runs():
    primary = pd.DataFrame({c: [] for c in (*plots.ID_COLUMNS, "status", "criterion")})
    with pytest.raises(ValueError, match="study_kind: criteria"):
        plots.criteria_accuracy(primary, "unused")


# ------------------------------------------------------------------------------------------ notebooks


def _parameters(nb) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec(cells[0].source, namespace)  # the cell is plain assignments
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


@pytest.mark.parametrize(("notebook", "profile"), COMPANION_NOTEBOOKS.items())
def test_companion_parameters_cell_is_the_smoke_profile(notebook, profile):
    defined = _parameters(nbformat.read(ROOT / "notebooks" / notebook, as_version=4))
    assert defined == yaml.safe_load((ROOT / "params" / f"{profile}.yaml").read_text())
    assert set(defined) <= set(config.KEYS)
    assert "study" not in defined  # the notebooks import helpers.study under that name


@pytest.mark.parametrize("notebook", COMPANION_NOTEBOOKS)
def test_companion_notebooks_are_stripped_and_thin(notebook):
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and "**Question.**" in nb.cells[0].source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "outputs must be stripped (nbstripout)"
            assert "def " not in cell.source and "class " not in cell.source, "logic belongs in helpers"
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "study.ensure_results(params)" in sources and "figures_dir" in sources


def test_each_study_kind_runs_its_own_notebooks():
    assert study.STUDY_NOTEBOOKS["primary"] == study.NOTEBOOKS
    assert study.STUDY_NOTEBOOKS["criteria"] == ("05_criteria.ipynb",)
    assert study.STUDY_NOTEBOOKS["granularity"] == ("06_granularity.ipynb",)
    assert set(study.STUDY_NOTEBOOKS) == set(config.STUDIES)
    for names in study.STUDY_NOTEBOOKS.values():
        assert all((ROOT / "notebooks" / name).is_file() for name in names)


def test_nbstripout_leaves_the_companion_notebooks_unchanged():
    import subprocess
    import sys

    hook = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"][0]
    paths = [str(ROOT / "notebooks" / name) for name in COMPANION_NOTEBOOKS]
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", *hook["args"], *paths],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
