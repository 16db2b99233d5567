"""helpers.models: every model builds and runs at the smallest input each dataset of the study gives."""

from __future__ import annotations

import pytest
import torch

from torch import nn

from helpers.models import CIFAR_MODELS, MODELS, InputTooSmallError, UnknownModelError, build_model, min_input_size

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
