"""helpers.criteria: each criterion removes exactly its count, picks what its definition says, and the protocol runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.criteria import (
    CRITERIA,
    MissingBatchNormError,
    UnknownCriterionError,
    bn_l1_penalty,
    default_finetune_epochs,
    filter_scores,
    finetune,
    greedy_output_norm_order,
    lr_for_epoch,
    mask_filters,
    prune_filters,
    run_criteria_experiment,
    select_filters,
)
from helpers.pruning import find_structure


def tiny_cnn(bn: bool = True, classes: int = 3) -> nn.Module:
    """conv(6) - conv(10) - conv(5), each with BatchNorm (optional) and ReLU, then pool and a linear layer."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    channels = [3, 6, 10, 5]
    for c_in, c_out in zip(channels, channels[1:]):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU())
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, classes))
    with torch.no_grad():  # non-trivial BatchNorm so that BN-based criteria differ from L1
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-2, 2)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _conv_out_channels(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_each_criterion_removes_exactly_the_target_count(criterion):
    model = tiny_cnn()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    removed = select_filters(model, criterion, sparsity=0.4, calibration=(x, y))
    # round(0.4 * C) for C = 6, 10, 5 -> 2, 4, 2 (half to even)
    assert [len(removed[name]) for name in ("0", "3", "6")] == [2, 4, 2]
    assert all(len(set(v)) == len(v) for v in removed.values())
    pruned = prune_filters(model, removed, x[:2])
    assert _conv_out_channels(pruned) == [4, 6, 3]
    masked = copy.deepcopy(model)
    mask_filters(masked, removed)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("criterion", ["greedy_output_norm", "taylor"])
def test_resnet18_groups_lose_the_same_channels_in_every_member(criterion):
    from helpers.models import build_model

    model = build_model("resnet18", 4).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    structure = find_structure(model, x[:2])
    removed = select_filters(model, criterion, sparsity=0.4, calibration=(x, y), structure=structure)
    for group in structure.conv_groups:
        assert len(removed[group.name]) == round(0.4 * group.channels)
    pruned = prune_filters(model, removed, x[:2], structure)
    for group in structure.conv_groups:
        for conv in group.convs:
            assert pruned.get_submodule(conv).out_channels == group.channels - round(0.4 * group.channels)
    masked = copy.deepcopy(model)
    mask_filters(masked, removed, structure)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-4, rtol=1e-4)


def test_greedy_output_norm_picks_the_least_change_and_recomputes_after_each_removal():
    # conv1 (1 -> 4 channels, 1x1) - ReLU - conv2 (4 -> 1, 1x1) on a positive input: channel c adds
    # w1[c] * w2[c] * x to the output, i.e. 0.6x, -1.0x, 0.5x, 0.4x.
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 1.0, 1.0, 4.0]).view(4, 1, 1, 1))
        model[2].weight.copy_(torch.tensor([0.6, -1.0, 0.5, 0.1]).view(1, 4, 1, 1))
    x = torch.rand(3, 1, 4, 4) + 0.5
    order = greedy_output_norm_order(model, x, {"0": 2})["0"]
    # First: channel 3 (|0.4| smallest) although its filter has the largest L1 norm.
    # Second: channel 1 (-1.0 cancels 0.4: |0.4 - 1.0| = 0.6 < |0.4 + 0.5| = 0.9 < |0.4 + 0.6|),
    # although on its own it changes the output the most -- the ranking is recomputed.
    assert order == [3, 1]
    assert select_filters(model, "greedy_output_norm", sparsity=0.5, calibration=x)["0"] == [1, 3]
    assert 3 not in select_filters(model, "l1", sparsity=0.5)["0"]  # L1 keeps the largest filter


