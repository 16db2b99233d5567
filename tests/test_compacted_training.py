"""Compacted training (issue 6): a fixed-mask run trains its physically smaller network, exactly.

``pre_training`` keeps its mask fixed, so training the compacted network must give the masked
network's results (up to floating-point summation order) for the same seed; post_training's
fine-tuning likewise. The map back to the full-size model must put every weight where it belongs.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import pruning, runner
from helpers.config import ParamsError, expand_grid, load_params, training_form
from helpers.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _masked(name: str, scenario: str = "mixed") -> tuple[nn.Module, pruning.PruningMethod]:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    method = pruning.make_method("pre_training", scenario, seed=0)
    method.on_init(model)
    return model, method


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg16_mini"])  # VGG16's layers at widths / 8: 8 MB, not 0.5 GB
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
    from helpers.train import make_optimizer

    model, method = _masked("resnet18", {"conv": 0.5, "linear": 0.8})
    make = lambda net: make_optimizer("adam", net, lr=1e-3)  # noqa: E731
    optimizer = make(model)
    compaction = pruning.CompactedTraining(method, torch.randn(2, 3, 32, 32), make)
    small, small_opt, hooks = compaction.build(model, optimizer)
    with torch.no_grad():
        for p in small.parameters():
            p.fill_(1.0)
    hooks.after_step(small)
    expected = hooks.cmap.shrink("fc.weight", method.masks.weight["fc"]).bool()
    assert expected.shape == small.fc.weight.shape != model.fc.weight.shape  # columns of removed channels went
    assert torch.equal(small.fc.weight != 0, expected)
    compaction.write_back(model, optimizer, small, small_opt, hooks)
    assert torch.equal(model.fc.weight != 0, method.masks.weight["fc"].bool())


def _study(out, form: str, **changes):
    params = {
        # ResNet18's layout at widths / 8, in this process: the forms' equality does not depend on the widths
        "name": f"ct-{form}", "datasets": ["digits"], "models": ["resnet18_mini"],
        "methods": ["pre_training", "post_training", "in_training", "set"], "scenarios": ["mixed"],
        "finetune_epochs": 1,
        "epochs": 2, "batch_size": 16, "train_subset": 48, "val_subset": 20, "test_subset": 40, "threads": 1,
        "inference": {"samples": 1, "warmup": 0, "batch_sizes": [1]}, "training_form": form, "keep_models": False,
        "executor": {"kind": "local", "process_per_run": False}, "out": str(out),
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
    fixed = lambda t: t[t.method.isin(["pre_training", "post_training"])].set_index(["model", "method"]).sort_index()  # noqa: E731
    masked, compacted = fixed(masked), fixed(compacted)
    assert set(masked.training_form) == {"masked"}
    assert set(compacted.training_form) == {"compacted"}
    assert len(masked) == 2 and masked.index.equals(compacted.index)
    for col in ("test_accuracy", "test_precision", "test_recall", "test_f1"):
        assert compacted[col].tolist() == pytest.approx(masked[col].tolist(), abs=1e-6), col
    assert compacted.test_loss.tolist() == pytest.approx(masked.test_loss.tolist(), rel=1e-4)
    for col in ("conv_filter_sparsity", "linear_weight_sparsity", "params_nonzero"):
        assert compacted[col].tolist() == pytest.approx(masked[col].tolist(), abs=1e-9), col


@pytest.mark.slow
def test_evolving_methods_train_compacted_with_the_masked_sparsity_and_swaps(both_forms):
    (m_runs, m_epochs), (c_runs, c_epochs) = both_forms["masked"], both_forms["compacted"]
    for method in ("in_training", "set"):
        masked, compacted = m_runs[m_runs.method == method].iloc[0], c_runs[c_runs.method == method].iloc[0]
        assert (masked.training_form, compacted.training_form) == ("masked", "compacted")
        assert compacted.status == "completed" and compacted.epochs_completed == 2
        for col in ("conv_filter_sparsity", "conv_weight_sparsity", "linear_weight_sparsity", "params_nonzero"):
            assert compacted[col] == pytest.approx(masked[col], abs=1e-9), (method, col)
        rows = c_epochs[(c_epochs.run_id == compacted.run_id) & (c_epochs.phase == "train")].sort_values("epoch")
        m_rows = m_epochs[(m_epochs.run_id == masked.run_id) & (m_epochs.phase == "train")].sort_values("epoch")
        assert rows.filters_swapped.tolist() == m_rows.filters_swapped.tolist()  # same counts swapped
        assert rows.filters_swapped.iloc[0] > 0
        assert (rows.setup_time_s > 0).all()  # compaction every epoch, counted in time_s
        # before the first swap both forms trained the same network from the same mask
        assert rows.loss.iloc[0] == pytest.approx(m_rows.loss.iloc[0], rel=1e-4)


@pytest.mark.slow
def test_epoch_compaction_without_swaps_equals_masked_training_and_keeps_optimizer_state():
    from helpers.measure import EnergyMeter
    from helpers.train import Data, fit, make_optimizer

    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(48, 3, 32, 32, generator=gen), torch.randint(0, 5, (48,), generator=gen)
    data = Data(x[:32], y[:32], x[32:], y[32:], x[32:], y[32:], num_classes=5)
    out = {}
    for form in ("masked", "compacted"):
        torch.manual_seed(0)
        model = build_model("resnet18", num_classes=5)
        method = pruning.make_method("in_training", "mixed", seed=0, swap_fraction=0.0)
        method.on_init(model)
        optimizer = make_optimizer("sgd", model, lr=1e-2)  # momentum: state to carry; see the VGG16 test on Adam
        compaction = None
        if form == "compacted":
            compaction = pruning.CompactedTraining(method, x[:2], lambda net: make_optimizer("sgd", net, lr=1e-2))
        result = fit(model, optimizer, method, data, epochs=2, batch_size=16, eval_batch_size=64, seed=0,
                     meter=EnergyMeter("cpu"), progress=False, compaction=compaction)  # fmt: skip
        out[form] = (model, optimizer, result)
    (m_model, m_opt, m_res), (c_model, c_opt, c_res) = out["masked"], out["compacted"]
    for a, b in zip(m_res.history, c_res.history):
        assert b["accuracy"] == a["accuracy"] and b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    fc_m, fc_c = m_opt.state[m_model.fc.weight], c_opt.state[c_model.fc.weight]
    # the full-size optimizer is the record: the small network's momentum was written back into it
    # float32 sums over other GEMM shapes: differences of a few 1e-6 on entries near zero
    torch.testing.assert_close(fc_c["momentum_buffer"], fc_m["momentum_buffer"], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(c_model.fc.weight, m_model.fc.weight, rtol=1e-3, atol=1e-5)


def test_a_rebuild_hands_weights_and_optimizer_state_back_unchanged():
    from helpers.train import make_optimizer

    torch.manual_seed(0)
    full = build_model("resnet18", num_classes=5)
    method = pruning.make_method("in_training", "mixed", seed=0)
    method.on_init(full)
    x = torch.randn(4, 3, 32, 32)
    make = lambda net: make_optimizer("adam", net, lr=1e-3)  # noqa: E731
    optimizer = make(full)
    compaction = pruning.CompactedTraining(method, x[:2], make)
    small, small_opt, hooks = compaction.build(full, optimizer)
    for _ in range(2):
        small_opt.zero_grad()
        torch.nn.functional.cross_entropy(small(x), torch.tensor([0, 1, 2, 3])).backward()
        small_opt.step()
        hooks.after_step(small)
    compaction.write_back(full, optimizer, small, small_opt, hooks)
    again, again_opt, _ = compaction.build(full, optimizer)
    for (name, a), b in zip(small.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(small.parameters(), again.parameters()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(small_opt.state[a][key], again_opt.state[b][key]), key
    # entries of removed filters hold no optimizer state in the full-size record
    conv, keep = full.conv1.weight, method.masks.channel["conv1"].bool()
    assert (optimizer.state[conv]["exp_avg"][~keep] == 0).all() and (optimizer.state[conv]["exp_avg"][keep] != 0).any()


@pytest.mark.slow
def test_compacted_runs_record_their_setup_time_in_every_epoch(both_forms):
    epochs = both_forms["compacted"][1]
    epochs = epochs[epochs.run_id.str.contains("-pre_training-|-post_training-|-dense-")]
    train = epochs[epochs.phase == "train"]
    dense = train.run_id.str.contains("-dense-")
    assert len(train[~dense]) >= 3  # pre_training's two epochs, post_training's fine-tuning epoch
    assert (train[~dense].setup_time_s > 0).all()  # compaction, then the write-back after every epoch
    assert (train[~dense].time_s > train[~dense].setup_time_s).all()
    assert train[dense].setup_time_s.isna().all()


@pytest.mark.slow
def test_vgg16_compacted_fit_equals_the_masked_fit():
    """VGG16: the flatten maps each removed filter to 49 columns of the first linear layer, whose
    unstructured mask must shrink with it; dropout draws the same masks in both forms. On VGG16's layers
    at widths / 8 (``vgg16_mini``: the same 7 x 7 pool, flatten and three linear layers), which keeps the
    test command's memory low; tests/test_pruning_compact.py compacts the full-size VGG16.

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
        model, method = _masked("vgg16_mini")
        make = lambda net: make_optimizer("sgd", net, lr=1e-3)  # noqa: E731
        compaction = pruning.CompactedTraining(method, x[:2], make) if form == "compacted" else None
        torch.manual_seed(7)  # dropout
        fit(model, make(model), method, data, epochs=2, batch_size=16, eval_batch_size=64, seed=0,
            meter=EnergyMeter("cpu"), progress=False, compaction=compaction)  # fmt: skip
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
    assert training_form("compacted", "in_training", 0.5) == "compacted"  # rebuilt after every swap
    assert training_form("compacted", "set", 0.0) == "masked"
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


