"""Opt-in per-test peak memory, to find what holds the test command's peak RSS (issue 16: at most 4 GB).

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