def _consumer_output(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    outputs = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, _i, o: outputs.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return outputs[0]


def _brute_force_order(model: nn.Module, consumer: str, x: torch.Tensor, channels: int, n_pick: int) -> list[int]:
    """Greedy by actual forward passes: zero each candidate filter, measure the consumer's output change."""
    base = _consumer_output(model, consumer, x)
    order: list[int] = []
    for _ in range(n_pick):
        costs = {}
        for c in range(channels):
            if c not in order:
                masked = copy.deepcopy(model)
                mask_filters(masked, {"0": order + [c]}, example_input=x[:2])
                costs[c] = float((_consumer_output(masked, consumer, x) - base).square().sum())
        order.append(min(costs, key=lambda c: (costs[c], c)))
    return order


@pytest.mark.parametrize("consumer_kind", ["conv_stride2", "linear_after_flatten"])
def test_greedy_output_norm_matches_brute_force_forward_passes(consumer_kind):
    torch.manual_seed(1)
    if consumer_kind == "conv_stride2":
        model = nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
        )  # fmt: skip
        consumer_index = 3
    else:
        model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 5))
        consumer_index = 4
    with torch.no_grad():
        model[1].weight.uniform_(-2, 2)
        model[1].bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(3, 2, 3, 3) if consumer_kind != "conv_stride2" else torch.randn(3, 2, 6, 6)
    order = greedy_output_norm_order(model, x, {"0": 3}, max_positions=10_000)["0"]
    assert order == _brute_force_order(model, str(consumer_index), x, 6, 3)


def test_bn_slimming_ranks_by_absolute_gamma():
    model = tiny_cnn()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -3.0, 0.1, 2.0, -0.05, 1.0]))
    scores = filter_scores(model, "bn_slimming")
    torch.testing.assert_close(scores["0"], torch.tensor([0.5, 3.0, 0.1, 2.0, 0.05, 1.0]))
    # 0.4 * 6 -> 2 removed: the two smallest |gamma|; -3.0 is the most important despite its sign
    assert select_filters(model, "bn_slimming", sparsity=0.4)["0"] == [2, 4]


def test_bn_slimming_without_batchnorm_names_the_model_and_suggests_vgg16_bn():
    with pytest.raises(MissingBatchNormError, match="conv '0' of model vgg16.*vgg16_bn"):
        select_filters(tiny_cnn(bn=False), "bn_slimming", model_name="vgg16")
    with pytest.raises(MissingBatchNormError, match="vgg16_bn"):
        bn_l1_penalty(tiny_cnn(bn=False))


def test_bn_l1_penalty_is_lambda_times_sum_of_abs_gamma():
    model = tiny_cnn()
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    expected = 1e-4 * sum(float(g.detach().abs().sum()) for g in gammas)
    penalty = bn_l1_penalty(model)
    assert penalty.item() == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    torch.testing.assert_close(gammas[0].grad, 1e-4 * gammas[0].detach().sign())


@pytest.mark.parametrize("bn", [True, False])
def test_taylor_score_is_squared_sum_of_activation_times_gradient(bn):
    model = tiny_cnn(bn=bn)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])
    scores = filter_scores(model, "taylor", calibration=(x, y), batch_size=4)
    # reference: the output z of each conv's channel (after its BatchNorm), sum_positions z * dL/dz, squared
    index = 1 if bn else 0
    outputs = []

    def keep_output(_module, _inputs, output):
        output.retain_grad()
        outputs.append(output)

    handle = model[index].register_forward_hook(keep_output)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    handle.remove()
    z = outputs[0]
    expected = (z * z.grad).sum(dim=(0, 2, 3)).square()
    torch.testing.assert_close(scores["0"], expected.detach(), rtol=1e-4, atol=1e-10)


def test_random_is_seeded_and_unknown_criterion_raises():
    model = tiny_cnn()
    assert select_filters(model, "random", seed=3) == select_filters(model, "random", seed=3)
    with pytest.raises(UnknownCriterionError, match="'l2'.*greedy_output_norm, l1, bn_slimming, random, taylor"):
        select_filters(model, "l2")
    with pytest.raises(ValueError, match="needs labels"):
        select_filters(model, "taylor", calibration=torch.randn(2, 3, 8, 8))