@pytest.mark.slow
def test_checkpoints_hold_the_full_size_network_and_an_old_compacted_one_still_resumes(tmp_path):
    """Checkpoints have one shape, the full-size model and optimizer state, for fixed masks too, and resuming
    from one gives the uninterrupted run. A fixed mask's checkpoint written before 2026-12-03 held the
    compacted network (its small model and optimizer state); it resumes to the same result."""
    from helpers.measure import EnergyMeter
    from helpers.train import Data, fit, load_checkpoint, make_optimizer, save_checkpoint

    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(48, 3, 32, 32, generator=gen), torch.randint(0, 5, (48,), generator=gen)
    data = Data(x[:32], y[:32], x[32:], y[32:], x[32:], y[32:], num_classes=5)
    make = lambda net: make_optimizer("adam", net, lr=1e-3)  # noqa: E731

    class Killed(Exception):
        pass

    def run(path, kill_at_batch=None):
        model, method = _masked("resnet18_mini")
        optimizer, compaction, batches = make(model), pruning.CompactedTraining(method, x[:2], make), []

        def augment(batch, generator):  # two batches an epoch; the kill lands in the second epoch
            batches.append(1)
            if len(batches) == kill_at_batch:
                raise Killed
            return batch

        try:
            result = fit(model, optimizer, method, data, epochs=2, batch_size=16, eval_batch_size=64, seed=0,
                         meter=EnergyMeter("cpu"), progress=False, checkpoint_path=path, checkpoint_last=False,
                         augment=augment, compaction=compaction)  # fmt: skip
        except Killed:
            return model, optimizer, None
        return model, optimizer, result

    whole, _, whole_result = run(tmp_path / "whole.pt")
    model, optimizer, _ = run(tmp_path / "new.pt", kill_at_batch=3)
    assert not optimizer.state  # a fixed mask's small optimizer is the live state: held once
    state = load_checkpoint(tmp_path / "new.pt")
    assert state["epoch"] == 1
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert {k: v.shape for k, v in state["model"].items() if k in shapes} == shapes
    saved = {i: s["exp_avg"].shape for i, s in state["optimizer"]["state"].items()}
    assert saved and saved == {i: p.shape for i, p in enumerate(model.parameters()) if i in saved}

    # the checkpoint the old code wrote: the compacted network, as compaction builds it from the full one
    full, method = _masked("resnet18_mini")
    full_opt = make(full)
    full.load_state_dict(state["model"]), full_opt.load_state_dict(state["optimizer"])
    method.load_state_dict(state["method"])
    small, small_opt, _ = pruning.CompactedTraining(method, x[:2], make).build(full, full_opt)
    save_checkpoint(tmp_path / "old.pt", {**state, "model": small.state_dict(), "optimizer": small_opt.state_dict()})

    for name in ("new.pt", "old.pt"):
        resumed, _, result = run(tmp_path / name)
        assert result.epochs_completed == 2 and len(result.history) == 4, name
        for a, b in zip(whole_result.history, result.history):
            assert (b["epoch"], b["phase"], b["accuracy"]) == (a["epoch"], a["phase"], a["accuracy"]), name
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), name
        for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
