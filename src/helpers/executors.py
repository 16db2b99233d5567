"""Executors: where a study's runs execute, in this process or spread over a Dask cluster.

The runs are independent (DESIGN.md), so they spread over Dask (``distributed``) and ``dask-jobqueue``
for batch schedulers (SLURM, PBS, SGE, LSF, OAR, HTCondor, Moab). The study file's ``executor`` key picks:

- ``local`` (default): the runs in order, each in a fresh process of its own, so its CPU peak memory
  (resident memory) is its own; runs share only files on disk (data cache, the dense run a
  ``post_training`` run reuses). On Linux the process is forked from a server that imported helpers and
  the study once and computes nothing (milliseconds per run instead of the ~5 s of importing torch);
  ``python -m helpers`` forks that server from itself before any torch operation. Elsewhere each run is
  a fresh ``sys.executable``. A forked run's resident memory lacks the ~0.4 GB an interpreter touches
  importing torch: peaks recorded before 2026-12-03 (an interpreter per run) are that much higher.
  ``{kind: local, process_per_run: false}`` runs them in this process (``runs.peak_memory_scope`` is then
  ``shared-process``: a peak includes what earlier runs left).
- ``{kind: dask, n_workers: 2, threads_per_worker: 1}``: a ``LocalCluster`` bound to 127.0.0.1.
- ``{kind: dask, scheduler: "tcp://host:8786"}``: the workers of a running Dask scheduler.
- ``{kind: dask, jobqueue: {system: slurm, cores: 8, memory: 32GB, ...}, max_jobs: 10}``: batch jobs, each
  one Dask worker, scaled adaptively up to ``max_jobs``; ``jobqueue`` goes to the dask-jobqueue class.

Every executor is handed a :class:`Task` (the study's :class:`helpers.params.StudyKind`) and imports no
study. On Dask each run is one task (peak memory scope ``shared-process``) calling ``run_one``, which
works in ``runs/.work/<run_id>/`` and renames it into ``runs/<run_id>/`` atomically. A lost worker or a
raised error is retried ``retries`` times, resuming from the last epoch checkpoint; the parent submits,
waits and rebuilds the tables (:func:`helpers.results.collect`). A ``post_training`` task takes its
dense run's future as an argument, so it starts once the dense model is trained.

Placement: a worker holds resource ``run=1`` (one run at a time, ``threads_per_worker`` torch threads),
or with ``gpus_per_worker: g`` ``GPU=g``: one run per GPU, on its own GPU, with ``threads_per_worker // g``.

Worker memory: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's dynamic mmap
threshold (every tensor above 128 KiB becomes a fresh ``mmap``: training steps took ~2x as long,
``benchmarks/README.md``); the nannies preload this module (:func:`dask_setup`), which drops it.

Executor settings never change results: they are not in the run ids (:data:`helpers.params.RESULT_KEYS`).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import difflib
import inspect
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

with warnings.catch_warnings():  # tqdm.auto warns in a Jupyter kernel without ipywidgets; bars are off there anyway
    warnings.simplefilter("ignore")
    from tqdm.auto import tqdm

from helpers import measure
from helpers.lifecycle import record_failure
from helpers.params import ParamsError, RunSpec, check_choice, check_int, check_key

__all__ = [
    "EXECUTOR_KINDS",
    "LOCAL_DEFAULTS",
    "DASK_DEFAULTS",
    "JOBQUEUE_SYSTEMS",
    "validate_executor",
    "make_executor",
    "Task",
    "LocalExecutor",
    "DaskExecutor",
    "run_task",
    "jobqueue_cluster",
    "job_script",
    "threads_per_run",
    "dask_setup",
]

log = logging.getLogger(__name__)


class Task(Protocol):
    """What an executor is handed (a :class:`helpers.params.StudyKind`); it must pickle, as it travels to
    a run's own process or a Dask worker."""

    def run_one(self, spec: RunSpec, study: str | os.PathLike, *, progress: bool = False) -> str: ...

    def failure_ids(self, spec: RunSpec) -> dict[str, Any]: ...


