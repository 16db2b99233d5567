"""Tests of helpers.transforms: statistics, padding, resizing, normalisation and augmentation."""

from __future__ import annotations

import pytest
import torch

from helpers.transforms import augment_batch, channel_stats, normalize, pad_to_min_size, prepare_images


def random_uint8(n=6, c=3, h=28, w=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_channel_stats_match_float_computation():
    images = random_uint8(c=3)
    images[:, 1] //= 4  # channels with different statistics
    mean, std = channel_stats(images)
    x = images.double() / 255
    torch.testing.assert_close(mean, x.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, x.std(dim=(0, 2, 3), unbiased=False).float(), atol=1e-6, rtol=1e-5)
    assert mean.shape == (3,) and mean.dtype == torch.float32


def test_channel_stats_constant_channel_gets_unit_std():
    images = torch.full((4, 1, 5, 5), 100, dtype=torch.uint8)
    mean, std = channel_stats(images)
    torch.testing.assert_close(mean, torch.tensor([100 / 255]))
    torch.testing.assert_close(std, torch.tensor([1.0]))


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.uint8)])
def test_channel_stats_rejects_non_uint8_or_wrong_rank(bad):
    with pytest.raises((TypeError, ValueError)):
        channel_stats(bad)


def test_normalisation_gives_zero_mean_unit_std():
    images = random_uint8(n=16, c=3, h=32, w=32)
    mean, std = channel_stats(images)
    x = prepare_images(images, min_size=32, mean=mean, std=std)
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_padding_to_32_centres_the_image():
    images = random_uint8(n=3, c=3, h=28, w=28)
    mean, std = channel_stats(images)
    x = prepare_images(images, min_size=32, mean=mean, std=std)
    assert x.shape == (3, 3, 32, 32)
    inner = normalize(images.float() / 255, mean, std)
    torch.testing.assert_close(x[:, :, 2:30, 2:30], inner)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.count_nonzero(x[:, :, border]) == 0  # padding is 0 = the mean after normalising


def test_padding_odd_difference_and_large_images_untouched():
    x = torch.ones(1, 1, 5, 40)
    y = pad_to_min_size(x, 8)
    assert y.shape == (1, 1, 8, 40)
    assert y[0, 0, :, 0].tolist() == [0, 1, 1, 1, 1, 1, 0, 0]  # 1 above, 2 below
    assert pad_to_min_size(x, 4) is x


def test_digits_size_images_pad_to_32():
    images = random_uint8(n=2, c=1, h=8, w=8)
    x = prepare_images(images, min_size=32, mean=[0.5], std=[0.25])
    assert x.shape == (2, 1, 32, 32)
    torch.testing.assert_close(x[:, :, 12:20, 12:20], (images.float() / 255 - 0.5) / 0.25)


def test_resize_to_size():
    images = torch.full((2, 3, 28, 28), 128, dtype=torch.uint8)
    x = prepare_images(images, min_size=32, mean=[0.5] * 3, std=[0.5] * 3, size=64)
    assert x.shape == (2, 3, 64, 64)
    torch.testing.assert_close(x, torch.full_like(x, (128 / 255 - 0.5) / 0.5))


def test_prepare_images_errors():
    images = random_uint8()
    with pytest.raises(ValueError, match="below the model's minimum"):
        prepare_images(images, min_size=32, mean=[0.5] * 3, std=[0.5] * 3, size=16)
    with pytest.raises(ValueError, match="3 channels"):
        prepare_images(images, min_size=32, mean=[0.5], std=[0.5])
    with pytest.raises(TypeError, match="uint8"):
        prepare_images(images.float(), min_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ValueError, match="std must be positive"):
        prepare_images(images, min_size=32, mean=[0.5] * 3, std=[0.5, 0.0, 0.5])


def test_augment_deterministic_for_generator():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = augment_batch(x, generator=torch.Generator().manual_seed(7), rotation_degrees=15)
    b = augment_batch(x, generator=torch.Generator().manual_seed(7), rotation_degrees=15)
    c = augment_batch(x, generator=torch.Generator().manual_seed(8), rotation_degrees=15)
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_augment_flip_only_flips_or_keeps_each_image():
    x = torch.randn(32, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    original = x.clone()
    y = augment_batch(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x, original)  # input untouched
    flipped = [torch.equal(yi, xi.flip(-1)) for xi, yi in zip(x, y)]
    kept = [torch.equal(yi, xi) for xi, yi in zip(x, y)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 32


def test_augment_no_op_without_flip_and_rotation():
    x = torch.randn(4, 3, 8, 8)
    y = augment_batch(x, generator=torch.Generator(), hflip=False, rotation_degrees=0.0)
    torch.testing.assert_close(y, x)
    assert y is not x


def test_augment_rotation_small_angle_keeps_centre():
    x = torch.zeros(4, 1, 33, 33)
    x[:, :, 12:21, 12:21] = 1.0
    y = augment_batch(x, generator=torch.Generator().manual_seed(0), hflip=False, rotation_degrees=10)
    torch.testing.assert_close(y[:, :, 16, 16], torch.ones(4, 1))
    assert not torch.equal(y, x)
    assert y.sum(dim=(1, 2, 3)).sub(81).abs().max() < 8  # area roughly preserved


def test_augment_errors():
    with pytest.raises(TypeError, match="float tensor"):
        augment_batch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), generator=torch.Generator())
    with pytest.raises(TypeError, match="Generator"):
        augment_batch(torch.zeros(2, 3, 4, 4), generator=0)
    with pytest.raises(ValueError, match="rotation_degrees"):
        augment_batch(torch.zeros(2, 3, 4, 4), generator=torch.Generator(), rotation_degrees=-5)
