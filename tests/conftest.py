"""Fixtures shared by the test files, and an opt-in per-test peak memory report.

Shared fixtures:

- ``one_thread``: torch on one thread during a test (tiny tensors run fastest on one thread, and a busy
  2-core machine makes multi-threaded OpenMP crawl). A module asks for it for all its tests with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
- ``tiny_cnn``: builds :class:`TinyCNN`, a one-convolution classifier of 1 x 8 x 8 images that trains and
  measures in milliseconds.

Peak memory, disk writes and CPU per test, to find what holds the test command's peak RSS, bytes written
and time (issue 16: at most 4 GB, 2 GB and 8 minutes):

    PRUNING_STUDY_RSS_REPORT=rss.tsv .venv/bin/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider -n 0

writes one line per test (with ``-n 2`` each worker appends its own): its node id, seconds, the pytest
process's peak resident memory during that test
(Linux: the peak is reset before each test through /proc/self/clear_refs), the largest peak of any
finished child process so far (kernels, subprocesses, Dask workers; it cannot be reset, so it only grows),
the bytes the test wrote to storage (issue 16: at most 2 GB in all): this process's ``write_bytes`` from
/proc/self/io plus what its finished child processes wrote, and the CPU seconds it took (this process and
its finished children: unlike its wall time, not inflated by the other worker of ``-n 2``).
Without the variable nothing happens.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import resource
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

_REPORT = os.environ.get("PRUNING_STUDY_RSS_REPORT")


def _peak_mib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _written_bytes() -> int:
    """Bytes this process and its finished children sent to storage (files deleted before they were flushed
    count too: the kernel charges a write when the page is dirtied)."""
    own = int(re.search(r"write_bytes:\s+(\d+)", Path("/proc/self/io").read_text()).group(1))
    return own + resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


if _REPORT and Path("/proc/self/clear_refs").exists():

    def pytest_sessionstart(session):
        if os.environ.get("PYTEST_XDIST_WORKER"):  # -n 2: the controller wrote the header, workers append
            return
        Path(_REPORT).write_text("test\tseconds\tpeak_rss_mib\tchildren_max_rss_mib\twritten_mib\tcpu_s\n")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS
        start, written, cpu = time.perf_counter(), _written_bytes(), _cpu_seconds()
        yield
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        written, cpu = (_written_bytes() - written) / 2**20, _cpu_seconds() - cpu
        with open(_REPORT, "a") as fh:
            fh.write(f"{item.nodeid}\t{time.perf_counter() - start:.2f}\t{_peak_mib():.0f}\t{children:.0f}"
                     f"\t{written:.0f}\t{cpu:.2f}\n")


_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except OSError:  # not Linux: nothing to compare
        return 0


@pytest.fixture(autouse=True)
def _free_what_a_test_left():
    """One pytest process runs hundreds of tests, where a study gives every run a fresh process. A model in a
    reference cycle (modules, hooks, masks) outlives its test until the garbage collector happens to run: the
    full-size VGG16 tests left 0.5 GB each, and the next test's peak stood on them. After a test whose
    resident memory grew by over 256 MiB, collect now and hand the freed pages back (glibc's ``malloc_trim``)."""
    before = _resident_bytes()
    yield
    if _resident_bytes() - before > 256 << 20:
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)


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


# -------------------------------------------------------------------------------- parallel test workers
def _test_file(nodeid: str) -> str:
    """The unit one worker runs whole: a test file (its module-scoped fixtures are built once), or all the
    notebooks together, in order (01 trains the smoke study that 02-04 and 07 read)."""
    path = nodeid.split("::", 1)[0]
    return "notebooks" if path.startswith("notebooks/") else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``-n 2``), whole files per worker (see :func:`_test_file`). xdist's own
    ``--dist loadgroup`` cannot do this: it tags node ids, which pytest 9 no longer lets a plugin change."""
    from xdist.scheduler import LoadScopeScheduling  # only under xdist, which calls this hook

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _test_file(nodeid)

    return ByFile(config, log)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one core per worker: two workers with two torch threads each would crawl on a 2-core machine
    torch.set_num_threads(1)