def _record(task: Task, spec: RunSpec, study: Path, exc: BaseException) -> None:
    log.error("run %s failed: %s", spec.run_id, exc)
    record_failure(spec, Path(study), exc, task.failure_ids(spec))


EXECUTOR_KINDS: tuple[str, ...] = ("local", "dask")

#: Every key of a ``{kind: local, ...}`` executor with its default.
LOCAL_DEFAULTS: dict[str, Any] = {
    "kind": "local",
    "process_per_run": True,  # a fresh process per run: its CPU peak memory is its own
}

#: Every key of a ``{kind: dask, ...}`` executor with its default (``None``: chosen at run time).
DASK_DEFAULTS: dict[str, Any] = {
    "kind": "dask",
    "n_workers": None,  # LocalCluster: worker processes; default usable cores // threads_per_worker
    "threads_per_worker": None,  # CPU threads of a worker (its runs' torch threads); default 1, jobqueue: cores/processes
    "gpus_per_worker": 0,  # > 0: one run per GPU (worker resource GPU)
    "memory_limit": "auto",  # LocalCluster: per-worker memory limit (Dask's format), "auto" splits the RAM
    "retries": 2,  # extra attempts of a run whose task raised or whose worker died
    "scheduler": None,  # address of a running scheduler, e.g. tcp://host:8786
    "jobqueue": None,  # dask-jobqueue settings: {system: slurm, cores, memory, walltime, queue, ...}
    "min_jobs": 0,  # jobqueue: adaptive scaling lower bound
    "max_jobs": None,  # jobqueue: adaptive scaling upper bound; default one job per pending run
    "dashboard": True,  # LocalCluster: serve the dashboard on 127.0.0.1 (random port)
}

#: ``jobqueue.system`` values and their dask-jobqueue cluster classes.
JOBQUEUE_SYSTEMS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "oar": "OARCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
}


def dask_setup(nanny: Any) -> None:
    """Nanny preload (``--preload-nanny helpers.executors``), run before it spawns its worker: drop Dask's
    ``MALLOC_TRIM_THRESHOLD_`` (module docstring) unless the user exported it."""
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:  # exported by the user (or by an earlier nanny of this process): keep
        return
    for env in (getattr(nanny, "pre_spawn_env", None), getattr(nanny, "env", None)):
        if isinstance(env, dict):
            env.pop("MALLOC_TRIM_THRESHOLD_", None)


# ---------------------------------------------------------------------------------------------- validation


def _jobqueue_keys(system: str) -> tuple[str, ...]:
    """Keyword arguments the system's dask-jobqueue cluster accepts (cluster, job class and its bases)."""
    import dask_jobqueue  # optional and slow to import: only for jobqueue settings

    cls = getattr(dask_jobqueue, JOBQUEUE_SYSTEMS[system])
    keys: list[str] = []
    for func in [cls.__init__, *(base.__init__ for base in cls.job_cls.__mro__ if base is not object)]:
        for name, par in inspect.signature(func).parameters.items():
            if par.kind in (par.POSITIONAL_OR_KEYWORD, par.KEYWORD_ONLY) and name not in ("self", "job_cls"):
                keys.append(name)
    # The executor owns these: it scales adaptively and runs the cluster synchronously.
    owned = {"n_workers", "asynchronous", "loop", "scheduler", "config_name", "name"}
    return tuple(dict.fromkeys(k for k in keys if k not in owned))


