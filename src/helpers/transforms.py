"""Tensor transforms for the study's images: statistics, normalisation, padding / resizing, augmentation.

Every function works on whole batches (``N x C x H x W``), never on per-item PIL images, so preparing a
dataset is one vectorised pass and augmentation one call per batch. The study's pipeline:
:func:`channel_stats` of the *training* split (in ``[0, 1]`` units, as torchvision's ``Normalize``
expects), :func:`prepare_images` once per split, and :func:`augment_batch` on training batches, drawn
from an explicit ``torch.Generator`` so that a run is reproducible. A dataset too large to prepare whole
(the full MVTec set: 100,000 images at 224 px, 60 GB as float32) is wrapped in :class:`StreamedImages`,
which applies the same conversion one batch at a time, moving uint8 rows (a quarter of the float bytes)
to the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "augmenter",
    "channel_stats", "normalize", "pad_to_min_size", "resize_images", "prepare_images", "prepared_shape",
    "StreamedImages", "augment_batch",
]  # fmt: skip

# Images per chunk when reducing or converting large uint8 datasets (bounds the float32 temporaries).
_CHUNK = 4096


def _check_uint8_images(images: torch.Tensor, what: str = "images") -> None:
    """A uint8 tensor ``N x C x H x W``, or an object indexed like one (``helpers.data.DiskImages``)."""
    if not isinstance(images, torch.Tensor) and not (hasattr(images, "shape") and hasattr(images, "__getitem__")):
        raise TypeError(f"{what} must be a torch.Tensor of shape N x C x H x W, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"{what} must be uint8 (0..255), got {images.dtype}; pass the Split's images as loaded")
    if images.ndim != 4:
        raise ValueError(f"{what} must have shape N x C x H x W, got shape {tuple(images.shape)}")


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)`` of uint8 images ``N x C x H x W`` (normally the training split) in
    ``[0, 1]`` units, as float32 tensors ``[C]``; computed in float64 chunk by chunk (no float copy of the
    whole set). A constant channel gets std 1, so normalising by it is a no-op, not a division by zero.
    """
    _check_uint8_images(images)
    n, c = images.shape[:2]
    if n == 0:
        raise ValueError("cannot compute channel statistics of an empty set of images (N = 0)")
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK].to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.to(torch.float32), std.to(torch.float32)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for a float batch ``N x C x H x W`` in ``[0, 1]`` units."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mean_t.shape[1] != x.shape[1] or std_t.shape[1] != x.shape[1]:
        raise ValueError(
            f"mean/std have {mean_t.shape[1]}/{std_t.shape[1]} entries but the images have {x.shape[1]} channels; "
            "compute them with channel_stats on the same dataset"
        )
    if bool((std_t <= 0).any()):
        raise ValueError(f"std must be positive, got {std_t.flatten().tolist()}")
    return (x - mean_t) / std_t


def pad_to_min_size(x: torch.Tensor, min_size: int, value: float = 0.0) -> torch.Tensor:
    """Pad height and width of ``x`` (``N x C x H x W``) with ``value``, centred, up to ``min_size``; a
    dimension already that large is left alone, and an odd difference puts the extra pixel bottom / right."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, min_size - h), max(0, min_size - w)
    if pad_h == 0 and pad_w == 0:
        return x
    top, left = pad_h // 2, pad_w // 2
    return F.pad(x, (left, pad_w - left, top, pad_h - top), value=value)


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a float batch to ``size`` (an int for square) with antialiased bilinear interpolation."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def prepare_images(
    images: torch.Tensor,
    *,
    min_size: int,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int | None = None,
) -> torch.Tensor:
    """Convert uint8 images ``N x C x H x W`` once into the float32 batch a model consumes.

    Steps: scale to ``[0, 1]``; resize to ``size x size`` if ``size`` is given (at least ``min_size``);
    normalise with the per-channel ``mean`` / ``std`` in ``[0, 1]`` units (:func:`channel_stats` of the
    training split); zero-pad (centred) up to ``min_size``, the model's smallest input
    (``helpers.models.min_input_size``), giving ``N x C x H' x W'`` with ``H', W' >= min_size``. Zero in
    normalised space is the training mean, so the model sees a neutral frame rather than a black one.
    """
    _check_uint8_images(images)
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
        raise ValueError(f"min_size must be a positive int, got {min_size!r}")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if size < min_size:
            raise ValueError(
                f"size {size} is below the model's minimum input {min_size}; use size >= {min_size} or size=None "
                "(pad to the minimum)"
            )
    chunks = []
    for start in range(0, images.shape[0], _CHUNK):
        chunks.append(_prepare_batch(images[start : start + _CHUNK], min_size=min_size, mean=mean, std=std, size=size))
    if not chunks:  # N == 0: keep the output shape consistent
        return torch.empty(prepared_shape(images.shape, min_size, size), dtype=torch.float32)
    return torch.cat(chunks) if len(chunks) > 1 else chunks[0]


def _prepare_batch(
    batch: torch.Tensor,
    *,
    min_size: int,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    size: int | None = None,
) -> torch.Tensor:
    """One uint8 batch to float32: the element-wise steps of :func:`prepare_images`, on ``batch``'s device."""
    x = batch.to(torch.float32).div_(255.0)
    if size is not None:
        x = resize_images(x, size).clamp_(0.0, 1.0)
    x = normalize(x, mean, std)
    return pad_to_min_size(x, min_size, value=0.0)


