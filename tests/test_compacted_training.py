"""Compacted training (issue 6): a fixed-mask run trains its physically smaller network, exactly.

``pre_training`` keeps its mask fixed, so training the compacted network must give the masked
network's results (up to floating-point summation order) for the same seed; post_training's
fine-tuning likewise. The map back to the full-size model must put every weight where it belongs.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import pruning, runner
from helpers.config import ParamsError, expand_grid, load_params, training_form
from helpers.models import build_model


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _masked(name: str, scenario: str = "mixed") -> tuple[nn.Module, pruning.PruningMethod]:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    method = pruning.make_method("pre_training", scenario, seed=0)
    method.on_init(model)
    return model, method


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_expanding_a_changed_compacted_model_reproduces_its_logits(name):
    model, method = _masked(name)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = torch.get_rng_state()
    small, cmap = pruning.compact_with_map(model, x[:2], masks=method.masks)
    assert torch.equal(torch.get_rng_state(), rng)  # compaction draws nothing from the global RNG
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for p in small.parameters():  # training changes every kept weight
            p.add_(torch.randn_like(p) * 0.01)
        for m in small.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    full = copy.deepcopy(model)
    cmap.expand_into(full, small)
    full.eval(), small.eval()
    with torch.no_grad():
        expected, actual = small(x), full(x)
    assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()
    # the expanded model is still the masked model: its removed filters stay removed
    assert pruning.summarize_sparsity(full)["conv_filter_sparsity"] == pytest.approx(
        pruning.summarize_sparsity(model)["conv_filter_sparsity"]
    )


def test_shrunk_masks_keep_the_linear_sparsity_on_the_small_model():
    model, method = _masked("resnet18", {"conv": 0.5, "linear": 0.8})
    small, cmap = pruning.compact_with_map(model, masks=method.masks)
    hooks = pruning.CompactedTraining(method, cmap, model, small)
    with torch.no_grad():
        for p in small.parameters():
            p.fill_(1.0)
    hooks.after_step(small)
    expected = cmap.shrink("fc.weight", method.masks.weight["fc"]).bool()
    assert expected.shape == small.fc.weight.shape != model.fc.weight.shape  # columns of removed channels went
    assert torch.equal(small.fc.weight != 0, expected)
    hooks.finish(small)
    assert torch.equal(model.fc.weight != 0, method.masks.weight["fc"].bool())


def _study(out, form: str, **changes):
    params = {
        "name": f"ct-{form}", "datasets": ["digits"], "models": ["resnet18"],
        "methods": ["pre_training", "post_training"], "scenarios": ["mixed"], "finetune_epochs": 1,
        "epochs": 2, "batch_size": 16, "train_subset": 48, "val_subset": 20, "test_subset": 40, "threads": 1,
        "inference": {"samples": 1, "warmup": 0, "batch_sizes": [1]}, "training_form": form, "keep_models": False,
        "out": str(out),
    }  # fmt: skip
    params.update(changes)
    return load_params(params)


@pytest.fixture(scope="module")
def both_forms(tmp_path_factory):
    out = tmp_path_factory.mktemp("forms")
    tables = {}
    for form in ("masked", "compacted"):
        study = runner.run_study(_study(out, form), progress=False)
        tables[form] = (pd.read_csv(study / "results" / "runs.csv"), pd.read_csv(study / "results" / "epochs.csv"))
    return tables


@pytest.mark.slow
def test_compacted_training_gives_the_masked_test_metrics_for_the_same_seed(both_forms):
    masked, compacted = both_forms["masked"][0], both_forms["compacted"][0]
    pruned = lambda t: t[t.method != "dense"].set_index(["model", "method"]).sort_index()  # noqa: E731
    masked, compacted = pruned(masked), pruned(compacted)
    assert set(masked.training_form) == {"masked"}
    assert set(compacted.training_form) == {"compacted"}
    assert len(masked) == 2 and masked.index.equals(compacted.index)
    for col in ("test_accuracy", "test_precision", "test_recall", "test_f1"):
        assert compacted[col].tolist() == pytest.approx(masked[col].tolist(), abs=1e-6), col
    assert compacted.test_loss.tolist() == pytest.approx(masked.test_loss.tolist(), rel=1e-4)
    for col in ("conv_filter_sparsity", "linear_weight_sparsity", "params_nonzero"):
        assert compacted[col].tolist() == pytest.approx(masked[col].tolist(), abs=1e-9), col


@pytest.mark.slow
def test_compacted_runs_record_their_setup_time_in_the_first_epoch(both_forms):
    epochs = both_forms["compacted"][1]
    train = epochs[epochs.phase == "train"]
    dense = train.run_id.str.contains("-dense-")
    first = train[~dense].groupby("run_id").epoch.transform("min") == train[~dense].epoch
    assert (train[~dense][first].setup_time_s > 0).all()
    assert train[~dense][~first].setup_time_s.isna().all()
    assert train[dense].setup_time_s.isna().all()


@pytest.mark.slow
def test_vgg16_compacted_fit_equals_the_masked_fit():
    """VGG16: the flatten maps each removed filter to 49 columns of the first linear layer, whose
    unstructured mask must shrink with it; dropout draws the same masks in both forms.

    SGD, so that the weights can be compared: Adam's first steps move each weight by about ±lr
    whatever the size of its gradient, and an untrained VGG16 (no BatchNorm) has gradients so small
    in places that summation-order noise decides their sign. The runner test compares Adam runs by
    their test metrics."""
    from helpers.measure import EnergyMeter
    from helpers.train import Data, evaluate, fit, make_optimizer

    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 3, 32, 32, generator=gen), torch.randint(0, 5, (40,), generator=gen)
    data = Data(x[:32], y[:32], x[32:], y[32:], x[32:], y[32:], num_classes=5)
    results = {}
    for form in ("masked", "compacted"):
        model, method = _masked("vgg16")
        trained, hooks = model, method
        if form == "compacted":
            trained, cmap = pruning.compact_with_map(model, x[:2], masks=method.masks)
            hooks = pruning.CompactedTraining(method, cmap, model, trained)
        torch.manual_seed(7)  # dropout
        optimizer = make_optimizer("sgd", trained, lr=1e-3)
        fit(trained, optimizer, hooks, data, epochs=2, batch_size=16, eval_batch_size=64, seed=0,
            meter=EnergyMeter("cpu"), progress=False)  # fmt: skip
        if form == "compacted":
            hooks.finish(trained)
        method.on_train_end(model)
        results[form] = (model, evaluate(model, x, y, batch_size=64, num_classes=5)[0])
    (masked, m_metrics), (compacted, c_metrics) = results["masked"], results["compacted"]
    assert c_metrics["accuracy"] == m_metrics["accuracy"]
    assert c_metrics["loss"] == pytest.approx(m_metrics["loss"], rel=1e-4)
    for (name, a), b in zip(masked.state_dict().items(), compacted.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=5e-6, msg=name)  # misplaced: ~1e-2


def test_training_form_resolves_per_method_and_enters_the_run_id(tmp_path):
    assert training_form("compacted", "pre_training", 0.5) == "compacted"
    assert training_form("compacted", "pre_training", 0.0) == "masked"  # linear_only: nothing to remove
    assert training_form("compacted", "in_training", 0.5) == "masked"
    assert training_form("compacted", "dense", 0.0) == "masked"
    assert training_form("masked", "pre_training", 0.5) == "masked"
    ids = {form: {s.method: s.run_id for s in expand_grid(_study(tmp_path, form))} for form in ("masked", "compacted")}
    assert ids["masked"]["dense"] == ids["compacted"]["dense"]  # the baseline is the same run
    assert ids["masked"]["pre_training"] != ids["compacted"]["pre_training"]
    specs = expand_grid(_study(tmp_path, "compacted"))
    assert {s.method: s.params["training_form"] for s in specs}["pre_training"] == "compacted"


def test_a_typo_in_training_form_names_the_accepted_values(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown training_form 'compact'.*compacted, masked"):
        _study(tmp_path, "compact")