def _jobqueue(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ParamsError(
            f"executor.jobqueue must be a mapping such as {{system: slurm, cores: 8, memory: 32GB}}, got {value!r}"
        )
    settings = dict(value)
    system = settings.pop("system", None)
    if system is None:
        raise ParamsError(f"executor.jobqueue needs a system: one of {', '.join(JOBQUEUE_SYSTEMS)}")
    check_choice("executor.jobqueue.system", system, tuple(JOBQUEUE_SYSTEMS))
    accepted = _jobqueue_keys(system)
    for key in settings:
        check_key(key, ("system", *accepted), f"key in executor.jobqueue ({JOBQUEUE_SYSTEMS[system]})")
    for key in ("cores", "memory"):
        if settings.get(key) is None:
            raise ParamsError(
                f"executor.jobqueue needs {key} (per job), e.g. cores: 8, memory: 32GB; "
                "dask-jobqueue cannot size the jobs without it"
            )
    check_int("executor.jobqueue.cores", settings["cores"], minimum=1)
    if settings.get("processes") is not None:
        check_int("executor.jobqueue.processes", settings["processes"], minimum=1)
    for key in ("worker_extra_args", "job_extra_directives", "job_script_prologue"):
        if key in settings and not (
            isinstance(settings[key], list) and all(isinstance(v, str) for v in settings[key])
        ):
            raise ParamsError(f"executor.jobqueue.{key} must be a list of strings, got {settings[key]!r}")
    return {"system": system, **settings}


def validate_executor(value: Any) -> str | dict[str, Any]:
    """Check the study file's ``executor`` (``"local"``, ``"dask"`` or a mapping with ``kind`` and the keys
    of :data:`LOCAL_DEFAULTS` / :data:`DASK_DEFAULTS`) and fill in its defaults.

    Returns:
        ``"local"`` for a local executor with the defaults, else the mapping with every key of its kind.

    Raises:
        ParamsError: naming the bad key or value, what is accepted and the closest valid key.
    """
    if isinstance(value, str) or value is None:
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise ParamsError(
            f"executor must be local, dask or a mapping such as {{kind: dask, n_workers: 2}}, got {value!r}"
        )
    kind = value.get("kind")
    if kind not in EXECUTOR_KINDS:
        close = difflib.get_close_matches(str(kind), EXECUTOR_KINDS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(
            f"unknown executor {kind!r}{hint}; expected one of {', '.join(EXECUTOR_KINDS)}, "
            "or a mapping {kind: dask, n_workers: N} / {kind: dask, scheduler: ADDRESS} / "
            "{kind: dask, jobqueue: {system: slurm, ...}}"
        )
    for key in value:
        check_key(key, tuple(LOCAL_DEFAULTS) if kind == "local" else tuple(DASK_DEFAULTS), "key in executor")
    if kind == "local":
        cfg = {**LOCAL_DEFAULTS, **value}
        if not isinstance(cfg["process_per_run"], bool):
            raise ParamsError(f"executor.process_per_run must be true or false, got {cfg['process_per_run']!r}")
        return "local" if cfg == LOCAL_DEFAULTS else cfg
    cfg = {**DASK_DEFAULTS, **value}
    for key in ("n_workers", "threads_per_worker", "max_jobs"):
        if cfg[key] is not None:
            check_int(f"executor.{key}", cfg[key], minimum=1)
    for key in ("gpus_per_worker", "retries", "min_jobs"):
        check_int(f"executor.{key}", cfg[key], minimum=0)
    if not isinstance(cfg["dashboard"], bool):
        raise ParamsError(f"executor.dashboard must be true or false, got {cfg['dashboard']!r}")
    if not isinstance(cfg["memory_limit"], (str, int)) or isinstance(cfg["memory_limit"], bool):
        raise ParamsError(f"executor.memory_limit must be 'auto', bytes or a size like '4GB', got {cfg['memory_limit']!r}")
    if cfg["scheduler"] is not None and cfg["jobqueue"] is not None:
        raise ParamsError("executor has both scheduler and jobqueue; give one (a running scheduler, or batch jobs)")
    if cfg["scheduler"] is not None:
        if not isinstance(cfg["scheduler"], str) or not cfg["scheduler"]:
            raise ParamsError(f"executor.scheduler must be an address such as tcp://host:8786, got {cfg['scheduler']!r}")
    if cfg["jobqueue"] is not None:
        cfg["jobqueue"] = _jobqueue(cfg["jobqueue"])
    local = cfg["scheduler"] is None and cfg["jobqueue"] is None
    if not local and cfg["n_workers"] is not None:
        fix = "use max_jobs for batch jobs" if cfg["jobqueue"] is not None else "start the workers with the scheduler"
        raise ParamsError(f"executor.n_workers applies to a LocalCluster only; {fix}")
    if cfg["jobqueue"] is None and (cfg["max_jobs"] is not None or cfg["min_jobs"]):
        raise ParamsError("executor.min_jobs / max_jobs apply to jobqueue clusters only; remove them or add jobqueue")
    if cfg["max_jobs"] is not None and cfg["min_jobs"] > cfg["max_jobs"]:
        raise ParamsError(f"executor.min_jobs {cfg['min_jobs']} exceeds max_jobs {cfg['max_jobs']}")
    return cfg


# ---------------------------------------------------------------------------------------------- executors


def _usable_cores() -> int:
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(usable))


def threads_per_run(cfg: Mapping[str, Any]) -> int:
    """torch threads of one run on a Dask worker: the worker's threads shared by its concurrent runs."""
    threads = cfg["threads_per_worker"]
    if threads is None:
        jobqueue = cfg["jobqueue"]
        threads = max(1, jobqueue["cores"] // (jobqueue.get("processes") or 1)) if jobqueue else 1
    return max(1, threads // max(1, cfg["gpus_per_worker"]))


def make_executor(cfg: str | Mapping[str, Any]) -> LocalExecutor | DaskExecutor:
    """The executor for a validated ``executor`` value (:func:`validate_executor`)."""
    cfg = validate_executor(cfg)
    if cfg == "local":
        return LocalExecutor()
    if cfg["kind"] == "local":
        return LocalExecutor(process_per_run=cfg["process_per_run"])
    return DaskExecutor(cfg)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), so a killed grid leaves no run behind."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _own_process_main(status_fd: int) -> None:
    """Entry point of a run's own interpreter (outside Linux): read the task and run from stdin, run it."""
    task, spec, study, progress, parent = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent)
    _run_here(task, spec, study, progress, status_fd)


def _child_env() -> dict[str, str]:
    """This process's environment, with ``PYTHONPATH`` importing helpers from where this process does."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p and os.path.isdir(p)])
    return env


def _forker_main(request_fd: int, reply_fd: int) -> None:
    """Entry point of the fork server (:class:`_ForkServer`): read the task (unpickling imports its module),
    then fork one child per run request and reply ``exit code <tab> status``. The server computes nothing,
    so each child starts clean: no earlier run, no tensor in its allocator, no thread pool. It ends when
    the request pipe closes (also when no task was ever sent)."""
    requests = os.fdopen(request_fd, "rb")
    replies = os.fdopen(reply_fd, "w")
    try:
        task, parent = pickle.load(requests)
    except EOFError:  # prestarted, never used
        return
    _die_with_parent(parent)
    server = os.getpid()
    while True:
        try:
            spec, study, progress = pickle.load(requests)
        except EOFError:  # the executor closed the pipe: the grid is over
            return
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the run's own process
            code = 1
            try:
                os.close(read_fd)
                requests.close()
                replies.close()
                _die_with_parent(server)
                _run_here(task, spec, study, progress, write_fd)
                code = 0
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # never back into the server's loop or its exit handlers
        os.close(write_fd)
        with os.fdopen(read_fd) as report:
            status = report.read().strip()
        _, wait_status = os.waitpid(pid, 0)
        replies.write(f"{os.waitstatus_to_exitcode(wait_status)}\t{status}\n")
        replies.flush()


def _run_here(task: Task, spec: RunSpec, study: str, progress: bool, status_fd: int) -> None:
    """Claim this process for the run, run it, write its status to ``status_fd``."""
    logging.basicConfig(level=logging.WARNING)
    measure.claim_process(spec.run_id)
    try:
        status = task.run_one(spec, study, progress=progress)
    except Exception as exc:  # noqa: BLE001 - recorded here, where the traceback is
        _record(task, spec, study, exc)
        status = "failed"
    with os.fdopen(status_fd, "w") as out:
        out.write(status)


#: Fork runs from a server on Linux (``PR_SET_PDEATHSIG`` ties each to its parent); elsewhere (macOS, where
#: forking after importing system frameworks is unsafe; Windows) each run is a fresh interpreter.
_FORK_SERVER = sys.platform.startswith("linux")
_PRESTARTED: _ForkServer | None = None


def prestart_fork_server(cfg: str | Mapping[str, Any]) -> None:
    """Fork the fork server from this process now when ``cfg`` is ``local`` with ``process_per_run``
    (Linux only), sparing it ~5 s of imports. The server and its runs inherit this process's state: call it
    only before any torch operation (``python -m helpers`` does). The next :class:`LocalExecutor` run takes
    it; :func:`discard_prestarted` ends it if none did."""
    global _PRESTARTED
    cfg = validate_executor(cfg)
    local = cfg == "local" or (cfg["kind"] == "local" and cfg["process_per_run"])
    if local and _FORK_SERVER and _PRESTARTED is None:
        _PRESTARTED = _ForkServer(fork=True)


def discard_prestarted() -> None:
    """End the prestarted fork server if no executor took it."""
    global _PRESTARTED
    server, _PRESTARTED = _PRESTARTED, None
    if server is not None:
        server.close()


def _take_prestarted() -> _ForkServer | None:
    global _PRESTARTED
    server, _PRESTARTED = _PRESTARTED, None
    if server is not None and not server.alive():
        server.close()  # its pipes
        return None
    return server


class _Forked:
    """A child forked from this process, with the part of ``subprocess.Popen``'s interface used here."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None and self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        deadline = time.monotonic() + (timeout or 0.0)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class _ForkServer:
    """A process that imports helpers and the task once (~5 s on 2 cores), then forks a process per run
    (milliseconds). The executor's death kills the server, whose death kills the run (``PR_SET_PDEATHSIG``).
    It is a fresh interpreter or, with ``fork=True`` (:func:`prestart_fork_server`), a fork of this process.
    """

    def __init__(self, *, fork: bool = False) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:
            if fork:
                self.proc: subprocess.Popen | _Forked = _Forked(self._fork(request_read, reply_write,
                                                                           (request_write, reply_read)))  # fmt: skip
            else:
                code = f"from helpers.executors import _forker_main; _forker_main({request_read}, {reply_write})"
                self.proc = subprocess.Popen([sys.executable, "-c", code], env=_child_env(),
                                             stdin=subprocess.DEVNULL, pass_fds=(request_read, reply_write))  # fmt: skip
        except BaseException:
            os.close(request_write)
            os.close(reply_read)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self._requests = os.fdopen(request_write, "wb")
        self._replies = os.fdopen(reply_read)

    @staticmethod
    def _fork(request_fd: int, reply_fd: int, parent_ends: tuple[int, int]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the server: never back into the caller's code or its exit handlers
            for fd in parent_ends:
                os.close(fd)
            _forker_main(request_fd, reply_fd)
            code = 0
        finally:
            os._exit(code)

    def start(self, task: Task) -> _ForkServer:
        """Hand the server its task (and this process's pid, whose death ends it)."""
        self._send((task, os.getpid()))
        return self

    def _send(self, message: Any) -> bool:
        try:
            self._requests.write(pickle.dumps(message))
            self._requests.flush()
        except OSError:  # BrokenPipeError: the server died (at start, or killed); run() reports its exit code
            return False
        return True

    def run(self, spec: RunSpec, study: Path, progress: bool) -> tuple[int, str]:
        """Run ``spec`` in a forked process: ``(exit code, status)``, status empty if the process (or the
        server, then its exit code) died."""
        reply = self._replies.readline() if self._send((spec, str(study), progress)) else ""
        if not reply:
            return self.proc.wait(), ""
        code, _, status = reply.rstrip("\n").partition("\t")
        return int(code), status

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End the server (it exits when its request pipe closes)."""
        with contextlib.suppress(OSError):
            self._requests.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self._replies.close()


class LocalExecutor:
    """The runs in plan order, each in a fresh process of its own (``process_per_run``, the default: forked
    by a :class:`_ForkServer` on Linux, else a fresh interpreter) or all in this process."""

    remote = False

    def __init__(self, process_per_run: bool = True) -> None:
        self.process_per_run = process_per_run

    @staticmethod
    def _status(task: Task, spec: RunSpec, study: Path, status: str, code: int | None) -> str:
        """The run's reported status; without one its process died (exit ``code``): recorded as failed."""
        if status:
            return status
        try:
            raise RuntimeError(f"the run's process ended (exit code {code}) before finishing")
        except RuntimeError as exc:  # raised, so that the record carries a traceback
            _record(task, spec, study, exc)
        return "failed"

    def _run_in_process(self, task: Task, spec: RunSpec, study: Path, progress: bool) -> str:
        """Run ``spec`` in a fresh interpreter (``python -c``; unlike ``multiprocessing``'s spawn it never
        re-imports the caller's script, so a script without a ``__main__`` guard works)."""
        read_fd, write_fd = os.pipe()
        code = f"from helpers.executors import _own_process_main; _own_process_main({write_fd})"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=_child_env(),
                                    pass_fds=(write_fd,))  # fmt: skip
        finally:
            os.close(write_fd)
        status = ""
        try:
            with os.fdopen(read_fd) as report:
                try:
                    proc.stdin.write(pickle.dumps((task, spec, str(study), progress, os.getpid())))
                    proc.stdin.close()
                except BrokenPipeError:  # the child died at start; its exit code says more
                    pass
                status = report.read().strip()
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): the run does not outlive the grid
                proc.kill()
                proc.wait()
        return self._status(task, spec, study, status, proc.returncode)

    def run(self, specs: Sequence[RunSpec], study: Path, *, task: Task, progress: bool = True,
            desc: str = "study") -> dict[str, str]:  # fmt: skip
        """Execute ``specs`` with ``task.run_one``: ``run_id -> status`` (``completed``, ``diverged``,
        ``skipped`` or ``failed``: a run that raised, recorded in ``error.json``; the grid goes on)."""
        statuses: dict[str, str] = {}
        server: _ForkServer | None = None
        bar = tqdm(specs, desc=desc, unit="run", disable=None if progress else True)
        try:
            for done, spec in enumerate(bar, 1):
                bar.set_postfix_str(spec.run_id, refresh=False)
                start = time.monotonic()
                if self.process_per_run and _FORK_SERVER:
                    if server is None or not server.alive():  # started at the first run; again if it died
                        if server is not None:
                            server.close()  # its pipes
                        server = (_take_prestarted() or _ForkServer()).start(task)
                    code, status = server.run(spec, study, progress)
                    status = self._status(task, spec, study, status, code)
                elif self.process_per_run:
                    status = self._run_in_process(task, spec, study, progress)
                else:
                    try:
                        status = task.run_one(spec, study, progress=progress)
                    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
                        _record(task, spec, study, exc)
                        status = "failed"
                statuses[spec.run_id] = status
                _log_run(bar, progress, done, len(specs), spec.run_id, status, f"{time.monotonic() - start:.0f} s")
        except BaseException:  # interrupted (Ctrl-C): the run under way does not outlive the grid
            if server is not None:
                server.proc.kill()  # and the kernel kills the run, its child
            raise
        finally:
            bar.close()
            if server is not None:
                server.close()
        return statuses