def prepared_shape(images_shape: Sequence[int], min_size: int, size: int | None = None) -> tuple[int, int, int, int]:
    """The shape :func:`prepare_images` gives uint8 images of shape ``images_shape``."""
    n, c, h, w = (int(v) for v in images_shape)
    if size is not None:
        h = w = size
    return n, c, max(h, min_size), max(w, min_size)


class StreamedImages:
    """A split's images prepared one batch at a time; indexed like the tensor :func:`prepare_images` makes.

    ``streamed[index]`` (an int, a slice, or an index tensor / array) reads those uint8 rows from
    ``images`` (a tensor or a ``helpers.data.DiskImages`` view of the decoded file), moves them to
    ``device`` as uint8 and converts them there exactly as :func:`prepare_images` does (on the same
    device the values are identical). Only the batch asked for is held.

    Args:
        images: uint8 images ``N x C x H x W`` (tensor) or an object indexed like one.
        min_size, mean, std, size: as for :func:`prepare_images`.
        device: where batches are returned.
    """

    dtype = torch.float32
    ndim = 4

    def __init__(
        self,
        images: torch.Tensor,
        *,
        min_size: int,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        size: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        _check_uint8_images(images)
        self.images = images
        self.min_size, self.size = int(min_size), size
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten()
        self.device = torch.device(device)
        self._mean, self._std = self.mean.to(self.device), self.std.to(self.device)
        self.shape = torch.Size(prepared_shape(images.shape, self.min_size, size))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, int):
            return self[[index + len(self) if index < 0 else index]][0]
        if isinstance(index, torch.Tensor):
            index = index.cpu()  # the rows live on the CPU
        batch = self.images[index]
        if self.device.type != "cpu":
            batch = batch.to(self.device, non_blocking=batch.is_pinned())
        return _prepare_batch(batch, min_size=self.min_size, mean=self._mean, std=self._std, size=self.size)

    def to(self, device: torch.device | str) -> "StreamedImages":
        """The same images, returned on ``device``."""
        return StreamedImages(
            self.images, min_size=self.min_size, mean=self.mean, std=self.std, size=self.size, device=device
        )

    def cpu(self) -> "StreamedImages":
        """The same images, returned on the CPU."""
        return self.to("cpu")


def augment_batch(
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    hflip: bool = True,
    rotation_degrees: float = 0.0,
) -> torch.Tensor:
    """Randomly flip and rotate each image of a float batch ``x`` ``N x C x H x W`` (normally from
    :func:`prepare_images`) into a new tensor of the same shape, dtype and device.

    Each image is flipped horizontally with probability 0.5 (if ``hflip``) and rotated by an angle drawn
    uniformly from ``[-rotation_degrees, rotation_degrees]`` (0: no rotation) about its centre (bilinear,
    zero fill: torchvision's ``RandomRotation``, batched). The random numbers come from ``generator``
    (drawn on its device, then moved; its state advances), so the same generator state gives the same
    batch on any device.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"augment_batch expects a float tensor N x C x H x W, got {got}; run prepare_images first")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if rotation_degrees < 0 or not math.isfinite(rotation_degrees):
        raise ValueError(f"rotation_degrees must be a finite number >= 0, got {rotation_degrees!r}")
    n = x.shape[0]
    out = x
    gen_device = generator.device
    if hflip and n > 0:
        flip = (torch.rand(n, generator=generator, device=gen_device) < 0.5).to(x.device)
        out = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if rotation_degrees > 0 and n > 0:
        u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
        angle = ((u * 2.0 - 1.0) * math.radians(rotation_degrees)).to(device=x.device, dtype=x.dtype)
        cos, sin = angle.cos(), angle.sin()
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1)
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clone() if out is x else out


def augmenter(options: Mapping[str, Any]) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    """The training loop's ``augment`` for a study's ``augment`` options (``hflip``, ``rotation_degrees``):
    :func:`augment_batch` with them, or ``None`` when both are off."""
    if not options["hflip"] and options["rotation_degrees"] == 0:
        return None

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(x, generator=generator, hflip=options["hflip"], rotation_degrees=options["rotation_degrees"])

    return augment
