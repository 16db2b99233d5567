"""helpers.models: every model builds and runs at the smallest input each dataset of the study gives."""

from __future__ import annotations

import pytest
import torch

from helpers.models import MODELS, InputTooSmallError, UnknownModelError, build_model, min_input_size

# dataset -> (classes, channels, smallest native image side the data layer gives)
DATASET_SHAPES = {
    "bloodmnist": (8, 3, 28),
    "digits": (10, 1, 8),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "visa": (2, 3, 224),
    "mvtec3d_cls": (10, 3, 224),
}


@pytest.mark.parametrize("dataset", sorted(DATASET_SHAPES))
@pytest.mark.parametrize("name", MODELS)
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
    with pytest.raises(UnknownModelError, match="unknown model 'vgg61'.*vgg16, vgg16_bn, resnet18, resnet50"):
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
