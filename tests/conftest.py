"""Fixtures shared by the test files, and an opt-in per-test peak memory report.

Shared fixtures:

- ``one_thread``: torch on one thread during a test (tiny tensors run fastest on one thread, and a busy
  2-core machine makes multi-threaded OpenMP crawl). A module asks for it for all its tests with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``tiny_cnn``: builds :class:`TinyCNN`, a one-convolution classifier of 1 x 8 x 8 images that trains and
  measures in milliseconds.

Peak memory, to find what holds the test command's peak RSS (issue 16: at most 4 GB):

    PRUNING_STUDY_RSS_REPORT=rss.tsv .venv/bin/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

writes one line per test: its node id, seconds, the pytest process's peak resident memory during that test
(Linux: the peak is reset before each test through /proc/self/clear_refs), and the largest peak of any
finished child process so far (kernels, subprocesses, Dask workers; it cannot be reset, so it only grows).
Without the variable nothing happens.
"""

from __future__ import annotations

import os
import re
import resource
import time
from pathlib import Path

import pytest
import torch
from torch import nn

_REPORT = os.environ.get("PRUNING_STUDY_RSS_REPORT")


def _peak_mib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


if _REPORT and Path("/proc/self/clear_refs").exists():

    def pytest_sessionstart(session):
        Path(_REPORT).write_text("test\tseconds\tpeak_rss_mib\tchildren_max_rss_mib\n")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS
        start = time.perf_counter()
        yield
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with open(_REPORT, "a") as fh:
            fh.write(f"{item.nodeid}\t{time.perf_counter() - start:.2f}\t{_peak_mib():.0f}\t{children:.0f}\n")


@pytest.fixture
def one_thread():
    """torch on one thread for the test, the previous count restored after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyCNN(nn.Module):
    """conv(1 -> 4, 3 x 3) - ReLU - [dropout] - linear(4 * 8 * 8 -> ``k``), for 1 x 8 x 8 images.

    ``dropout`` > 0 adds a dropout layer (training then draws from the global RNG, which resuming must
    restore); with 0 there is none.
    """

    def __init__(self, k: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(4 * 8 * 8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x)).flatten(1)))


@pytest.fixture
def tiny_cnn():
    """The :class:`TinyCNN` class, to build as many as a test needs."""
    return TinyCNN