def _log_run(bar: Any, progress: bool, done: int, total: int, run_id: str, status: str, when: str) -> None:
    """Without a terminal (``nohup``, a CI log) the bar is off: one line per finished run instead."""
    if progress and bar.disable:
        print(f"[{done}/{total}] {run_id}: {status} ({when})", file=sys.stderr, flush=True)


_GPU_LOCK = threading.Lock()
_GPU_BUSY: set[int] = set()


@contextlib.contextmanager
def _gpu_slot(count: int) -> Iterator[int]:
    """A GPU index of this worker no other of its runs is using (the GPU resource bounds the demand)."""
    with _GPU_LOCK:
        free = [i for i in range(count) if i not in _GPU_BUSY]
        if not free:
            raise RuntimeError(f"all {count} GPUs of this worker are busy; the GPU resource should prevent this")
        index = free[0]
        _GPU_BUSY.add(index)
    try:
        yield index
    finally:
        with _GPU_LOCK:
            _GPU_BUSY.discard(index)


def run_task(task: Task, spec: RunSpec, study: str, threads: int, gpus: int, *dependencies: Any) -> str:
    """The Dask task of one run: its status from ``task.run_one`` with ``threads`` torch threads.

    Args:
        study: the study folder (on a file system the workers share).
        gpus: the worker's GPUs; > 0 runs on a free one of them when ``device`` is ``cuda``.
        dependencies: results of the tasks this run waits for (the dense run it reuses).
    """
    spec = dataclasses.replace(spec, params={**spec.params, "threads": threads})
    if gpus and spec.params["device"] == "cuda":
        with _gpu_slot(gpus) as index, torch.cuda.device(index):
            return task.run_one(spec, study)
    return task.run_one(spec, study)