def test_learning_rate_steps_over_equal_thirds_and_default_epochs():
    assert [lr_for_epoch(e, 10) for e in range(10)] == [1e-3] * 4 + [1e-4] * 3 + [1e-5] * 3
    assert [lr_for_epoch(e, 3) for e in range(3)] == [1e-3, 1e-4, 1e-5]
    assert [lr_for_epoch(e, 20) for e in range(20)].count(1e-5) == 6
    assert default_finetune_epochs(10) == 10 and default_finetune_epochs(100) == 20


def test_finetune_with_slimming_penalty_shrinks_gammas():
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))

    def gamma_l1(m):
        return sum(float(b.weight.detach().abs().sum()) for b in m.modules() if isinstance(b, nn.BatchNorm2d))

    plain, slim = tiny_cnn(), tiny_cnn()
    finetune(plain, x, y, epochs=2, lrs=(0.05,), batch_size=8, seed=0)
    history = finetune(slim, x, y, epochs=2, lrs=(0.05,), batch_size=8, seed=0, penalty=lambda m: bn_l1_penalty(m, 0.5))
    assert gamma_l1(slim) < gamma_l1(plain)
    assert [row["epoch"] for row in history] == [1, 2]


def test_run_criteria_experiment_reports_the_three_stages():
    torch.manual_seed(0)
    model = tiny_cnn()
    data = {
        "train": (torch.randn(20, 3, 8, 8), torch.randint(0, 3, (20,))),
        "test": (torch.randn(10, 3, 8, 8), torch.randint(0, 3, (10,))),
    }
    original = copy.deepcopy(model.state_dict())
    result, pruned = run_criteria_experiment(
        model, data, "l1", finetune_epochs=3, batch_size=8, calibration_size=8, return_model=True
    )
    for stage in ("before", "pruned", "finetuned"):
        assert 0.0 <= result[f"accuracy_{stage}"] <= 1.0
    assert result["filters_total"] == 21 and result["filters_removed"] == 8
    assert _conv_out_channels(pruned) == [4, 6, 3]
    assert result["params_after"] < result["params_before"] and result["macs_after"] < result["macs_before"]
    assert [row["lr"] for row in result["history"]] == [1e-3, 1e-4, 1e-5]
    for key, value in model.state_dict().items():  # the caller's model is left alone
        assert torch.equal(value, original[key])
    # accuracy right after pruning is the accuracy of the masked model (removal is exact)
    masked = copy.deepcopy(model)
    mask_filters(masked, select_filters(model, "l1", sparsity=0.4))
    with torch.no_grad():
        accuracy = (masked(data["test"][0]).argmax(1) == data["test"][1]).float().mean().item()
    assert result["accuracy_pruned"] == pytest.approx(accuracy)


def test_criteria_differ_on_the_same_model():
    model = tiny_cnn()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    picks = {c: select_filters(model, c, calibration=(x, y))["3"] for c in CRITERIA}
    assert len({tuple(v) for v in picks.values()}) >= 3, picks


# ------------------------------------------------------------------------ greedy_rescore: once | each


def _brute_force_sequential(model: nn.Module, x: torch.Tensor, counts: dict[str, int], consumer_of: dict[str, str]) -> dict:
    """``each`` by definition on a plain CNN: layer by layer, every pick by forward passes on the network with
    every earlier pick (this layer's and the earlier layers') removed; the change is measured against the
    consumer's output before this layer lost anything."""
    work = copy.deepcopy(model)
    orders = {}
    for name, n_pick in counts.items():
        base = _consumer_output(work, consumer_of[name], x)
        order: list[int] = []
        channels = work.get_submodule(name).out_channels
        for _ in range(n_pick):
            costs = {}
            for c in range(channels):
                if c not in order:
                    trial = copy.deepcopy(work)
                    mask_filters(trial, {name: order + [c]}, example_input=x[:2])
                    costs[c] = float((_consumer_output(trial, consumer_of[name], x) - base).square().sum())
            order.append(min(costs, key=lambda c: (costs[c], c)))
        mask_filters(work, {name: order}, example_input=x[:2])
        orders[name] = order
    return orders


