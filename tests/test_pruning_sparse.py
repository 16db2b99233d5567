"""helpers.pruning.sparse: CSR linear layers, the measured per-layer format choice, model files, runner rows."""

from __future__ import annotations

import functools
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import pruning, runner
from helpers.config import load_params
from helpers.models import build_model
from helpers.pruning import SparseLinear, choose_linear_formats, load_model, save_model
from helpers.pruning.io import FORMAT, FORMAT_SPARSE

RECORD_KEYS = {"format", "dense_ms", "csr_ms", "sparsity", "reason"}


@torch.no_grad()
def _sparsify(linear: nn.Linear, fraction: float) -> nn.Linear:
    """Zero the ``fraction`` of ``linear``'s weights with the smallest |w| (exact count)."""
    w = linear.weight
    k = int(round(fraction * w.numel()))
    if k:
        idx = w.abs().flatten().argsort()[:k]
        w.view(-1)[idx] = 0
    return linear


def _tiny_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        _sparsify(nn.Linear(32, 24), 0.8), nn.ReLU(), _sparsify(nn.Linear(24, 16), 0.2), nn.ReLU(),
        _sparsify(nn.Linear(16, 5, bias=False), 0.6),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 32), (3, 32), (2, 4, 32), (32,)])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_computes_what_nn_linear_does(shape, bias):
    torch.manual_seed(1)
    dense = _sparsify(nn.Linear(32, 12, bias=bias), 0.7).eval()
    sparse = SparseLinear.from_linear(dense)
    assert sparse.weight.layout == torch.sparse_csr and sparse.weight.crow_indices().dtype == torch.int32
    assert sparse.nnz == int(torch.count_nonzero(dense.weight))
    x = torch.randn(*shape)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(x), dense(x))
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x))
    torch.testing.assert_close(sparse.to_linear().weight, dense.weight)


def test_sparse_linear_survives_deepcopy_and_to():
    import copy

    sparse = SparseLinear.from_linear(_sparsify(nn.Linear(8, 4), 0.5))
    twin = copy.deepcopy(sparse).to(torch.float32)
    x = torch.randn(2, 8)
    torch.testing.assert_close(twin(x), sparse(x))


@pytest.mark.parametrize("force", ["csr", "dense"])
def test_forced_choice_replaces_only_sparse_enough_layers(force):
    model = _tiny_mlp()
    originals = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    x = torch.randn(1, 32)
    with torch.inference_mode():
        before = model(x)
    records = choose_linear_formats(model, x, force=force)
    assert list(records) == ["0", "2", "4"]
    assert all(set(r) == RECORD_KEYS for r in records.values())
    assert records["0"]["sparsity"] == pytest.approx(0.8, abs=0.01) and records["4"]["sparsity"] == pytest.approx(0.6, abs=0.01)
    # below min_sparsity: recorded dense, not timed, untouched
    assert records["2"]["format"] == "dense" and math.isnan(records["2"]["dense_ms"])
    assert "min_sparsity" in records["2"]["reason"] and model[2] is originals["2"]
    for name in ("0", "4"):
        assert records[name]["format"] == force
        if force == "csr":
            assert isinstance(model.get_submodule(name), SparseLinear)
        else:
            assert model.get_submodule(name) is originals[name]
    with torch.inference_mode():
        torch.testing.assert_close(model(x), before)


def test_min_sparsity_one_keeps_every_layer_dense():
    model = _tiny_mlp()
    records = choose_linear_formats(model, torch.randn(1, 32), min_sparsity=1.0, force="csr")
    assert {r["format"] for r in records.values()} == {"dense"}
    assert not any(isinstance(m, SparseLinear) for m in model.modules())