class DaskExecutor:
    """One Dask task per run on a LocalCluster, a running scheduler or dask-jobqueue batch jobs."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = dict(cfg)

    @property
    def remote(self) -> bool:
        """Whether the runs execute on other machines (the parent need not have their device)."""
        return self.cfg["scheduler"] is not None or self.cfg["jobqueue"] is not None

    def _resources(self) -> dict[str, int]:
        gpus = self.cfg["gpus_per_worker"]
        return {"GPU": gpus} if gpus else {"run": 1}

    def _task_resources(self) -> dict[str, int] | None:
        if self.cfg["gpus_per_worker"]:
            return {"GPU": 1}
        # Workers of an external scheduler were started by someone else: no resource to ask for.
        return None if self.cfg["scheduler"] is not None else {"run": 1}

    @contextlib.contextmanager
    def client(self, pending: int) -> Iterator[Any]:
        """A connected ``distributed.Client`` (and its cluster, closed on exit)."""
        from distributed import Client, LocalCluster  # optional and slow to import: only for Dask studies

        cfg = self.cfg
        if cfg["scheduler"] is not None:
            with Client(cfg["scheduler"]) as client:
                yield client
            return
        if cfg["jobqueue"] is not None:
            with jobqueue_cluster(cfg) as cluster:
                maximum = cfg["max_jobs"] if cfg["max_jobs"] is not None else max(1, pending)
                cluster.adapt(minimum_jobs=cfg["min_jobs"], maximum_jobs=maximum)
                with Client(cluster) as client:
                    yield client
            return
        threads = cfg["threads_per_worker"] or 1
        n_workers = cfg["n_workers"] or max(1, _usable_cores() // threads)
        with LocalCluster(
            n_workers=n_workers,
            threads_per_worker=max(threads, cfg["gpus_per_worker"]),
            processes=True,  # a worker is a process: a crash or a kill takes one run, not the grid
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if cfg["dashboard"] else None,
            memory_limit=cfg["memory_limit"],
            resources=self._resources(),
            preload_nanny=[__name__],
            scheduler_kwargs={"allowed_failures": cfg["retries"]},
            silence_logs=logging.ERROR,
        ) as cluster, Client(cluster) as client:  # fmt: skip
            yield client

    def run(self, specs: Sequence[RunSpec], study: Path, *, task: Task, progress: bool = True,
            desc: str = "study") -> dict[str, str]:  # fmt: skip
        """Submit one Dask task per run, wait for all, record the runs that failed after their retries.
        Returns ``run_id -> status``, as :meth:`LocalExecutor.run`."""
        from distributed import as_completed  # optional and slow to import: only for Dask studies

        statuses: dict[str, str] = {}
        if not specs:
            return statuses
        threads, gpus = threads_per_run(self.cfg), self.cfg["gpus_per_worker"]
        with self.client(len(specs)) as client:
            link = getattr(client, "dashboard_link", None) if (self.remote or self.cfg["dashboard"]) else None
            if link and progress:
                print(f"Dask dashboard: {link}", file=sys.stderr, flush=True)
            elif link:
                log.info("Dask dashboard: %s", link)
            futures: dict[str, Any] = {}
            by_key: dict[str, RunSpec] = {}
            for spec in specs:  # dense runs first: Dask starts tasks in submission order
                deps = [futures[spec.dense_run_id]] if spec.dense_run_id in futures else []
                futures[spec.run_id] = client.submit(
                    run_task, task, spec, str(study), threads, gpus, *deps, key=spec.run_id, pure=False,
                    retries=self.cfg["retries"], resources=self._task_resources(),
                )  # fmt: skip
                by_key[futures[spec.run_id].key] = spec
            bar = tqdm(total=len(specs), desc=desc, unit="run", disable=None if progress else True)
            began = time.monotonic()
            try:
                for future in as_completed(list(futures.values())):
                    spec = by_key[future.key]
                    bar.set_postfix_str(spec.run_id, refresh=False)
                    try:
                        statuses[spec.run_id] = future.result()
                    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
                        if spec.dense_run_id in futures and futures[spec.dense_run_id].status == "error":
                            exc = RuntimeError(
                                f"dense run {spec.dense_run_id} failed; {spec.run_id} needs a trained dense model"
                            )
                        _record(task, spec, study, exc)
                        statuses[spec.run_id] = "failed"
                    bar.update()
                    elapsed = f"{time.monotonic() - began:.0f} s into the grid"
                    _log_run(bar, progress, len(statuses), len(specs), spec.run_id, statuses[spec.run_id], elapsed)
            finally:
                bar.close()
                for future in futures.values():
                    future.cancel()
        return statuses


# ---------------------------------------------------------------------------------------------- jobqueue


@contextlib.contextmanager
def jobqueue_cluster(cfg: Mapping[str, Any], *, loopback: bool = False) -> Iterator[Any]:
    """The dask-jobqueue cluster of a ``dask`` executor mapping ``cfg`` with ``jobqueue`` settings.

    Each job runs ``processes`` (default 1) workers with the placement resources (module docstring); the
    scheduler runs in this process with ``allowed_failures = retries``. ``loopback`` binds it to 127.0.0.1
    without a dashboard (to render job scripts without listening on the network; jobs could not reach it).
    """
    import dask_jobqueue  # optional and slow to import: only for jobqueue settings

    settings = dict(validate_executor(cfg)["jobqueue"])
    cls = getattr(dask_jobqueue, JOBQUEUE_SYSTEMS[settings.pop("system")])
    settings.setdefault("processes", 1)
    resources = ",".join(f"{k}={v}" for k, v in DaskExecutor(cfg)._resources().items())
    settings["worker_extra_args"] = [
        *settings.get("worker_extra_args", []), "--resources", resources, "--preload-nanny", __name__,
    ]  # fmt: skip
    options = dict(settings.get("scheduler_options") or {})
    options.setdefault("allowed_failures", cfg["retries"])
    if loopback:
        options.update(host="127.0.0.1", dashboard_address=None)
        options.pop("interface", None)
        settings.pop("interface", None)
        settings.pop("dashboard_address", None)
    settings["scheduler_options"] = options
    cluster = cls(**settings)
    try:
        yield cluster
    finally:
        cluster.close()


def job_script(cfg: Mapping[str, Any] | str) -> str:
    """The batch script one job of a ``jobqueue`` executor would submit (dask-jobqueue's ``job_script()``).
    ``cfg``: the ``executor`` mapping, or a study's parameters (YAML path or mapping); only ``executor`` is read.

    Raises:
        ParamsError: the executor is not a ``dask`` one with ``jobqueue`` settings, or the file cannot be read.
    """
    if isinstance(cfg, (str, os.PathLike)):
        path = Path(cfg)
        try:
            cfg = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ParamsError(f"{path} cannot be read as a study file: {' '.join(str(exc).split())}") from None
        if not isinstance(cfg, Mapping):
            raise ParamsError(f"{path} must hold a mapping of keys (name, datasets, models, executor, ...)")
    if isinstance(cfg, Mapping) and "name" in cfg:
        cfg = cfg.get("executor", "local")
    cfg = validate_executor(cfg)
    if cfg == "local" or cfg["jobqueue"] is None:
        raise ParamsError("job_script needs executor {kind: dask, jobqueue: {system: slurm, ...}}")
    with jobqueue_cluster(cfg, loopback=True) as cluster:
        return cluster.job_script()
