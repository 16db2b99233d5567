"""helpers.granularity: every granularity meets its parameter budget, and compaction keeps the logits.

Tolerances (documented in helpers.granularity): ``weight`` is exact (the count of zeros equals
round(budget * P)); ``unstructured`` is exact per layer (round(budget * n_l) zeros in every layer);
``neuron`` and ``structured`` are within half of the largest unit (a filter or neuron with its next
layer's inputs), under 2 % of P for the tiny model and 0.1 % for ResNet18; ``layer`` is within half of
the largest removable unit, and exact where the chosen units sum to the budget.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from helpers.granularity import (
    GRANULARITIES,
    BudgetUnreachableError,
    NoRemovableUnitError,
    UnknownGranularityError,
    apply_granularity,
    compact_granularity,
    count_prunable,
    dense_state_dict,
    mask_granularity,
    measure_granularity,
    plan_granularity,
    removable_layers,
    serialized_size_bytes,
    sparse_state_dict,
    to_sparse_linear,
)
from helpers.models import build_model


class TinyVGG(nn.Module):
    """A VGG in miniature: two conv blocks (BatchNorm), a flatten and a three-layer classifier holding most weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4, 64), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(64, 48), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(48, 5),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def tiny_vgg() -> nn.Module:
    torch.manual_seed(0)
    model = TinyVGG()
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that identity BatchNorms are non-trivial
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return build_model("resnet18", 10).eval()


def test_weight_granularity_removes_exactly_the_budget_globally():
    model = tiny_vgg()
    total = count_prunable(model)
    pruned, info = apply_granularity(model, "weight", 0.3, X)
    assert total - count_prunable(pruned, nonzero=True) == round(0.3 * total)
    assert info["achieved_measured"] == pytest.approx(round(0.3 * total) / total)
    # global: the largest removed |w| is at most the smallest kept |w| over all layers together
    pairs = zip(model.modules(), pruned.modules())
    weights = [(m.weight.detach(), p.weight.detach()) for m, p in pairs if isinstance(m, (nn.Conv2d, nn.Linear))]
    removed = torch.cat([w[q == 0].abs() for w, q in weights])
    kept = torch.cat([w[q != 0].abs() for w, q in weights])
    assert removed.max() <= kept.min()
    # not per layer: some layers lose far more than 30 % and some far less
    fractions = [float((q == 0).float().mean()) for _, q in weights]
    assert max(fractions) - min(fractions) > 0.2


def test_unstructured_granularity_removes_the_budget_in_every_layer():
    model = tiny_vgg()
    pruned, info = apply_granularity(model, "unstructured", 0.3, X)
    for m in pruned.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert int((m.weight == 0).sum()) == round(0.3 * m.weight.numel())
    assert abs(info["achieved_measured"] - 0.3) <= info["tolerance"]
    assert info["format"] == "masked-dense"


@pytest.mark.parametrize("granularity", ["neuron", "structured"])
@pytest.mark.parametrize("budget", [0.2, 0.5])
def test_neuron_and_structured_reach_the_budget_within_half_a_unit(granularity, budget):
    model = tiny_vgg()
    pruned, info = apply_granularity(model, granularity, budget, X)
    assert info["budget_reached"]
    assert info["achieved_measured"] == pytest.approx(info["achieved"])  # the plan's count is what compaction gives
    assert abs(info["achieved_measured"] - budget) <= info["tolerance"] <= 0.02
    assert info["format"] == "compacted"
    if granularity == "neuron":  # only hidden linear layers shrink; convolutions and the output layer stay
        assert [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)] == [8, 8, 16, 16]
        assert pruned.classifier[6].out_features == 5 and pruned.classifier[0].out_features < 64
    else:
        assert pruned.classifier[0].in_features % 4 == 0 and pruned.classifier[0].in_features < 64


