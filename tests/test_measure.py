"""helpers.measure: metrics against scikit-learn, energy windows that never report 0, memory peaks, inference timing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
from torch import nn

from helpers import measure
from helpers.measure import EnergyMeter, PeakMemory, benchmark_inference, classification_metrics, count_params, macro_auc


def _confusion(y, p, k):
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 5
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k - 1, 200))  # class 4 rarely predicted
    got = classification_metrics(_confusion(y, p, k))
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, average="macro", zero_division=0)
    assert got["accuracy"] == pytest.approx(float((y == p).mean()))
    assert got["precision"] == pytest.approx(precision)
    assert got["recall"] == pytest.approx(recall)
    assert got["f1"] == pytest.approx(f1)


def test_classification_metrics_of_nothing_are_nan():
    assert all(math.isnan(v) for v in classification_metrics(np.zeros((3, 3))).values())


def test_macro_auc_matches_sklearn_and_is_nan_without_every_class():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 4
    logits = rng.normal(size=(60, 4)) + 2 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert macro_auc(y, probs) == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert math.isnan(macro_auc(y[y != 3], probs[y != 3]))
    assert macro_auc(np.array([0, 1, 0, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])) == 1.0


class _FakeZeus:
    """Stands in for ZeusMonitor: returns the given per-CPU energies for every window."""

    def __init__(self, cpu_energy, gpu_energy=None):
        self.cpu_indices = list(cpu_energy or {})
        self.gpu_indices = list(gpu_energy or {})
        self._cpu, self._gpu = cpu_energy, gpu_energy or {}

    def begin_window(self, key):
        pass

    def end_window(self, key):
        return SimpleNamespace(gpu_energy=self._gpu, cpu_energy=self._cpu or None, dram_energy=None, time=1.0)


def test_zeus_zeros_are_recorded_as_unavailable(monkeypatch):
    monkeypatch.setitem(measure._ZEUS_MONITORS, "cpu", _FakeZeus({0: 0.0}))
    meter = EnergyMeter("cpu")
    assert meter.source == "zeus-cpu-rapl"
    with meter.measure() as reading:
        pass
    assert math.isnan(reading.energy_j) and reading.source == "unavailable"


def test_zeus_readings_are_summed_over_packages(monkeypatch):
    monkeypatch.setitem(measure._ZEUS_MONITORS, "cpu", _FakeZeus({0: 2.5, 1: 1.5}))
    with EnergyMeter("cpu").measure() as reading:
        pass
    assert reading.energy_j == 4.0 and reading.source == "zeus-cpu-rapl"


def test_no_meter_gives_nan_never_zero(monkeypatch):
    monkeypatch.setitem(measure._ZEUS_MONITORS, "cpu", _FakeZeus({}))
    meter = EnergyMeter("cpu")
    assert meter.source == "unavailable"
    with meter.measure() as reading:
        sum(range(1000))
    assert math.isnan(reading.energy_j) and reading.source == "unavailable" and reading.time_s >= 0


def test_estimate_is_labelled(monkeypatch):
    monkeypatch.setitem(measure._ZEUS_MONITORS, "cpu", _FakeZeus({}))
    meter = EnergyMeter("cpu", estimate=True)
    assert meter.source == "estimate-codecarbon-cpu"
    with meter.measure() as reading:
        torch.randn(300, 300) @ torch.randn(300, 300)
    assert reading.source in ("estimate-codecarbon-cpu", "unavailable")
    assert (reading.source == "unavailable") == math.isnan(reading.energy_j)
    assert reading.energy_j != 0


def test_this_machine_never_reports_a_bare_zero():
    with EnergyMeter("cpu").measure() as reading:
        sum(range(10000))
    assert reading.energy_j > 0 if reading.source != "unavailable" else math.isnan(reading.energy_j)


def test_peak_memory_sees_a_transient_allocation():
    with PeakMemory("cpu") as baseline:
        pass
    with PeakMemory("cpu") as peak:
        block = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched
        block.add_(1)
        del block
    assert peak.peak_mb >= baseline.peak_mb + 200


def test_benchmark_inference_reports_per_image_latency(tiny_cnn):
    torch.manual_seed(0)
    model = tiny_cnn()
    images = torch.randn(5, 1, 8, 8)
    loads = []

    def load():
        loads.append(1)
        return model

    out = benchmark_inference(load, images, batch_size=4, samples=10, warmup=2, threads=1)
    assert loads == [1]
    assert out["samples"] == 12 and out["batch_size"] == 4 and out["threads"] == 1
    assert 0 < out["latency_ms_p50"] <= out["latency_ms_p95"]
    assert out["latency_ms_mean"] > 0 and out["load_time_s"] >= 0
    assert out["energy_source"] == "unavailable" or out["energy_j"] > 0


def test_count_params_counts_zeros(tiny_cnn):
    model = tiny_cnn()
    with torch.no_grad():
        model.fc.weight.zero_()
    total, nonzero = count_params(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert nonzero == total - model.fc.weight.numel()


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_choose_memory_format_leaves_the_model_in_the_chosen_layout():
    model, x = _tiny_cnn(), torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        reference = model(x)
    layout = measure.choose_memory_format(model, x, trials=2)
    assert layout in ("contiguous", "channels_last")
    weight = model[0].weight
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert weight.is_contiguous(memory_format=fmt)
    with torch.inference_mode():
        torch.testing.assert_close(model(x.contiguous(memory_format=fmt)), reference)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "auto"])
def test_benchmark_inference_records_the_layout_it_ran(layout):
    images = torch.randn(6, 3, 16, 16)
    out = benchmark_inference(_tiny_cnn, images, samples=4, warmup=1, memory_format=layout)
    assert out["memory_format"] in ("contiguous", "channels_last")
    if layout != "auto":
        assert out["memory_format"] == layout


def test_benchmark_inference_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="unknown memory_format 'nhwc'; expected one of auto, contiguous, channels_last"):
        benchmark_inference(_tiny_cnn, torch.randn(2, 3, 8, 8), memory_format="nhwc")


def test_a_model_measured_for_layout_can_still_train():
    model, x = _tiny_cnn().train(), torch.randn(4, 3, 16, 16)
    measure.choose_memory_format(model, x, trials=1)
    model(x).sum().backward()  # parameters are not inference tensors
    assert model[0].weight.grad is not None


# ---------------------------------------------------------------------------------------------- the run's own device


def test_gpu_energy_is_read_from_the_gpu_the_run_uses(monkeypatch):
    # two GPUs with different energies: a run on GPU 1 must read GPU 1's, never GPU 0's
    monkeypatch.setitem(measure._ZEUS_MONITORS, "gpu", _FakeZeus(None, {0: 10.0, 1: 20.0}))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # as torch.cuda.device(1) on a Dask worker
    for device, index, joules in (("cuda", 1, 20.0), ("cuda:0", 0, 10.0), ("cuda:1", 1, 20.0)):
        meter = EnergyMeter(device)
        assert meter.source == "zeus-gpu" and meter.device_index == index
        with meter.measure() as reading:
            pass
        assert (reading.energy_j, reading.source, reading.device_index) == (joules, "zeus-gpu", index)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with EnergyMeter("cuda").measure() as reading:
        pass
    assert (reading.energy_j, reading.device_index) == (10.0, 0)


def test_a_gpu_the_meter_cannot_see_is_unavailable(monkeypatch):
    monkeypatch.setitem(measure._ZEUS_MONITORS, "gpu", _FakeZeus(None, {0: 10.0}))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    meter = EnergyMeter("cuda")
    assert meter.source == "unavailable" and meter.device_index == 1
    with meter.measure() as reading:
        pass
    assert math.isnan(reading.energy_j) and reading.device_index == 1


def test_peak_memory_measures_the_current_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert PeakMemory("cuda").device_index == 3 and PeakMemory("cuda").device == torch.device("cuda", 3)
    assert PeakMemory("cuda:2").device_index == 2 and PeakMemory("cpu").device_index is None


def test_peak_memory_scope_says_whose_memory_it_is():
    assert measure.peak_memory_scope("run-a", "cuda:1") == "cuda-allocator"
    assert measure.peak_memory_scope("run-a", "cpu") == "shared-process"  # this process ran other tests
    assert set(measure.PEAK_MEMORY_SCOPES) == {"own-process", "shared-process", "cuda-allocator"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_is_reset_per_phase():
    with PeakMemory("cuda") as first:
        block = torch.ones(64 * 2**20 // 4, device="cuda")  # 64 MiB
        del block
    with PeakMemory("cuda") as second:
        small = torch.ones(2**20 // 4, device="cuda")  # 1 MiB
        del small
    assert first.peak_mb >= 64 and second.peak_mb < 32
    assert second.device_index == torch.cuda.current_device()


# ---------------------------------------------------------------------------------------------- CSR layers counted


def test_count_params_and_macs_see_sparse_linear_layers(tiny_cnn):
    from helpers.pruning import SparseLinear, count_macs

    torch.manual_seed(0)
    model = tiny_cnn()
    with torch.no_grad():
        model.fc.weight[torch.rand_like(model.fc.weight) < 0.8] = 0
    x = torch.randn(1, 1, 8, 8)
    total, nonzero = count_params(model)
    dense_macs = count_macs(model, x)
    fc_nnz = int(torch.count_nonzero(model.fc.weight))
    model.fc = SparseLinear.from_linear(model.fc)
    assert count_params(model) == (total, nonzero)  # the same weights, stored as CSR
    conv_macs = 4 * 8 * 8 * 9
    assert dense_macs == conv_macs + 3 * 256  # dense: the zeros are multiplied
    assert count_macs(model, x) == conv_macs + fc_nnz  # CSR: only the stored weights are
    assert count_macs(model, torch.randn(2, 1, 8, 8)) == 2 * (conv_macs + fc_nnz)
