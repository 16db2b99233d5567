"""helpers.pruning: the hooked (torch.nn.utils.prune) inference variant, and model files loaded without random init."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import prune

from helpers.models import build_model
from helpers.pruning import (
    choose_linear_formats,
    compact,
    count_macs,
    load_hooked,
    load_model,
    make_method,
    save_hooked,
    save_model,
    to_hooked,
)
from helpers.pruning.hooked import hooked_layers


@pytest.fixture(scope="module")
def masked():
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3)
    make_method("pre_training", "mixed").on_init(model)
    return model.eval()


def test_hooked_is_the_prune_reparametrisation_with_the_masked_logits(masked, tmp_path):
    hooked = to_hooked(copy.deepcopy(masked))
    names = hooked_layers(hooked)
    assert "conv1" in names and "fc" in names
    for name in names:
        module = hooked.get_submodule(name)
        assert prune.is_pruned(module) and hasattr(module, "weight_orig") and hasattr(module, "weight_mask")
        assert module._forward_pre_hooks  # the weight is recomputed as weight_orig * weight_mask per call
        assert torch.equal(module.weight_mask.bool(), masked.get_submodule(name).weight != 0)
    x = torch.randn(3, 3, 32, 32)
    save_hooked(hooked, tmp_path / "hooked.pt", arch="resnet18", meta={"variant": "hooked"})
    loaded = load_hooked(tmp_path / "hooked.pt")
    assert hooked_layers(loaded) == names
    with torch.inference_mode():
        reference = masked(x)
        assert torch.equal(hooked(x), reference) and torch.equal(loaded(x), reference)
    assert count_macs(loaded, x[:1]) == count_macs(masked, x[:1])
    save_model(masked, tmp_path / "masked.pt", meta={"model": "resnet18"})
    # weight_orig and weight_mask: about twice the masked file
    assert (tmp_path / "hooked.pt").stat().st_size > 1.8 * (tmp_path / "masked.pt").stat().st_size


def test_only_layers_with_zeros_get_hooks():
    model = build_model("resnet18", 10, 3).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.abs() + 1e-3)  # no zero anywhere (a random init can hold an exact 0)
        model.layer2[0].conv1.weight[0] = 0
    assert hooked_layers(to_hooked(model)) == ["layer2.0.conv1"]


@pytest.mark.parametrize("form", ["masked", "compacted", "compacted-csr"])
def test_load_model_builds_no_random_model_first(masked, form, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    net = masked if form == "masked" else compact(masked, x)
    if form == "compacted-csr":
        choose_linear_formats(net, x[:1], force="csr")
    save_model(net, tmp_path / "m.pt", meta={"model": "resnet18"})
    rng = torch.get_rng_state()
    loaded = load_model(tmp_path / "m.pt")
    assert torch.equal(torch.get_rng_state(), rng)  # no random initialisation drew from the generator
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors) and all(t.device.type == "cpu" for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters())
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), masked(x), atol=1e-5, rtol=1e-5)