@pytest.mark.parametrize("granularity", ["neuron", "structured", "layer"])
def test_compacted_logits_equal_masked_logits(granularity):
    model = tiny_vgg()
    budget = {"neuron": 0.4, "structured": 0.4, "layer": 0.25}[granularity]
    plan = plan_granularity(model, granularity, budget, X)
    assert plan.units_removed > 0
    masked = mask_granularity(model, plan).eval()
    small = compact_granularity(model, plan, X).eval()
    assert count_prunable(small) == plan.params_total - plan.params_removed
    with torch.no_grad():
        torch.testing.assert_close(small(X), masked(X), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(small(X), model(X), atol=1e-3)  # something was actually removed


def test_resnet18_structured_and_layer_compaction_keep_the_logits(resnet18):
    x = torch.randn(2, 3, 32, 32)
    for granularity, budget in (("structured", 0.3), ("layer", 0.1)):
        plan = plan_granularity(resnet18, granularity, budget, x)
        masked = mask_granularity(resnet18, plan).eval()
        small = compact_granularity(resnet18, plan, x).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x), atol=1e-4, rtol=1e-4)
        if granularity == "structured":
            assert abs(plan.achieved - budget) <= plan.tolerance <= 0.001


def test_layer_granularity_removes_lowest_mean_magnitude_units_to_the_budget(resnet18):
    model = build_model("resnet18", 10).eval()
    model.load_state_dict(resnet18.state_dict())
    with torch.no_grad():  # make layer3.1 the least important block
        for m in model.layer3[1].modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(0.01)
    units = {u.name: u for u in removable_layers(model)}
    total = count_prunable(model)
    budget = units["layer3.1"].params / total
    pruned, info = apply_granularity(model, "layer", budget, torch.randn(2, 3, 32, 32))
    assert info["removed_layers"] == ["layer3.1"]
    assert info["achieved_measured"] == pytest.approx(budget)
    assert isinstance(pruned.layer3[1], nn.Identity)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]),
        (
            "resnet50",
            ["layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer2.3", "layer3.1", "layer3.2", "layer3.3",
             "layer3.4", "layer3.5", "layer4.1", "layer4.2"],
        ),  # fmt: skip
        ("vgg16_bn", [f"features.{i}" for i in (3, 10, 17, 20, 27, 30, 34, 37, 40)]),
    ],
)
def test_removable_layers_per_model(name, expected):
    model = build_model(name, 10)
    units = removable_layers(model, torch.randn(2, 3, 32, 32))
    assert [u.name for u in units] == expected
    kinds = {u.kind for u in units}
    assert kinds == ({"conv"} if name.startswith("vgg") else {"residual_block"})
    if name == "vgg16_bn":
        assert units[0].modules == ("features.3", "features.4", "features.5")  # conv, BatchNorm, ReLU


def test_neuron_pruning_of_a_resnet_raises_a_clear_error(resnet18):
    with pytest.raises(NoRemovableUnitError, match="no hidden linear layer.*fc.*vgg16"):
        plan_granularity(resnet18, "neuron", 0.3, torch.randn(2, 3, 32, 32))


def test_unreachable_layer_budget_warns_or_raises_when_strict():
    model = tiny_vgg()
    with pytest.warns(UserWarning, match="at most"):
        plan = plan_granularity(model, "layer", 0.6, X)
    assert not plan.budget_reached and plan.achieved == pytest.approx(plan.info()["max_removable_fraction"])
    with pytest.raises(BudgetUnreachableError, match="short of the budget 0.6"):
        plan_granularity(model, "layer", 0.6, X, strict=True)


