"""helpers.train: the epoch loop with pruning hooks, evaluation, repeatable seeds, resume, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from helpers.measure import EnergyMeter
from helpers.models import build_model
from helpers.pruning import make_method, summarize_sparsity
from helpers.train import Data, evaluate, fit, load_checkpoint, make_optimizer, seed_everything, train_one_epoch


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=60, k=3, size=8, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, channels, size, size, generator=g) * 0.5
    x[:, 0, :, :] += y.view(-1, 1, 1).float()  # separable: the class shifts the mean
    return Data(train_x=x, train_y=y, val_x=x[:24], val_y=y[:24], test_x=x[:24], test_y=y[:24], num_classes=k)


def _fit(model, data, epochs, ckpt=None, method=None, lr=1e-2, checkpoint_last=True):
    method = method or make_method("dense", None)
    opt = make_optimizer("adam", model, lr=lr)
    return fit(model, opt, method, data, epochs=epochs, batch_size=16, eval_batch_size=32, seed=0,
               meter=EnergyMeter("cpu"), checkpoint_path=ckpt, checkpoint_last=checkpoint_last, progress=False)  # fmt: skip


def test_training_learns_a_separable_task(tiny_cnn):
    seed_everything(0)
    model, data = tiny_cnn(dropout=0.3), _data()
    result = _fit(model, data, epochs=6)
    train = [r for r in result.history if r["phase"] == "train"]
    val = [r for r in result.history if r["phase"] == "val"]
    assert len(train) == len(val) == 6 and [r["epoch"] for r in train] == list(range(1, 7))
    assert train[-1]["loss"] < train[0]["loss"]
    assert val[-1]["accuracy"] > 0.8
    for row in result.history:
        assert row["time_s"] > 0 and row["peak_memory_mb"] > 0
        assert row["energy_source"] != "unavailable" or math.isnan(row["energy_j"])


def test_evaluate_matches_sklearn(tiny_cnn):
    seed_everything(1)
    model, data = tiny_cnn(dropout=0.3), _data()
    metrics, probs = evaluate(model, data.val_x, data.val_y, batch_size=7, num_classes=3)
    preds = probs.argmax(1).numpy()
    p, r, f1, _ = precision_recall_fscore_support(data.val_y.numpy(), preds, average="macro", zero_division=0)
    assert metrics["accuracy"] == pytest.approx(float((preds == data.val_y.numpy()).mean()))
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == pytest.approx((p, r, f1))
    torch.testing.assert_close(probs.sum(1), torch.ones(24))
    model.eval()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(data.val_x), data.val_y).item()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_same_seed_same_run(tiny_cnn):
    runs = []
    for _ in range(2):
        seed_everything(3)
        model = tiny_cnn(dropout=0.3)
        runs.append((_fit(model, _data(), epochs=2), model.state_dict()))
    assert [r["loss"] for r in runs[0][0].history] == [r["loss"] for r in runs[1][0].history]
    for key in runs[0][1]:
        torch.testing.assert_close(runs[0][1][key], runs[1][1][key], rtol=0, atol=0)


def test_resume_retraces_the_uninterrupted_run(tmp_path, monkeypatch, tiny_cnn):
    seed_everything(5)
    straight = tiny_cnn(dropout=0.3)
    full = _fit(straight, _data(), epochs=3)

    import helpers.train as train_mod

    calls = {"n": 0}
    real = train_mod.train_one_epoch

    def killed_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stands in for a kill in the middle of epoch 3
        return real(*args, **kwargs)

    ckpt = tmp_path / "ckpt.pt"
    seed_everything(5)
    monkeypatch.setattr(train_mod, "train_one_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_cnn(dropout=0.3), _data(), epochs=3, ckpt=ckpt)
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    state = load_checkpoint(ckpt)  # weights_only=True
    assert state["epoch"] == 2 and state["optimizer"] is not None

    seed_everything(99)  # a different global state and fresh weights: the checkpoint must restore both
    resumed = tiny_cnn(dropout=0.3)
    result = _fit(resumed, _data(), epochs=3, ckpt=ckpt)
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-6)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)
    assert load_checkpoint(ckpt)["optimizer"] is None  # after the last epoch only what testing needs


def test_divergence_stops_training_and_keeps_history(tmp_path, tiny_cnn):
    seed_everything(0)
    data = _data()
    data.train_x[5] = float("nan")
    result = _fit(tiny_cnn(dropout=0.3), data, epochs=3, ckpt=tmp_path / "c.pt")
    assert result.diverged and result.epochs_completed == 0
    assert [(r["epoch"], r["phase"]) for r in result.history] == [(1, "train")]
    assert not math.isfinite(result.history[0]["loss"])


def test_masks_hold_through_training_with_the_method_hooks():
    seed_everything(0)
    data = _data(n=40, k=4, size=32, channels=3)
    model = build_model("resnet18", 4, 3)
    method = make_method("pre_training", "mixed", seed=0)
    method.on_init(model)
    opt = make_optimizer("adam", model, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    out = train_one_epoch(model, opt, method, data.train_x, data.train_y, batch_size=16, num_classes=4, generator=gen)
    assert out["samples"] == 40 and math.isfinite(out["loss"])
    summary = summarize_sparsity(model)
    assert summary["conv_filter_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert summary["linear_weight_sparsity"] == pytest.approx(0.8, abs=0.01)


def test_a_lone_last_image_is_skipped(tiny_cnn):
    seed_everything(0)
    data = _data(n=33)
    gen = torch.Generator().manual_seed(0)
    model = tiny_cnn(dropout=0.3)
    out = train_one_epoch(model, make_optimizer("sgd", model, lr=0.01), make_method("dense", None), data.train_x,
                          data.train_y, batch_size=16, num_classes=3, generator=gen)  # fmt: skip
    assert out["samples"] == 32


def test_unknown_optimizer(tiny_cnn):
    with pytest.raises(ValueError, match="adam"):
        make_optimizer("rmsprop", tiny_cnn(dropout=0.3), lr=0.1)


def test_data_moves_as_a_whole():
    data = _data()
    moved = data.to("cpu")
    assert moved.num_classes == 3 and np.array_equal(moved.test_y.numpy(), data.test_y.numpy())


class _FlipAfterValidation:
    """A method whose swap wrecks the model (negates the logits): validation must not see it.

    It records the model's validation accuracy as it is when the swap starts, i.e. as trained.
    """

    name = "flip"

    def __init__(self, data):
        self.data, self.before, self.after = data, [], []

    def after_step(self, model, optimizer=None):
        pass

    def apply(self, model):
        pass

    def on_epoch_end(self, model, optimizer, epoch, num_epochs):
        score = lambda: evaluate(model, self.data.val_x, self.data.val_y, batch_size=32, num_classes=3)[0]["accuracy"]
        self.before.append(score())
        with torch.no_grad():
            model.fc.weight.neg_()
            model.fc.bias.neg_()
        self.after.append(score())
        return {"filters_swapped": 1, "weights_swapped": 0}

    def state_dict(self):
        return {}


def test_validation_scores_the_model_before_the_epochs_swap(tiny_cnn):
    seed_everything(0)
    model, data = tiny_cnn(dropout=0.3), _data()
    method = _FlipAfterValidation(data)
    result = _fit(model, data, epochs=3, method=method)
    val = [r["accuracy"] for r in result.history if r["phase"] == "val"]
    assert val == pytest.approx(method.before)
    # the test can tell the orders apart: after the swap the accuracies differ
    assert any(abs(a - b) > 0.2 for a, b in zip(method.before, method.after))
    train = [r for r in result.history if r["phase"] == "train"]
    assert all(r["filters_swapped"] == 1 for r in train)  # the swap is recorded on the epoch's training row


def test_best_epoch_is_scored_when_it_validates_and_survives_resume(tmp_path, tiny_cnn):
    seed_everything(0)
    model, data = tiny_cnn(dropout=0.3), _data()
    scored = []

    def score(net):
        metrics, _ = evaluate(net, data.test_x, data.test_y, batch_size=32, num_classes=3)
        scored.append(metrics["accuracy"])
        return {"test_accuracy": metrics["accuracy"]}

    opt = make_optimizer("adam", model, lr=1e-2)
    result = fit(model, opt, make_method("dense", None), data, epochs=4, batch_size=16, eval_batch_size=32, seed=0,
                 meter=EnergyMeter("cpu"), progress=False, score_best=score)  # fmt: skip
    val = [r["accuracy"] for r in result.history if r["phase"] == "val"]
    best_epoch = int(np.argmax(val)) + 1  # the first epoch with the highest validation accuracy
    assert result.best["epoch"] == best_epoch
    assert result.best["val_accuracy"] == pytest.approx(max(val))
    improvements = [i for i, v in enumerate(val) if v > max(val[:i], default=-1)]
    assert len(scored) == sum(i < len(val) - 1 for i in improvements)  # on improvement, not for the last epoch
    if best_epoch < len(val):
        assert result.best["test_accuracy"] == scored[-1]  # the last improvement is the best
    else:
        assert "test_accuracy" not in result.best  # the final model: the caller scores it

    # interrupted after two epochs and resumed: the same best, restored from the checkpoint
    seed_everything(0)
    model2 = tiny_cnn(dropout=0.3)
    ckpt = tmp_path / "ck.pt"
    opt2 = make_optimizer("adam", model2, lr=1e-2)
    fit(model2, opt2, make_method("dense", None), data, epochs=2, batch_size=16, eval_batch_size=32, seed=0,
        meter=EnergyMeter("cpu"), progress=False, score_best=score, checkpoint_path=ckpt)  # fmt: skip
    resumed = fit(model2, opt2, make_method("dense", None), data, epochs=4, batch_size=16, eval_batch_size=32, seed=0,
                  meter=EnergyMeter("cpu"), progress=False, score_best=score, checkpoint_path=ckpt)  # fmt: skip
    assert resumed.best == pytest.approx(result.best)


def test_checkpoint_every_s_writes_checkpoints_only_when_the_interval_has_passed(tmp_path, tiny_cnn, monkeypatch):
    import helpers.train as train_mod

    writes = []
    real = train_mod.save_checkpoint
    monkeypatch.setattr(train_mod, "save_checkpoint", lambda path, state: (writes.append(state["epoch"]), real(path, state)))
    clock = {"t": 1000.0}

    def tick():  # every reading of the clock is 10 s later: each epoch "takes" several readings
        clock["t"] += 10.0
        return clock["t"]

    monkeypatch.setattr(train_mod, "_clock", tick)
    data = _data()
    # start 1010; after epoch e the check reads the clock (+10 s), and a write reads it again
    for every, expected in ((0.0, [1, 2, 3, 4]), (15.0, [2, 4]), (25.0, [3, 4]), (1e9, [4])):
        writes.clear()
        seed_everything(0)
        model = tiny_cnn()
        fit(model, make_optimizer("adam", model, lr=1e-2), make_method("dense", None), data, epochs=4, batch_size=16,
            eval_batch_size=32, seed=0, meter=EnergyMeter("cpu"), checkpoint_path=tmp_path / f"{every}.pt",
            checkpoint_every_s=every, progress=False)  # fmt: skip
        assert writes == expected, every  # the last epoch's is always written (checkpoint_last)
