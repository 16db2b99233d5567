"""Tests of helpers.pruning's physical compaction, MAC counting and model files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.models import build_model
from helpers.pruning import (
    SCENARIOS,
    compact,
    count_macs,
    load_model,
    make_method,
    save_model,
    summarize_sparsity,
)

# one method per model, so compaction meets L1 masks, random masks after a swap and SET's uneven counts
METHOD_FOR = {"vgg16": "pre_training", "vgg16_bn": "post_training", "resnet18": "set", "resnet50": "in_training",
              "vgg16_mini": "set", "resnet18_mini": "in_training"}  # the smoke profile's models (widths / 8)
_INITIAL: dict[str, tuple[nn.Module, dict]] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True, scope="module")
def _free_initial_models():
    """The cached models (VGG16 and VGG16-BN: 0.5 GB each, twice with their initial state) go with this module,
    not at the end of the session: they were a large part of the test command's peak memory."""
    yield
    _INITIAL.clear()


def fresh(name: str) -> nn.Module:
    """The model at its initial weights, reset in place. One model is cached at a time (with its initial
    state, twice its size): the tests below go model by model, and VGG16 and VGG16-BN cached together took
    2.2 GB of the test command's peak memory (issue 16: 4 GB)."""
    if name not in _INITIAL:
        _INITIAL.clear()
        torch.manual_seed(0)
        model = build_model(name, num_classes=7)
        _INITIAL[name] = (model, {k: v.clone() for k, v in model.state_dict().items()})
    model, state = _INITIAL[name]
    model.load_state_dict(state)
    return model


def masked(name: str, scenario: str) -> nn.Module:
    model = fresh(name)
    method = make_method(METHOD_FOR[name], scenario, seed=1)
    method.on_init(model)
    if method.name in ("in_training", "set"):
        method.on_epoch_end(model, None, 0, 2)
    method.on_train_end(model)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode logits exercise them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def assert_same_logits(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = a(x), b(x)
    scale = expected.abs().max()
    assert (actual - expected).abs().max() <= 1e-4 * scale


@pytest.mark.slow
@pytest.mark.parametrize("scenario_name", list(SCENARIOS))
@pytest.mark.parametrize("model_name", list(METHOD_FOR))  # model by model (see fresh)
def test_compact_matches_masked_logits_and_is_smaller(model_name: str, scenario_name: str) -> None:
    model = masked(model_name, scenario_name)
    x = inputs()
    small = compact(model, x)
    assert_same_logits(model, small, x)
    params = sum(p.numel() for p in model.parameters())
    small_params = sum(p.numel() for p in small.parameters())
    macs, small_macs = count_macs(model, x[:1]), count_macs(small, x[:1])
    if SCENARIOS[scenario_name].conv > 0:
        assert small_params < params and small_macs < macs
        # every removed filter is gone: no conv in the compacted model has a zero-output filter left
        assert summarize_sparsity(small)["conv_filter_sparsity"] == 0.0
    else:
        # linear_only removes no filter, so nothing can go physically; its zeros stay as zeros
        assert small_params == params and small_macs == macs
    assert summarize_sparsity(small)["params_nonzero"] <= summarize_sparsity(model)["params_nonzero"]


def test_vgg16_last_conv_filter_takes_its_49_linear_columns() -> None:
    model = masked("vgg16", "mixed")
    small = compact(model, inputs())
    last_conv = [m for m in small.features if isinstance(m, nn.Conv2d)][-1]
    assert small.classifier[0].in_features == last_conv.out_channels * 49
    assert last_conv.out_channels == 512 - 256


def test_compact_leaves_the_masked_model_untouched() -> None:
    model = masked("resnet18", "uniform")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compact(model, inputs())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_count_macs_of_a_single_conv_and_linear() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    assert count_macs(model, torch.randn(1, 3, 8, 8)) == 4 * 8 * 8 * 3 * 9 + 5 * 256


@pytest.mark.parametrize("variant", ["masked", "compacted"])
def test_model_file_round_trips_with_weights_only(tmp_path, variant: str) -> None:
    model = masked("resnet18", "mixed")
    if variant == "compacted":
        model = compact(model, inputs())
    path = tmp_path / "nested" / f"{variant}.pt"
    save_model(model, path, meta={"model": "resnet18", "run_id": "abc", "scenario": {"conv": 0.5, "linear": 0.8}})
    payload = torch.load(path, weights_only=True)  # plain data only
    assert payload["arch"] == "resnet18" and payload["meta"]["run_id"] == "abc"
    loaded, meta = load_model(path, return_meta=True)
    assert meta["scenario"] == {"conv": 0.5, "linear": 0.8}
    assert_same_logits(model, loaded, inputs())
    assert summarize_sparsity(loaded) == summarize_sparsity(model)
    assert not list(tmp_path.glob("nested/.*.tmp"))


@pytest.mark.slow
def test_compacted_vgg16_bn_file_round_trips(tmp_path) -> None:
    small = compact(masked("vgg16_bn", "uniform"), inputs())
    save_model(small, tmp_path / "vgg.pt", meta={})  # architecture inferred from the keys
    loaded = load_model(tmp_path / "vgg.pt")
    assert loaded.classifier[0].in_features == small.classifier[0].in_features < 512 * 49
    assert_same_logits(small, loaded, inputs())


@pytest.mark.parametrize("name", ["vgg16_mini", "resnet18_mini"])
def test_compacted_mini_model_file_round_trips_under_its_own_name(tmp_path, name: str) -> None:
    model = masked(name, "mixed")
    small = compact(model, inputs())
    save_model(small, tmp_path / "m.pt", meta={"model": name})  # the runner names the architecture
    assert torch.load(tmp_path / "m.pt", weights_only=True)["arch"] == name
    loaded = load_model(tmp_path / "m.pt")
    assert_same_logits(model, loaded, inputs())
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in small.parameters())
    if name == "vgg16_mini":  # a last-conv filter takes its 49 classifier columns, as in VGG16
        last_conv = [m for m in loaded.features if isinstance(m, nn.Conv2d)][-1]
        assert loaded.classifier[0].in_features == last_conv.out_channels * 49 == (64 - 32) * 49


def test_save_model_rejects_non_plain_meta(tmp_path) -> None:
    with pytest.raises(TypeError) as info:
        save_model(fresh("resnet18"), tmp_path / "m.pt", meta={"path": tmp_path})
    assert "meta['path']" in str(info.value) and "weights_only" in str(info.value)


def test_load_model_names_a_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
