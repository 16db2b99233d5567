"""helpers.config: validation with one-line errors naming the problem, overrides, the grid and run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.config import DEFAULTS, KEYS, ParamsError, dense_twin, expand_grid, load_params

ROOT = Path(__file__).resolve().parents[1]

BASE = {"name": "t", "datasets": ["digits"], "models": ["resnet18"], "methods": ["in_training"], "scenarios": ["uniform"]}


def _error(params: dict, overrides=()) -> str:
    with pytest.raises(ParamsError) as info:
        load_params(params, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper", "bloodmnist_cpu"])
def test_profiles_validate(profile):
    params = load_params(ROOT / "params" / f"{profile}.yaml")
    assert params["name"] == profile
    assert set(params.to_dict()) == set(KEYS)


def test_paper_profile_encodes_the_protocol():
    p = load_params(ROOT / "params" / "paper.yaml")
    assert p["datasets"] == ["bloodmnist", "visa", "mvtec3d_cls", "mvtec3d_cls_small"]
    assert p["models"] == ["vgg16", "resnet18"]
    assert p["methods"] == ["pre_training", "in_training", "post_training", "set"]
    assert [s["name"] for s in p["scenarios"]] == ["uniform", "mixed", "linear_only"]
    assert (p["epochs"], p["batch_size"], p["lr"], p["optimizer"], p["device"]) == (50, 64, 1e-4, "adam", "cuda")
    assert p["seeds"] == [0, 1, 2]
    # the paper trained masked networks, and its SET differs from in-training only by the initialisation
    assert (p["training_form"], p["set_allocation"]) == ("masked", "scenario")
    assert {s.params["training_form"] for s in expand_grid(p)} == {"masked"}


def test_defaults_fill_in():
    p = load_params(BASE)
    assert p["epochs"] == DEFAULTS["epochs"] == 50
    assert p["inference"]["batch_sizes"] == [1]
    assert p["inference"]["threads"] == p["threads"] >= 1
    assert p["energy"] == {"estimate": False}
    assert p.study_dir == Path("outputs") / "t"


def test_unknown_key_names_it_and_the_closest_valid_key():
    message = _error({**BASE, "epohcs": 3})
    assert "'epohcs'" in message and "'epochs'" in message


def test_unknown_nested_key_names_the_closest():
    message = _error({**BASE, "inference": {"sample": 3}})
    assert "'sample'" in message and "'samples'" in message


def test_bad_scenario_names_value_and_accepted():
    message = _error({**BASE, "scenarios": ["mixd"]})
    assert "mixd" in message and "uniform" in message


def test_negative_epochs():
    message = _error({**BASE, "epochs": -1})
    assert "epochs" in message and "-1" in message


def test_missing_dataset_key():
    params = dict(BASE)
    del params["datasets"]
    assert "datasets" in _error(params)


def test_unknown_dataset_names_it():
    message = _error({**BASE, "datasets": ["digitz"]})
    assert "digitz" in message and "'digits'" in message


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("batch_size", "64", "batch_size"),
        ("lr", 0, "lr"),
        ("seeds", [0, 0], "seeds"),
        ("optimizer", "adm", "adam"),
        ("swap_fraction", 1.5, "swap_fraction"),
        ("device", "gpu", "cuda"),
        ("executor", "daks", "dask"),
        ("image_size", 16, "image_size"),
        ("methods", ["pruned"], "pruned"),
        ("models", ["vgg19"], "vgg19"),
        ("energy", {"estimate": "yes"}, "energy.estimate"),
    ],
)
def test_wrong_values_fail_naming_the_key(key, value, needle):
    assert needle in _error({**BASE, key: value})


def test_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(listing)


def test_overrides_parse_yaml_values_and_nested_keys():
    p = load_params(BASE, ["epochs=3", "methods=[set, pre_training]", "inference.samples=7", "lr=0.01"])
    assert p["epochs"] == 3 and p["methods"] == ["set", "pre_training"]
    assert p["inference"]["samples"] == 7 and p["lr"] == 0.01


def test_override_errors():
    assert "'epochs'" in _error(BASE, ["epohcs=3"])
    assert "key=value" in _error(BASE, ["epochs"])
    assert "'warmup'" in _error(BASE, ["inference.warmp=1"])


def test_custom_scenario_is_resolved():
    p = load_params({**BASE, "scenarios": ["mixed", {"conv": 0.3, "linear": 0.6}]})
    assert p["scenarios"] == [
        {"name": "mixed", "conv": 0.5, "linear": 0.8},
        {"name": "conv0.3_linear0.6", "conv": 0.3, "linear": 0.6},
    ]


def test_grid_has_one_dense_run_per_dataset_model_seed():
    p = load_params({**BASE, "models": ["resnet18", "vgg16"], "methods": ["pre_training", "post_training"],
                     "scenarios": ["uniform", "mixed"], "seeds": [0, 1]})  # fmt: skip
    specs = expand_grid(p)
    assert len(specs) == 2 * 2 * (1 + 2 * 2)
    assert len({s.run_id for s in specs}) == len(specs)
    dense = [s for s in specs if s.method == "dense"]
    assert len(dense) == 4 and all(s.scenario == "none" for s in dense)
    dense_ids = {s.run_id for s in dense}
    seen = set()
    for spec in specs:  # a dense run is planned before the post_training runs that reuse it
        if spec.method == "post_training":
            assert spec.dense_run_id in dense_ids and spec.dense_run_id in seen
            assert dense_twin(spec).run_id == spec.dense_run_id
        seen.add(spec.run_id)


def test_run_ids_are_stable_and_track_result_parameters():
    ids = [s.run_id for s in expand_grid(load_params(BASE))]
    assert ids == [s.run_id for s in expand_grid(load_params(BASE))]
    assert ids[1].startswith("digits-resnet18-in_training-uniform-s0-")
    # parameters that change results change the ids ...
    assert ids != [s.run_id for s in expand_grid(load_params({**BASE, "lr": 1e-3}))]
    # ... those that only change speed or place do not
    same = load_params({**BASE, "threads": 1, "inference": {"threads": load_params(BASE)["threads"]},
                        "out": "elsewhere", "eval_batch_size": 7, "keep_models": False,
                        "checkpoint_every_s": 300})
    assert ids == [s.run_id for s in expand_grid(same)]
    # the dense baseline does not depend on method-only parameters
    other = expand_grid(load_params({**BASE, "swap_fraction": 0.1}))
    assert other[0].run_id == ids[0] and other[1].run_id != ids[1]


def test_resolved_params_reload_to_the_same_grid(tmp_path):
    p = load_params(ROOT / "params" / "smoke.yaml")
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(p.to_dict()))
    again = load_params(path)
    assert [s.run_id for s in expand_grid(again)] == [s.run_id for s in expand_grid(p)]


def test_a_list_of_training_forms_runs_both_side_by_side_with_the_form_in_the_id():
    single = {s.run_id for s in expand_grid(load_params({**BASE, "training_form": "compacted"}))}
    both = expand_grid(load_params({**BASE, "scenarios": ["uniform", "linear_only"], "training_form": ["masked", "compacted"]}))
    pruned = [s for s in both if s.method != "dense"]
    # uniform trains both ways; linear_only removes no filter, so compacted is masked there: one run
    assert sorted((s.scenario, s.params["training_form"]) for s in pruned) == [
        ("linear_only", "masked"), ("uniform", "compacted"), ("uniform", "masked")]
    assert all(f"-{s.params['training_form']}-s0-" in s.run_id for s in pruned)
    assert len([s for s in both if s.method == "dense"]) == 1  # one dense baseline, its id unchanged
    # a single form (string or one-element list) keeps today's ids
    assert {s.run_id for s in expand_grid(load_params({**BASE, "training_form": ["compacted"]}))} == single
    assert "training_form 'compact'" in _error({**BASE, "training_form": ["masked", "compact"]})


def test_set_allocation_is_validated_and_enters_only_sets_run_ids():
    base = {**BASE, "methods": ["set", "in_training"]}
    ids = {s.method: s.run_id for s in expand_grid(load_params(base))}
    erk = {s.method: s.run_id for s in expand_grid(load_params({**base, "set_allocation": "erk"}))}
    assert load_params(base)["set_allocation"] == "scenario"
    assert erk["set"] != ids["set"] and erk["in_training"] == ids["in_training"] and erk["dense"] == ids["dense"]
    assert "set_allocation 'erx'" in _error({**base, "set_allocation": "erx"})


def test_model_options_give_each_model_its_own_budget_and_seeds():
    p = load_params({**BASE, "models": ["resnet18", "vgg16"], "methods": ["post_training"], "seeds": [0, 1],
                     "train_subset": 500, "model_options": {"vgg16": {"train_subset": 100, "seeds": [0], "epochs": 2}}})
    specs = expand_grid(p)
    vgg = [s for s in specs if s.model == "vgg16"]
    resnet = [s for s in specs if s.model == "resnet18"]
    assert {s.seed for s in vgg} == {0} and {s.seed for s in resnet} == {0, 1}
    assert {(s.params["train_subset"], s.params["epochs"]) for s in vgg} == {(100, 2)}
    assert {(s.params["train_subset"], s.params["epochs"]) for s in resnet} == {(500, 50)}
    for spec in specs:  # the dense run that post_training reuses has the same budget
        if spec.method == "post_training":
            assert dense_twin(spec).run_id == spec.dense_run_id
    assert "model_options names 'vgg16'" in _error({**BASE, "model_options": {"vgg16": {}}})
    assert "epohcs" in _error({**BASE, "model_options": {"resnet18": {"epohcs": 2}}})


@pytest.mark.parametrize("value", [-1, "often", True, float("inf")])
def test_a_bad_checkpoint_interval_is_named(value):
    with pytest.raises(ParamsError, match="checkpoint_every_s"):
        load_params({**BASE, "checkpoint_every_s": value})
