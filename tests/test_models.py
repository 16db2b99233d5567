"""helpers.models: every model builds and runs at the smallest input each dataset of the study gives."""

from __future__ import annotations

import pytest
import torch

from torch import nn

from helpers.models import (
    CIFAR_MODELS,
    MINI_MODELS,
    MINI_WIDTH_DIVISOR,
    MODELS,
    InputTooSmallError,
    UnknownModelError,
    build_model,
    min_input_size,
)

# dataset -> (classes, channels, smallest native image side the data layer gives)
DATASET_SHAPES = {
    "bloodmnist": (8, 3, 28),
    "digits": (10, 1, 8),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "visa": (2, 3, 224),
    "mvtec3d_cls": (10, 3, 224),
}


# A CIFAR-style network on 224 px images is legal but slow (no early downsampling): tested at 32 px and below.
@pytest.mark.parametrize(
    ("name", "dataset"),
    [(n, d) for n in MODELS for d in sorted(DATASET_SHAPES) if n not in CIFAR_MODELS or DATASET_SHAPES[d][2] <= 32],
)
def test_model_runs_at_each_datasets_smallest_input(name, dataset):
    classes, channels, side = DATASET_SHAPES[dataset]
    if side < min_input_size(name):
        with pytest.raises(InputTooSmallError, match=f"at least {min_input_size(name)}"):
            build_model(name, classes, channels, input_size=side)
        side = min_input_size(name)  # what helpers.transforms pads such images to
    model = build_model(name, classes, channels, input_size=side).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, channels, side, side))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError, match="unknown model 'vgg61'.*vgg16, vgg16_bn, resnet18, resnet50, vgg16_bn_cifar"):
        build_model("vgg61", 10)


def test_grayscale_first_conv_takes_one_channel():
    assert build_model("resnet18", 10, in_channels=1).conv1.in_channels == 1
    assert build_model("vgg16", 10, in_channels=1).features[0].in_channels == 1


def test_local_weights_load_matching_layers(tmp_path):
    source = build_model("resnet18", 10)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", 5, weights=path)  # classifier shape differs, the rest loads
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 5


def test_corrupt_weights_file_is_reported(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        build_model("resnet18", 10, weights=path)
    with pytest.raises(FileNotFoundError, match="weights=None"):
        build_model("resnet18", 10, weights=tmp_path / "missing.pth")


@pytest.mark.parametrize("name", ["resnet18_cifar", "resnet50_cifar"])
def test_cifar_resnets_have_a_3x3_stride_1_stem_and_no_max_pool(name):
    model = build_model(name, 10)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert min_input_size(name) == 8
    with torch.inference_mode():
        features = nn.Sequential(*list(model.children())[:-2])(torch.randn(1, 3, 32, 32))
    assert features.shape[-2:] == (4, 4)  # downsampled by 8, not 32
    assert build_model(name, 10, in_channels=1).conv1.kernel_size == (3, 3)


def test_cifar_vgg_classifier_reads_512_features():
    model = build_model("vgg16_bn_cifar", 10)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    assert min_input_size("vgg16_bn_cifar") == 32
    params = sum(p.numel() for p in model.parameters())
    assert params < 16e6  # torchvision's vgg16_bn, with its 25,088-wide classifier, has 134 M


# -- the smoke profile's scaled-down variants ---------------------------------------------------------
def _layout(model: nn.Module) -> list[tuple]:
    """Every module's name, type and (for conv / pool) kernel, stride and padding: the architecture without widths."""
    rows = []
    for name, m in model.named_modules():
        row = (name, type(m).__name__)
        if isinstance(m, nn.Conv2d):
            row += (m.kernel_size, m.stride, m.padding, m.bias is not None)
        elif isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            row += (getattr(m, "kernel_size", None), getattr(m, "stride", None), getattr(m, "output_size", None))
        rows.append(row)
    return rows


def _widths(model: nn.Module) -> list[int]:
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip


@pytest.mark.parametrize(("mini", "full"), [("vgg16_mini", "vgg16"), ("resnet18_mini", "resnet18")])
@pytest.mark.parametrize("channels", [1, 3])
def test_mini_models_keep_the_full_architecture_at_an_eighth_of_the_widths(mini, full, channels):
    assert MINI_MODELS == ("vgg16_mini", "resnet18_mini") and set(MINI_MODELS) <= set(MODELS)
    with torch.device("meta"):  # shapes only: the full models' 134 M / 11 M weights are never allocated
        reference = build_model(full, 10, channels)
    model = build_model(mini, 10, channels, input_size=32)
    assert _layout(model) == _layout(reference)  # same layers, names, kernels, strides, pools, in the same order
    counts = {kind: sum(isinstance(m, kind) for m in model.modules())
              for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.MaxPool2d, nn.ReLU, nn.Dropout)}  # fmt: skip
    assert counts == {kind: sum(isinstance(m, kind) for m in reference.modules()) for kind in counts}
    full_widths, widths = _widths(reference), _widths(model)
    assert widths[:-1] == [w // MINI_WIDTH_DIVISOR for w in full_widths[:-1]] and widths[-1] == full_widths[-1] == 10
    assert min_input_size(mini) == min_input_size(full) == 32
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])  # built for real
    ratio = sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in reference.parameters())
    assert 1 / 80 < ratio < 1 / 50  # every hidden layer has 1/64 of the weights
    with torch.inference_mode():
        assert model.eval()(torch.randn(2, channels, 32, 32)).shape == (2, 10)
    with pytest.raises(InputTooSmallError):
        build_model(mini, 10, channels, input_size=28)


def test_vgg16_mini_classifier_is_vggs_at_an_eighth():
    model = build_model("vgg16_mini", 10)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 49, 512), (512, 512), (512, 10)]
    classifier = sum(p.numel() for p in model.classifier.parameters())
    assert 0.85 < classifier / sum(p.numel() for p in model.parameters()) < 0.92  # VGG16's classifier: 89 %


def test_mini_models_have_their_full_models_pruning_structure():
    from helpers.pruning import find_structure

    resnet = find_structure(build_model("resnet18_mini", 10))
    assert {g.name: g.convs for g in resnet.conv_groups if len(g.convs) > 1} == {  # as test_pruning's resnet18
        "conv1": ("conv1", "layer1.0.conv2", "layer1.1.conv2"),
        "layer2.0.conv2": ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"),
        "layer3.0.conv2": ("layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv2"),
        "layer4.0.conv2": ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"),
    }
    assert len(resnet.convs) == 20 and resnet.linears == ("fc",) and resnet.output_layer == "fc"
    vgg = find_structure(build_model("vgg16_mini", 10))
    assert len(vgg.conv_groups) == 13 and all(len(g.convs) == 1 for g in vgg.conv_groups)  # no coupling in VGG
    assert vgg.linears == ("classifier.0", "classifier.3", "classifier.6") and vgg.output_layer == "classifier.6"


def test_shapes_only_builds_on_meta_without_drawing_random_numbers():
    from helpers.models import shapes_only

    state = torch.random.get_rng_state()
    with shapes_only():
        skeleton = build_model("resnet18_mini", 10, 3)
    assert all(p.is_meta for p in skeleton.parameters())
    assert torch.equal(torch.random.get_rng_state(), state)  # no initialisation drew from the generator
    torch.manual_seed(0)
    built = build_model("resnet18_mini", 10, 3)  # outside the block: initialised as usual
    assert not any(p.is_meta for p in built.parameters()) and built.conv1.weight.abs().sum() > 0
    torch.manual_seed(0)
    assert torch.equal(build_model("resnet18_mini", 10, 3).conv1.weight, built.conv1.weight)