def test_bad_granularity_and_budget_raise():
    with pytest.raises(UnknownGranularityError, match="'filter'.*weight, unstructured, neuron, structured, layer"):
        plan_granularity(tiny_vgg(), "filter", 0.3, X)
    with pytest.raises(ValueError, match="budget must be"):
        plan_granularity(tiny_vgg(), "weight", 1.2, X)
    assert GRANULARITIES == ("weight", "unstructured", "neuron", "structured", "layer")


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_state_dict_round_trips_and_is_smaller_at_high_sparsity():
    model = tiny_vgg()
    pruned, _ = apply_granularity(model, "unstructured", 0.8, X)
    payload = sparse_state_dict(pruned)
    assert payload["shapes"]  # the weights went to CSR
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    loaded = dense_state_dict(torch.load(buffer, weights_only=True))
    for key, value in pruned.state_dict().items():
        torch.testing.assert_close(loaded[key], value)
    assert serialized_size_bytes(payload) < 0.6 * serialized_size_bytes(pruned.state_dict())
    # at low sparsity CSR would be larger, so tensors stay dense
    assert not sparse_state_dict(apply_granularity(model, "unstructured", 0.1, X)[0])["shapes"]


def test_sparse_linear_model_gives_the_same_logits():
    pruned, _ = apply_granularity(tiny_vgg(), "weight", 0.7, X)
    with torch.no_grad():
        torch.testing.assert_close(to_sparse_linear(pruned)(X), pruned(X), atol=1e-5, rtol=1e-4)


def test_measure_granularity_reports_size_latency_and_macs():
    model = tiny_vgg()
    test = (torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,)))
    common = dict(test=test, samples=3, warmup=1)
    dense = measure_granularity(model, "dense", X, **common)
    structured = measure_granularity(apply_granularity(model, "structured", 0.5, X)[0], "structured", X, **common)
    weight_model = apply_granularity(model, "weight", 0.8, X)[0]
    weight = measure_granularity(weight_model, "weight", X, **common)
    # CSR (int32) costs 4 bytes per row + 8 per non-zero; a weight goes sparse only where that beats 4 per entry
    layers = [m.weight for m in weight_model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    smaller = sum((w.shape[0] + 1) * 4 + int(torch.count_nonzero(w)) * 8 < w.numel() * 4 for w in layers)
    assert dense["size_format"] == "dense" and structured["size_format"] == "compacted"
    assert weight["size_format"] == "csr-int32" and weight["latency_format"] == "masked-dense"
    assert 0 < smaller == weight["size_sparse_tensors"] and dense["size_sparse_tensors"] == 0
    assert structured["size_mb"] < dense["size_mb"] and weight["size_mb"] < dense["size_mb"]
    assert weight["size_mb_dense_file"] == pytest.approx(dense["size_mb"], rel=0.01)
    assert structured["macs"] < dense["macs"] and weight["macs"] == dense["macs"]
    assert weight["macs_nonzero"] < 0.5 * dense["macs_nonzero"]
    assert weight["latency_ms_sparse_linear"] > 0 and dense["latency_ms_sparse_linear"] != dense["latency_ms_sparse_linear"]
    for row in (dense, structured, weight):
        assert row["latency_ms_mean"] > 0 and 0.0 <= row["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "name, side, granularities",
    [
        ("vgg16_bn_cifar", 32, ("neuron", "structured", "layer")),
        ("resnet18_cifar", 8, ("structured", "layer")),
        ("resnet50_cifar", 8, ("structured", "layer")),
    ],
)
def test_cifar_models_compact_every_granularity_to_the_masked_logits(name, side, granularities):
    torch.manual_seed(0)
    model = build_model(name, 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    for granularity in granularities:
        # VGG16-BN (CIFAR)'s hidden neurons hold only 3 % of its weights (no 25,088-wide classifier)
        plan = plan_granularity(model, granularity, {"neuron": 0.02, "structured": 0.3, "layer": 0.05}[granularity], x)
        assert plan.units_removed > 0
        masked = mask_granularity(model, plan).eval()
        small = compact_granularity(model, plan, x).eval()
        assert count_prunable(small) == plan.params_total - plan.params_removed
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x), atol=1e-4, rtol=1e-4)
    if name == "resnet18_cifar":  # the CIFAR stem keeps torchvision's blocks, so the same blocks are removable
        assert [u.name for u in removable_layers(model, x)] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
