"""The CNNs of the study, built from torchvision.

The study uses the unmodified torchvision architectures (Simonyan & Zisserman 2015 for VGG16, He et al.
2016 for ResNet18/50), with the classifier resized to the dataset's classes and, for non-RGB data, the
first convolution resized to its channels. Weights are random (torchvision's initialisation) unless a
local ImageNet state dict is given: the study's machines cannot reach model hubs, and a silent download
would make runs differ by machine. Inputs must be at least :func:`min_input_size` (32 px but for the
CIFAR ResNets); ``helpers.data`` pads smaller images (BloodMNIST 28 px, digits 8 px).

CIFAR-style variants (:data:`CIFAR_MODELS`), the networks of CIFAR results such as Lajić, Peer and
Emeršič's (2025) baselines (VGG16 93.2 %, ResNet18 94.4 %, ResNet50 95.0 % on CIFAR-10), make the CIFAR
literature's changes (He et al. 2016, Sec. 4.2; the VGG of Liu et al.'s network slimming and of Li et
al.'s L1 filter pruning), as the ImageNet stem at 32 px throws away most of the image:

- ``resnet18_cifar``, ``resnet50_cifar``: a 3 x 3 stride-1 stem without max-pool, so the network
  downsamples by 8 (a 32 px image reaches the last stage at 4 x 4; smallest input 8 px).
- ``vgg16_bn_cifar``: ``vgg16_bn``'s features, a global average pool to 512 features and a classifier
  512 -> 512 -> 512 -> classes (ReLU and dropout between, like torchvision's, so hidden neurons still
  exist for the granularity study); at 32 px the last convolution's channels are the classifier's
  inputs one to one.

Scaled-down variants (:data:`MINI_MODELS`, the smoke profile's models) have the same layers with every
width divided by 8, so the machinery runs in a fraction of the time, memory and disk (a VGG16 model file
is about 0.5 GB, a ``vgg16_mini`` one about 8 MB); their accuracies are not the full models':

- ``vgg16_mini``: widths 8-16-32-64-64 and a classifier 3,136 -> 512 -> 512 -> classes: every layer has
  1/64 of VGG16's weights, the classifier still about 89 % of them, and a last-convolution filter still
  feeds 49 classifier columns.
- ``resnet18_mini``: ResNet18's layout at widths 8-16-32-64.

Every block is a torchvision ``BasicBlock`` / ``Bottleneck`` or an ``nn.Sequential`` of the usual
layers, so pruning structure (residual groups), compaction and every criterion treat them alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torchvision import models as tvm

__all__ = [
    "MODELS",
    "CIFAR_MODELS",
    "MINI_MODELS",
    "build_model",
    "min_input_size",
    "shapes_only",
    "UnknownModelError",
    "InputTooSmallError",
]

#: CIFAR-style variants (3 x 3 stride-1 stem, no max-pool; VGG classifier at 512 inputs).
CIFAR_MODELS: tuple[str, ...] = ("vgg16_bn_cifar", "resnet18_cifar", "resnet50_cifar")
#: Scaled-down variants for the smoke profile (every width / 8, the architecture unchanged).
MINI_MODELS: tuple[str, ...] = ("vgg16_mini", "resnet18_mini")
MODELS: tuple[str, ...] = ("vgg16", "vgg16_bn", "resnet18", "resnet50") + CIFAR_MODELS + MINI_MODELS
#: The divisor of every width in :data:`MINI_MODELS`.
MINI_WIDTH_DIVISOR = 8


class _SkipInit(TorchFunctionMode):
    """Skips the initialisation of new layers on ``meta`` (no values to set), where every ``normal_`` /
    ``uniform_`` runs a Python reference implementation (about 1 ms each; a ``resnet18_mini`` skeleton
    took 85 ms). A torch-function mode is per thread."""

    _SKIPPED = frozenset({
        torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_,
        nn.init.normal_, nn.init.uniform_, nn.init.constant_, nn.init.zeros_, nn.init.ones_,
        nn.init.kaiming_normal_, nn.init.kaiming_uniform_, nn.init.xavier_normal_, nn.init.xavier_uniform_,
        nn.init.trunc_normal_,
    })  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._SKIPPED and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build modules on the ``meta`` device without initialising them: shapes only, no memory, no random
    numbers drawn (the generator's state is untouched), for a skeleton whose tensors are loaded or replaced."""
    with torch.device("meta"), _SkipInit():
        yield


def _resnet_cifar(builder: Callable[..., tvm.ResNet]) -> Callable[..., nn.Module]:
    def build(*, weights: None, num_classes: int) -> nn.Module:
        model = builder(weights=weights, num_classes=num_classes)
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
        model.maxpool = nn.Identity()
        return model

    return build