def test_greedy_rescore_each_scores_every_pick_after_all_earlier_removals():
    model = tiny_cnn()
    x = torch.randn(6, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    counts = {"0": 2, "3": 4, "6": 2}
    each = greedy_output_norm_order(model, x, counts, rescore="each", max_positions=100_000)
    consumer_of = {"0": "3", "3": "6", "6": "11"}  # the next conv; the last conv's reader is the linear layer
    assert each == _brute_force_sequential(model, x, counts, consumer_of)
    once = greedy_output_norm_order(model, x, counts, rescore="once", max_positions=100_000)
    assert once["0"] == each["0"]  # the first layer sees the same activations either way


def test_greedy_rescore_each_on_a_residual_group_removes_the_count_and_compacts_exactly():
    from helpers.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18_cifar", 3).eval()
    x = torch.randn(4, 3, 8, 8)
    structure = find_structure(model, x[:2])
    stem = structure.conv_groups[0]  # the stem and layer1's second convs share their channels
    assert len(stem.convs) > 1
    counts = {stem.name: 3}
    each = greedy_output_norm_order(model, x, counts, structure=structure, rescore="each", max_positions=512)
    once = greedy_output_norm_order(model, x, counts, structure=structure, rescore="once", max_positions=512)
    assert len(set(each[stem.name])) == 3 and each[stem.name][0] == once[stem.name][0]
    pruned = prune_filters(model, each, x[:2], structure)
    masked = copy.deepcopy(model)
    mask_filters(masked, each, structure)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-4, rtol=1e-4)


def test_unknown_greedy_rescore_lists_the_options():
    with pytest.raises(ValueError, match="'every'.*once, each"):
        select_filters(tiny_cnn(), "greedy_output_norm", calibration=torch.randn(2, 3, 8, 8), greedy_rescore="every")


# ------------------------------------------------------------------------------- CIFAR-style models

CIFAR_SIDE = {"vgg16_bn_cifar": 32, "resnet18_cifar": 8, "resnet50_cifar": 8}
_CIFAR_MODELS: dict[str, nn.Module] = {}


@pytest.fixture(autouse=True, scope="module")
def _free_cifar_models():
    """The cached CIFAR models go with this module, not at the session's end (the test command's peak memory)."""
    yield
    _CIFAR_MODELS.clear()


def _cifar_model(name: str) -> nn.Module:
    """A fresh copy of the CIFAR-style model with non-trivial BatchNorm (built once per session)."""
    if name not in _CIFAR_MODELS:
        from helpers.models import build_model

        torch.manual_seed(0)
        model = build_model(name, 4)
        with torch.no_grad():  # non-trivial BatchNorm so that eval-mode logits exercise it
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        _CIFAR_MODELS[name] = model.eval()
    return copy.deepcopy(_CIFAR_MODELS[name])


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", sorted(CIFAR_SIDE))
def test_every_criterion_prunes_cifar_models_and_compaction_keeps_the_logits(name, criterion):
    model = _cifar_model(name)
    side = CIFAR_SIDE[name]
    x, y = torch.randn(4, 3, side, side), torch.tensor([0, 1, 2, 3])
    structure = find_structure(model, x[:2])
    removed = select_filters(model, criterion, sparsity=0.4, calibration=(x, y), structure=structure,
                             max_positions=256, model_name=name)  # fmt: skip
    pruned = prune_filters(model, removed, x[:2], structure)
    for group in structure.conv_groups:
        for conv in group.convs:
            assert pruned.get_submodule(conv).out_channels == group.channels - round(0.4 * group.channels)
    masked = copy.deepcopy(model)
    mask_filters(masked, removed, structure)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), atol=1e-4, rtol=1e-4)