def test_measured_choice_follows_the_timings():
    model = _tiny_mlp()
    x = torch.randn(2, 32)
    with torch.inference_mode():
        before = model(x)
    model.train()
    records = choose_linear_formats(model, x, repeats=3, warmup=1, budget_s=0.5)
    assert model.training  # modes restored after capturing the inputs
    for name in ("0", "4"):
        record = records[name]
        assert set(record) == RECORD_KEYS
        assert record["dense_ms"] > 0 and record["csr_ms"] > 0
        assert record["format"] == ("csr" if record["csr_ms"] < record["dense_ms"] else "dense")
        assert isinstance(model.get_submodule(name), SparseLinear) == (record["format"] == "csr")
        assert "batch 2" in record["reason"]
    model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(x), before)
    again = choose_linear_formats(model, x, force="dense")  # a second call leaves CSR layers as they are
    assert all(again[n]["format"] == "csr" for n in ("0", "4") if records[n]["format"] == "csr")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="force"):
        choose_linear_formats(_tiny_mlp(), torch.randn(1, 32), force="coo")
    with pytest.raises(ValueError, match="min_sparsity"):
        choose_linear_formats(_tiny_mlp(), torch.randn(1, 32), min_sparsity=1.5)


def test_model_file_round_trips_sparse_linear_layers(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 4, in_channels=1).eval()
    _sparsify(model.fc, 0.8)
    x = torch.randn(2, 1, 32, 32)
    plain = tmp_path / "plain.pt"
    save_model(model, plain)
    assert torch.load(plain, weights_only=True)["format"] == FORMAT  # no sparse layer: the old format
    records = choose_linear_formats(model, x[:1], force="csr")
    assert records["fc"]["format"] == "csr" and isinstance(model.fc, SparseLinear)
    path = tmp_path / "sparse.pt"
    save_model(model, path, meta={"linear_formats": records})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT_SPARSE and payload["sparse_linear"] == {"fc": {"in_features": 512, "out_features": 4}}
    assert payload["num_classes"] == 4
    loaded, meta = load_model(path, return_meta=True)
    assert isinstance(loaded.fc, SparseLinear) and loaded.fc.nnz == model.fc.nnz
    assert meta["linear_formats"]["fc"]["format"] == "csr"
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(load_model(plain)(x), model(x))  # the /1 file still loads, same logits


def test_runner_inference_rows_record_the_linear_formats(tmp_path, monkeypatch):
    params = load_params({
        "name": "sparse", "datasets": ["digits"], "models": ["resnet18_mini"], "methods": ["pre_training"],
        "scenarios": ["mixed"], "epochs": 1, "batch_size": 16, "train_subset": 32, "val_subset": 16,
        "test_subset": 16, "threads": 1, "inference": {"samples": 2, "warmup": 1, "batch_sizes": [1, 2]},
        "out": str(tmp_path), "executor": {"kind": "local", "process_per_run": False},  # the patch is in this process
    })  # fmt: skip
    # force CSR so the whole path (choice, model file, reload, benchmark) runs with a SparseLinear layer
    monkeypatch.setattr(pruning, "choose_linear_formats", functools.partial(pruning.choose_linear_formats, force="csr"))
    study = runner.run_study(params, progress=False)
    inf = pd.read_csv(study / "results" / "inference.csv")
    runs = pd.read_csv(study / "results" / "runs.csv")
    pre = runs[runs.method == "pre_training"].run_id.item()
    rows = inf[inf.run_id == pre]
    assert {"linear_formats", "sparse_linear_layers"} <= set(inf.columns)
    masked, compacted = rows[rows.variant == "masked"], rows[rows.variant == "compacted"]
    assert len(masked) == len(compacted) == 2
    assert all(json.loads(s) == {"fc": "dense"} for s in masked.linear_formats)
    assert all(json.loads(s) == {"fc": "csr"} for s in compacted.linear_formats)
    assert (masked.sparse_linear_layers == 0).all() and (compacted.sparse_linear_layers == 1).all()
    assert (compacted.max_abs_logit_diff < 1e-3).all() and (compacted.latency_ms_p50 > 0).all()
    assert (compacted.params_total.values <= masked.params_total.values).all()  # dense-shape counts
    deployed, meta = load_model(study / "runs" / pre / "model_compacted.pt", return_meta=True)
    assert isinstance(deployed.fc, SparseLinear) and meta["linear_formats"]["fc"]["format"] == "csr"