def _vgg_classifier(features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """torchvision's VGG classifier shape (ReLU and dropout between the linear layers) at other widths."""
    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip


def _init_vgg(modules: Iterator[nn.Module]) -> None:  # torchvision's VGG init
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


def _vgg16_bn_cifar(*, weights: None, num_classes: int) -> nn.Module:
    model = tvm.vgg16_bn(weights=weights, num_classes=num_classes)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = _vgg_classifier(512, 512, num_classes)
    _init_vgg(model.classifier.modules())
    return model


def _vgg16_mini(*, weights: None, num_classes: int) -> nn.Module:
    d = MINI_WIDTH_DIVISOR
    with shapes_only():  # torchvision's 25,088-wide classifier, replaced below
        model = tvm.VGG(nn.Sequential(), num_classes=num_classes, init_weights=False)
    model.features = tvm.vgg.make_layers([c if c == "M" else c // d for c in tvm.vgg.cfgs["D"]])
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = _vgg_classifier(512 // d * 7 * 7, 4096 // d, num_classes)
    _init_vgg(model.modules())
    return model


def _resnet18_mini(*, weights: None, num_classes: int) -> nn.Module:
    d = MINI_WIDTH_DIVISOR
    block = tvm.resnet.BasicBlock
    with shapes_only():  # every layer is replaced below
        model = tvm.ResNet(block, [2, 2, 2, 2], num_classes=num_classes)
    model.inplanes = 64 // d  # what ResNet._make_layer reads as the next block's input width
    model.conv1 = nn.Conv2d(3, model.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(model.inplanes)
    model.layer1 = model._make_layer(block, 64 // d, 2)
    model.layer2 = model._make_layer(block, 128 // d, 2, stride=2)
    model.layer3 = model._make_layer(block, 256 // d, 2, stride=2)
    model.layer4 = model._make_layer(block, 512 // d, 2, stride=2)
    model.fc = nn.Linear(512 // d, num_classes)
    for m in model.modules():  # torchvision's ResNet init
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": tvm.vgg16,
    "vgg16_bn": tvm.vgg16_bn,
    "resnet18": tvm.resnet18,
    "resnet50": tvm.resnet50,
    "vgg16_bn_cifar": _vgg16_bn_cifar,
    "resnet18_cifar": _resnet_cifar(tvm.resnet18),
    "resnet50_cifar": _resnet_cifar(tvm.resnet50),
    "vgg16_mini": _vgg16_mini,
    "resnet18_mini": _resnet18_mini,
}

# Smallest square input: five max-pools (VGG) floor 28 px to 0, and five stride-2 stages leave a ResNet's
# BatchNorm one value per channel below 32 px; the CIFAR ResNets have three (8 px).
_MIN_INPUT = {name: 32 for name in MODELS} | {"resnet18_cifar": 8, "resnet50_cifar": 8}


class UnknownModelError(ValueError):
    """A model name that is not one of :data:`MODELS`."""


class InputTooSmallError(ValueError):
    """An input size below the model's minimum."""


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def min_input_size(name: str) -> int:
    """The smallest square input size (pixels) that ``name`` accepts."""
    _check_name(name)
    return _MIN_INPUT[name]


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    weights: str | Path | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """Build one of the study's :data:`MODELS`, in training mode on the CPU.

    Args:
        num_classes: outputs of the final linear layer.
        in_channels: channels of the input images (1 for grayscale data).
        weights: optional path to a local ImageNet state dict for this architecture (loaded with
            ``weights_only=True``); layers whose shape differs (classifier, first conv for non-RGB
            data) keep their random initialisation.
        input_size: if given, checked against :func:`min_input_size`, so a too-small input fails here
            rather than deep inside the forward pass.
    """
    _check_name(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be at least 1, got {in_channels}")
    if input_size is not None and input_size < _MIN_INPUT[name]:
        raise InputTooSmallError(
            f"{name} needs inputs of at least {_MIN_INPUT[name]} x {_MIN_INPUT[name]} px, got "
            f"{input_size} px; pad or resize the images (helpers.data pads to the model's minimum)"
        )
    model = _BUILDERS[name](weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    if weights is not None:
        _load_local_weights(model, Path(weights), name)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    if isinstance(model, tvm.VGG):
        old = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    else:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)


def _load_local_weights(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} not found; pass the path of a torchvision ImageNet state dict for {name} "
            f"(for example from torchvision's model zoo, downloaded on a machine with access), or weights=None"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"weights file {path} could not be read as a state dict ({exc}); is it corrupt?") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"weights file {path} has no tensor matching {name}'s layers; is it for another architecture?")
    model.load_state_dict(usable, strict=False)
