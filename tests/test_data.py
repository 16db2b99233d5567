"""Tests of helpers.data: every dataset's real on-disk format (tiny fixtures), splits and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

import helpers.data as data
from data_fixtures import (
    SHARED_DATA,
    bloodmnist_npz_bytes,
    build_cifar,
    build_coco,
    build_image_folder,
    build_visa,
    cifar_md5_table,
    label_level,
    md5_bytes,
    tar_gz_bytes,
    write_csv,
    write_wheel,
)
from helpers.data import (
    BLOODMNIST_CLASSES,
    DATASETS,
    ChecksumError,
    DatasetNotFoundError,
    Split,
    UnknownDatasetError,
    UnknownOptionError,
    load_splits,
    stratified_split,
    stratified_subset,
)

_ENV_VARS = ("MEDMNIST_ROOT", "VISA_ROOT", "MVTEC3D_CLS_ROOT", "CIFAR_ROOT", "PRUNING_STUDY_DATA", "PRUNING_STUDY_CACHE")


def _left_in(root: Path) -> list[str]:
    """What a failed fetch left in ``root``, besides the isolated HOME (a library may make its cache there)."""
    return [p.name for p in root.iterdir() if p.name != "home"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads the user's home, data folders or the network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PRUNING_STUDY_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(data.fetch, "download_url", no_network)
    monkeypatch.setattr(data.fetch, "pip_download", no_network)
    data.fetch._VERIFIED.clear()


def assert_split(split: Split, channels: int, size: int, classes) -> None:
    assert split.images.dtype == torch.uint8
    assert split.labels.dtype == torch.int64
    assert split.images.ndim == 4 and split.images.shape[1:] == (channels, size, size)
    assert split.labels.shape == (split.images.shape[0],)
    assert split.classes == list(classes)


def assert_label_colours(split: Split) -> None:
    """Fixture images carry their label as grey level: images and labels must stay aligned."""
    means = split.images.float().mean(dim=(1, 2, 3))
    expected = torch.tensor([label_level(int(y)) for y in split.labels], dtype=torch.float32)
    torch.testing.assert_close(means, expected, atol=6.0, rtol=0)


# ------------------------------------------------------------------------------------------ general


def test_unknown_dataset_names_valid_ones():
    with pytest.raises(UnknownDatasetError) as err:
        load_splits("bloodmnst")
    msg = str(err.value)
    assert "bloodmnst" in msg
    for name in DATASETS:
        assert name in msg


def test_unknown_option_names_it_and_accepted_ones():
    with pytest.raises(UnknownOptionError) as err:
        load_splits("digits", train_subest=10)
    msg = str(err.value)
    assert "train_subest" in msg and "train_subset" in msg and "max_samples" in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, TypeError)


@pytest.mark.parametrize("value", [0, -3, 2.5, "10", True])
def test_bad_subset_value_is_rejected(value):
    with pytest.raises(ValueError, match="train_subset"):
        load_splits("digits", train_subset=value)


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        load_splits("digits", seed=seed)


def test_stratified_split_covers_every_index_once_in_proportion():
    labels = np.repeat(np.arange(4), [40, 20, 10, 30])
    parts = stratified_split(labels, [0.7, 0.2, 0.1], seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    for part, frac in zip(parts, [0.7, 0.2, 0.1]):
        counts = np.bincount(labels[part], minlength=4)
        np.testing.assert_allclose(counts, frac * np.array([40, 20, 10, 30]), atol=1.5)
    assert [len(p) for p in parts] == [70, 20, 10]
    again = stratified_split(labels, [0.7, 0.2, 0.1], seed=3)
    other = stratified_split(labels, [0.7, 0.2, 0.1], seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_stratified_split_exact_sizes_with_tiny_classes():
    labels = np.repeat(np.arange(50), 2)  # two items per class, three parts
    parts = stratified_split(labels, [0.7, 0.2, 0.1], seed=0)
    assert [len(p) for p in parts] == [70, 20, 10]
    held_out = labels[np.concatenate(parts[1:])]
    assert np.bincount(held_out, minlength=50).max() == 1  # no class loses both items to val/test


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split([0, 1, 0, 1], [0.5, 0.4], seed=0)


def test_stratified_subset_keeps_every_class_and_proportions():
    labels = np.repeat(np.arange(3), [90, 9, 1])
    idx = stratified_subset(labels, 10, seed=0)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert set(labels[idx].tolist()) == {0, 1, 2}
    assert np.array_equal(idx, stratified_subset(labels, 10, seed=0))
    assert len(stratified_subset(labels, 1000, seed=0)) == 100


def test_split_validates_its_fields():
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a", "b"])
    with pytest.raises(ValueError, match="int64"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"])
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        Split(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"])


# ------------------------------------------------------------------------------------------ digits


def test_digits_splits_are_stratified_and_disjoint():
    splits = load_splits("digits")
    assert set(splits) == {"train", "val", "test"}
    total = sum(len(s) for s in splits.values())
    assert total == 1797
    for s in splits.values():
        assert_split(s, 1, 8, [str(i) for i in range(10)])
    assert abs(len(splits["train"]) - 0.70 * total) <= 10
    assert abs(len(splits["val"]) - 0.15 * total) <= 10
    counts = np.array(splits["val"].class_counts())
    assert counts.min() >= 25 and counts.max() <= 29  # ~180 per class x 0.15
    assert int(splits["train"].images.max()) == 255  # 0..16 scaled to 0..255
    # Disjoint: no image row appears in two splits (digits has a few exact duplicates; compare sets by index).
    rows = {k: {bytes(r.numpy().tobytes()) + bytes([int(y)]) for r, y in zip(s.images, s.labels)} for k, s in splits.items()}
    assert len(rows["train"] & rows["test"]) <= 2


def test_digits_deterministic_for_seed_and_differs_across_seeds():
    a, b, c = load_splits("digits", seed=1), load_splits("digits", seed=1), load_splits("digits", seed=2)
    torch.testing.assert_close(a["train"].images, b["train"].images)
    torch.testing.assert_close(a["test"].labels, b["test"].labels)
    assert not torch.equal(a["train"].labels, c["train"].labels)


def test_digits_train_subset_and_max_samples():
    splits = load_splits("digits", train_subset=50, test_subset=20)
    assert len(splits["train"]) == 50 and len(splits["test"]) == 20
    assert sorted(set(splits["train"].labels.tolist())) == list(range(10))
    small = load_splits("digits", max_samples=200)
    assert sum(len(s) for s in small.values()) == 200
    assert all(c >= 1 for c in small["test"].class_counts())


def test_digits_size_resizes_at_load():
    splits = load_splits("digits", size=16)
    assert splits["train"].images.shape[1:] == (1, 16, 16)
    assert splits["train"].images.dtype == torch.uint8


# ------------------------------------------------------------------------------------------ bloodmnist


@pytest.fixture
def blood_bytes(monkeypatch):
    payload = bloodmnist_npz_bytes()
    monkeypatch.setitem(data.BLOODMNIST_MD5, 28, md5_bytes(payload))
    return payload


def test_bloodmnist_from_root(tmp_path, blood_bytes):
    (tmp_path / "bloodmnist.npz").write_bytes(blood_bytes)
    splits = load_splits("bloodmnist", root=tmp_path)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [40, 8, 16]
    for s in splits.values():
        assert_split(s, 3, 28, BLOODMNIST_CLASSES)
    # Labels come from the (N, 1) uint8 array, flattened; channel 1 of each fixture image is its label.
    torch.testing.assert_close(splits["train"].images[:, 1, 0, 0].long(), splits["train"].labels)
    torch.testing.assert_close(splits["val"].images[:, 0, 0, 0].long(), torch.arange(8))


def test_bloodmnist_search_order_root_then_env_then_home(tmp_path, monkeypatch, blood_bytes):
    env_dir, home_dir = tmp_path / "env", tmp_path / "home" / ".medmnist"
    for d in (env_dir, home_dir):
        d.mkdir(parents=True)
        (d / "bloodmnist.npz").write_bytes(blood_bytes)
    assert len(load_splits("bloodmnist")["train"]) == 40  # ~/.medmnist
    monkeypatch.setenv("MEDMNIST_ROOT", str(env_dir))
    (home_dir / "bloodmnist.npz").write_bytes(b"corrupt")  # would fail if looked at first
    assert len(load_splits("bloodmnist")["train"]) == 40
    (env_dir / "bloodmnist.npz").write_bytes(b"corrupt")
    with pytest.raises(ChecksumError):
        load_splits("bloodmnist")
    root = tmp_path / "root"
    root.mkdir()
    (root / "bloodmnist.npz").write_bytes(blood_bytes)
    assert len(load_splits("bloodmnist", root=root)["train"]) == 40


def test_bloodmnist_wrong_checksum_is_rejected_and_kept(tmp_path, blood_bytes):
    path = tmp_path / "bloodmnist.npz"
    path.write_bytes(blood_bytes[:-10] + b"0123456789")
    with pytest.raises(ChecksumError) as err:
        load_splits("bloodmnist", root=tmp_path)
    assert str(path) in str(err.value) and data.BLOODMNIST_MD5[28] in str(err.value)
    assert path.read_bytes()[-10:] == b"0123456789"  # the user's file is not deleted


@pytest.mark.parametrize("size", [27, 32, 256])
def test_bloodmnist_bad_size_lists_valid_sizes(tmp_path, size):
    with pytest.raises(ValueError) as err:
        load_splits("bloodmnist", root=tmp_path, size=size)
    assert all(str(s) in str(err.value) for s in (28, 64, 128, 224))
    assert str(size) in str(err.value)


def test_bloodmnist_missing_without_download_says_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("bloodmnist", root=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "bloodmnist.npz") in msg and ".medmnist" in msg
    assert "bloodmnist.npz" in msg and "http" in msg and "download=False" in msg


def test_bloodmnist_download_is_verified_and_atomic(tmp_path, monkeypatch, blood_bytes):
    calls = []

    def fake_download(url, dest):
        calls.append((url, dest))
        assert dest.parent == tmp_path and dest.name != "bloodmnist.npz"  # never the final name
        dest.write_bytes(blood_bytes)

    monkeypatch.setattr(data.fetch, "download_url", fake_download)
    splits = load_splits("bloodmnist", root=tmp_path)
    assert len(splits["test"]) == 16
    assert "bloodmnist.npz" in calls[0][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bloodmnist.npz"]


def test_bloodmnist_download_uses_medmnist_url_per_size(tmp_path, monkeypatch):
    payload = bloodmnist_npz_bytes(counts=(8, 8, 8), size=64)
    monkeypatch.setitem(data.BLOODMNIST_MD5, 64, md5_bytes(payload))
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        dest.write_bytes(payload)

    monkeypatch.setattr(data.fetch, "download_url", fake_download)
    splits = load_splits("bloodmnist", root=tmp_path, size=64)
    assert splits["train"].images.shape[1:] == (3, 64, 64)
    from medmnist.info import INFO

    assert urls == [INFO["bloodmnist"]["url_64"]]
    assert (tmp_path / "bloodmnist_64.npz").is_file()


def test_bloodmnist_partial_download_leaves_nothing(tmp_path, monkeypatch, blood_bytes):
    def broken_download(url, dest):
        dest.write_bytes(blood_bytes[:100])
        raise ConnectionResetError("connection dropped")

    monkeypatch.setattr(data.fetch, "download_url", broken_download)
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("bloodmnist", root=tmp_path)
    assert "connection dropped" in str(err.value)
    assert _left_in(tmp_path) == []


def test_bloodmnist_wrong_download_is_discarded(tmp_path, monkeypatch, blood_bytes):
    monkeypatch.setattr(data.fetch, "download_url", lambda url, dest: dest.write_bytes(b"<html>not the file</html>"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("bloodmnist", root=tmp_path)
    assert "MD5" in str(err.value)
    assert _left_in(tmp_path) == []


def test_bloodmnist_wheel_fallback(tmp_path, monkeypatch, blood_bytes):
    requested = []

    def fake_pip(requirement, dest_dir, python_version):
        requested.append((requirement, python_version))
        return write_wheel(dest_dir / "kosmos_core-0.6.2-py3-none-any.whl", data.BLOODMNIST_WHEEL["member"], blood_bytes)

    monkeypatch.setattr(data.fetch, "pip_download", fake_pip)
    root = tmp_path / "root"
    splits = load_splits("bloodmnist", root=root)
    assert len(splits["train"]) == 40
    assert requested == [("kosmos-core==0.6.2", "3.13")]
    assert (root / "bloodmnist.npz").read_bytes() == blood_bytes
    assert sorted(p.name for p in root.iterdir()) == ["bloodmnist.npz"]


def test_bloodmnist_wheel_with_wrong_file_is_rejected(tmp_path, monkeypatch, blood_bytes):
    other = bloodmnist_npz_bytes(seed=1)
    monkeypatch.setattr(
        data.fetch,
        "pip_download",
        lambda req, dest_dir, pv: write_wheel(dest_dir / "k.whl", data.BLOODMNIST_WHEEL["member"], other),
    )
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("bloodmnist", root=tmp_path)
    msg = str(err.value)
    assert "kosmos-core==0.6.2" in msg and "MD5" in msg
    assert _left_in(tmp_path) == []


def test_bloodmnist_wheel_without_member_is_rejected(tmp_path, monkeypatch, blood_bytes):
    monkeypatch.setattr(
        data.fetch, "pip_download", lambda req, dest_dir, pv: write_wheel(dest_dir / "k.whl", "other/file.npz", blood_bytes)
    )
    with pytest.raises(DatasetNotFoundError, match="no member"):
        load_splits("bloodmnist", root=tmp_path)


def test_bloodmnist_every_route_failing_names_all(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("bloodmnist", root=tmp_path)
    msg = str(err.value)
    from medmnist.info import INFO

    assert INFO["bloodmnist"]["url"] in msg  # route 1
    assert "kosmos-core==0.6.2" in msg  # route 2
    assert str(tmp_path / "bloodmnist.npz") in msg  # searched / where to put it
    assert msg.count("network disabled") == 2


def test_bloodmnist_larger_sizes_have_no_wheel_route(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="only for 28"):
        load_splits("bloodmnist", root=tmp_path, size=128)


def test_pip_download_runs_pip_and_returns_the_wheel(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, capture_output, text):
        seen["cmd"] = cmd
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "kosmos_core-0.6.2-py3-none-any.whl").write_bytes(b"zip")
        return __import__("subprocess").CompletedProcess(cmd, 0, "", "")

    monkeypatch.undo()  # restore the real _pip_download (the autouse fixture replaced it)
    monkeypatch.setattr(data.fetch.subprocess, "run", fake_run)
    wheel = data.fetch.pip_download("kosmos-core==0.6.2", tmp_path, "3.13")
    assert wheel.name.endswith(".whl")
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.13" and cmd[-1] == "kosmos-core==0.6.2"


def test_pip_download_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.undo()
    monkeypatch.setattr(
        data.fetch.subprocess, "run", lambda cmd, **kw: __import__("subprocess").CompletedProcess(cmd, 1, "", "ERROR: no match")
    )
    with pytest.raises(OSError, match="no match"):
        data.fetch.pip_download("kosmos-core==0.6.2", tmp_path, "3.13")


def test_bloodmnist_max_samples_shrinks_splits_in_proportion(tmp_path, blood_bytes):
    (tmp_path / "bloodmnist.npz").write_bytes(blood_bytes)
    splits = load_splits("bloodmnist", root=tmp_path, max_samples=32, train_subset=16)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 4, 8]
    assert sorted(set(splits["train"].labels.tolist())) == list(range(8))


_REAL_BLOOD = SHARED_DATA / "bloodmnist.npz"


@pytest.mark.skipif(not _REAL_BLOOD.is_file(), reason="reference BloodMNIST file not present")
def test_real_bloodmnist_official_splits():
    splits = load_splits("bloodmnist", root=SHARED_DATA, download=False)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [11959, 1712, 3421]
    for s in splits.values():
        assert_split(s, 3, 28, BLOODMNIST_CLASSES)
    assert len(BLOODMNIST_CLASSES) == 8
    assert sorted(set(splits["test"].labels.tolist())) == list(range(8))


@pytest.mark.skipif(not _REAL_BLOOD.is_file(), reason="reference BloodMNIST file not present")
def test_real_bloodmnist_md5_matches_medmnist_metadata():
    from medmnist.info import INFO

    assert data.file_md5(_REAL_BLOOD) == INFO["bloodmnist"]["MD5"] == data.BLOODMNIST_MD5[28]
    for size in (64, 128, 224):
        assert INFO["bloodmnist"][f"MD5_{size}"] == data.BLOODMNIST_MD5[size]


# ------------------------------------------------------------------------------------------ visa


@pytest.fixture
def visa_root(tmp_path):
    root = tmp_path / "VisA_20220922"
    info = build_visa(root)
    return root, info


def test_visa_paper_split(visa_root, tmp_path):
    root, _ = visa_root
    splits = load_splits("visa", root=root, objects=["candle", "pcb1"], size=32, cache_dir=tmp_path / "c")
    for s in splits.values():
        assert_split(s, 3, 32, ["normal", "anomaly"])
        assert_label_colours(s)
    assert splits["val"] is splits["test"]  # the paper's held-out 20 % serves as both
    # 2 objects x (20 normal, 10 anomaly): 80 % of each stratum.
    assert len(splits["train"]) == 48 and len(splits["test"]) == 12
    assert splits["train"].class_counts() == [32, 16]
    again = load_splits("visa", root=root, objects=["pcb1", "candle"], size=32, cache=False)
    torch.testing.assert_close(again["train"].labels, splits["train"].labels)
    torch.testing.assert_close(again["train"].images, splits["train"].images)


def test_visa_found_under_shared_data_root(visa_root, tmp_path):
    root, _ = visa_root
    parent = root.parent
    (parent / "VisA_20220922").rename(parent / "visa")
    splits = load_splits("visa", root=parent, objects=["candle"], size=16, cache=False)
    assert len(splits["train"]) == 24


def test_visa_official_csv_split(visa_root):
    root, info = visa_root
    splits = load_splits("visa", root=root, objects=["candle", "pcb1"], split="2cls_highshot", size=24, cache=False)
    assert len(splits["test"]) == info["test"]
    assert len(splits["train"]) + len(splits["val"]) == info["train"]
    assert len(splits["val"]) >= 2 and set(splits["val"].labels.tolist()) == {0, 1}
    for s in splits.values():
        assert_label_colours(s)
    same = load_splits("visa", root=root, objects=["candle", "pcb1"], split="2cls_highshot", size=24, val_fraction=0, cache=False)
    assert same["val"] is same["test"] and len(same["train"]) == info["train"]


def test_visa_csv_path_and_objects_filter(visa_root):
    root, info = visa_root
    csv_path = root / "split_csv" / "2cls_highshot.csv"
    splits = load_splits("visa", root=root, objects=["pcb1"], split=str(csv_path), size=16, val_fraction=0, cache=False)
    assert len(splits["train"]) + len(splits["test"]) == 30


def test_visa_one_class_split_is_rejected(visa_root):
    root, _ = visa_root
    with pytest.raises(ValueError, match="only one class"):
        load_splits("visa", root=root, objects=["candle", "pcb1"], split="1cls", size=16, cache=False)


def test_visa_unknown_split_lists_available(visa_root):
    root, _ = visa_root
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("visa", root=root, objects=["candle"], split="2cls_midshot", cache=False)
    msg = str(err.value)
    assert "2cls_midshot" in msg and "paper" in msg and "2cls_highshot" in msg and "spot-diff" in msg


def test_visa_bad_csv_header_and_values(visa_root):
    root, info = visa_root
    write_csv(root / "split_csv" / "bad.csv", info["rows"], header=("object", "set", "label", "image", "mask"))
    with pytest.raises(ValueError, match="header"):
        load_splits("visa", root=root, objects=["candle"], split="bad", cache=False)
    rows = [list(r) for r in info["rows"]]
    rows[3][2] = "defect"
    write_csv(root / "split_csv" / "bad2.csv", rows)
    with pytest.raises(ValueError, match="defect"):
        load_splits("visa", root=root, objects=["candle"], split="bad2", cache=False)


def test_visa_csv_with_missing_image(visa_root):
    root, info = visa_root
    (root / info["rows"][0][3]).unlink()
    with pytest.raises(DatasetNotFoundError, match="missing"):
        load_splits("visa", root=root, objects=["candle"], split="2cls_highshot", cache=False)


def test_visa_objects_errors(visa_root):
    root, _ = visa_root
    with pytest.raises(ValueError) as err:
        load_splits("visa", root=root, objects=["candel"])
    assert "candel" in str(err.value) and "pipe_fryum" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("visa", root=root)  # default: all 12 objects, the fixture has two
    assert "capsules" in str(err.value) and "objects=" in str(err.value)


def test_visa_missing_root_says_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("visa", root=tmp_path / "nowhere")
    assert "VisA_20220922.tar" in str(err.value) and "nowhere" in str(err.value)


def test_visa_paper_split_rejects_val_subset(visa_root):
    root, _ = visa_root
    with pytest.raises(ValueError, match="test_subset"):
        load_splits("visa", root=root, objects=["candle"], val_subset=3, cache=False)


def test_visa_decoded_images_are_cached(visa_root, tmp_path, monkeypatch):
    root, _ = visa_root
    cache = tmp_path / "visa-cache"
    first = load_splits("visa", root=root, objects=["candle"], size=16, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"

    def no_decode(path, size):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data.decode, "_decode_one", no_decode)
    second = load_splits("visa", root=root, objects=["candle"], size=16, cache_dir=cache)
    torch.testing.assert_close(second["train"].images, first["train"].images)
    with pytest.raises(AssertionError, match="decoded although cached"):  # another size: another key
        load_splits("visa", root=root, objects=["candle"], size=20, cache_dir=cache)


def test_visa_cache_disabled_writes_nothing(visa_root, tmp_path):
    root, _ = visa_root
    load_splits("visa", root=root, objects=["candle"], size=16, cache=False, cache_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_visa_corrupt_image_raises_checksum_error(visa_root):
    root, _ = visa_root
    (root / "candle" / "Data" / "Images" / "Normal" / "0003.JPG").write_bytes(b"not a jpeg")
    with pytest.raises(ChecksumError, match="0003.JPG"):
        load_splits("visa", root=root, objects=["candle"], size=16, cache=False)


def test_visa_max_samples_and_subsets(visa_root):
    root, _ = visa_root
    splits = load_splits("visa", root=root, objects=["candle", "pcb1"], size=16, max_samples=30, train_subset=10, cache=False)
    assert len(splits["train"]) == 10 and len(splits["test"]) == 6
    assert set(splits["train"].labels.tolist()) == {0, 1}


_REAL_VISA_CSV = SHARED_DATA / "visa_split_csv" / "2cls_highshot.csv"


@pytest.mark.skipif(not _REAL_VISA_CSV.is_file(), reason="reference VisA split files not present")
def test_real_visa_split_csv_parses():
    rows = data.visa._read_visa_csv(SHARED_DATA, str(_REAL_VISA_CSV))
    assert len(rows) == 10821
    assert {r["object"] for r in rows} == set(data.VISA_OBJECTS)
    assert sum(r["split"] == "train" and r["label"] == "anomaly" for r in rows) == 720
    assert all(r["image"].startswith(f"{r['object']}/Data/Images/") for r in rows)


# ------------------------------------------------------------------------------------------ mvtec3d_cls


def test_mvtec_image_folder_split(tmp_path):
    build_image_folder(tmp_path / "mv", per_class=20)
    splits = load_splits("mvtec3d_cls", root=tmp_path / "mv", size=32, cache=False)
    classes = ["bagel", "cable_gland", "carrot"]
    for s in splits.values():
        assert_split(s, 3, 32, classes)
        assert_label_colours(s)
    assert [len(splits[s]) for s in ("train", "test", "val")] == [42, 12, 6]  # 70 / 20 / 10
    assert splits["val"].class_counts() == [2, 2, 2]
    again = load_splits("mvtec3d_cls", root=tmp_path / "mv", size=32, cache=False)
    torch.testing.assert_close(again["test"].images, splits["test"].images)


def test_mvtec_folders_under_split_dirs_are_merged_and_resized(tmp_path):
    base = tmp_path / "mvtec3d_cls"
    build_image_folder(base / "train", per_class=7)
    build_image_folder(base / "valid", per_class=2)
    build_image_folder(base / "test", per_class=1)
    splits = load_splits("mvtec3d_cls", root=tmp_path, size=224, cache=False)  # found under <root>/mvtec3d_cls
    assert sum(len(s) for s in splits.values()) == 30
    assert splits["train"].images.shape[1:] == (3, 224, 224)
    assert_label_colours(splits["train"])


def test_mvtec_max_samples(tmp_path):
    build_image_folder(tmp_path, per_class=20)
    splits = load_splits("mvtec3d_cls", root=tmp_path, size=16, max_samples=30, cache=False)
    assert [len(splits[s]) for s in ("train", "test", "val")] == [21, 6, 3]
    assert splits["val"].class_counts() == [1, 1, 1]


def test_mvtec_coco_layout(tmp_path):
    build_coco(tmp_path / "train", per_class=10)
    build_coco(tmp_path / "valid", classes=("bagel", "carrot", "tire"), per_class=2, json_name="_annotations.coco.json")
    splits = load_splits("mvtec3d_cls", root=tmp_path, size=32, cache=False)
    for s in splits.values():
        assert_split(s, 3, 32, ["bagel", "carrot", "tire"])  # unused super-category dropped, id order
        assert_label_colours(s)
    assert sum(len(s) for s in splits.values()) == 36


def test_mvtec_coco_with_two_categories_per_image_is_rejected(tmp_path):
    coco = build_coco(tmp_path, per_class=3)
    coco["annotations"].append({"id": 999, "image_id": 0, "category_id": 3, "bbox": [0, 0, 1, 1]})
    (tmp_path / "_annotations.coco.json").write_text(__import__("json").dumps(coco))
    with pytest.raises(ValueError, match="one object per image"):
        load_splits("mvtec3d_cls", root=tmp_path, size=16, cache=False)


def test_mvtec_coco_missing_image(tmp_path):
    coco = build_coco(tmp_path, per_class=3)
    (tmp_path / coco["images"][0]["file_name"]).unlink()
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load_splits("mvtec3d_cls", root=tmp_path, size=16, cache=False)


def test_mvtec_layout_option(tmp_path):
    build_image_folder(tmp_path, per_class=4)
    with pytest.raises(ValueError, match="auto, folders or coco"):
        load_splits("mvtec3d_cls", root=tmp_path, layout="yolo")
    assert len(load_splits("mvtec3d_cls", root=tmp_path, layout="folders", size=8, cache=False)["train"]) > 0


def test_mvtec_missing_says_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits("mvtec3d_cls", root=tmp_path / "empty")
    assert "MVTEC3D_CLS_ROOT" in str(err.value) and "empty" in str(err.value)


# ------------------------------------------------------------------------------------------ cifar


@pytest.fixture(params=["cifar10", "cifar100"])
def cifar(request, tmp_path, monkeypatch):
    cls = tv_datasets.CIFAR10 if request.param == "cifar10" else tv_datasets.CIFAR100
    num_classes = 10 if request.param == "cifar10" else 100
    src = tmp_path / "src"
    build_cifar(src, cls, n_train_per_batch=200 if num_classes == 100 else 20, num_classes=num_classes)
    for attr, value in cifar_md5_table(src, cls).items():
        monkeypatch.setattr(cls, attr, value)
    return request.param, cls, src, num_classes


def test_cifar_loads_through_torchvision(cifar):
    name, cls, src, num_classes = cifar
    splits = load_splits(name, root=src)
    n_train = sum(1 for _ in cls.train_list) * (200 if num_classes == 100 else 20)
    assert len(splits["train"]) + len(splits["val"]) == n_train
    assert len(splits["val"]) == round(0.1 * n_train)
    for s in splits.values():
        assert_split(s, 3, 32, [f"class{i}" for i in range(num_classes)])
    # fixture pixels encode label % 5
    levels = torch.tensor([label_level(int(y) % 5) for y in splits["train"].labels], dtype=torch.uint8)
    torch.testing.assert_close(splits["train"].images[:, 2, 31, 31], levels)


def test_cifar_download_route(cifar, tmp_path, monkeypatch):
    name, cls, src, _ = cifar
    archive = tar_gz_bytes(src / cls.base_folder)
    monkeypatch.setattr(cls, "tgz_md5", md5_bytes(archive))
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        dest.write_bytes(archive)

    monkeypatch.setattr(data.fetch, "download_url", fake_download)
    root = tmp_path / "dl"
    splits = load_splits(name, root=root, val_fraction=0.2)
    assert urls == [cls.url]
    assert (root / cls.base_folder).is_dir() and (root / cls.filename).is_file()
    assert len(splits["test"]) == 20
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_cifar_missing_errors_name_root_and_url(cifar, tmp_path):
    name, cls, _, _ = cifar
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(name, root=tmp_path / "none", download=False)
    assert str(tmp_path / "none") in str(err.value) and cls.url in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(name, root=tmp_path / "none")  # download fails: network disabled
    assert "network disabled" in str(err.value) and cls.url in str(err.value)


def test_cifar_corrupt_files_raise_checksum_error(cifar):
    name, cls, src, _ = cifar
    with open(src / cls.base_folder / cls.test_list[0][0], "ab") as f:
        f.write(b"junk")
    with pytest.raises(ChecksumError):
        load_splits(name, root=src)


def test_cifar_bad_val_fraction(cifar):
    name, _, src, _ = cifar
    with pytest.raises(ValueError, match="val_fraction"):
        load_splits(name, root=src, val_fraction=1.5)
