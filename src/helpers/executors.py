"""Executors: where a study's runs execute, in this process or spread over a Dask cluster.

The grid's runs are independent (see DESIGN.md), so they spread over whatever is available on an
existing engine: Dask (``distributed``; Rocklin, *Dask: parallel computation with blocked algorithms
and task scheduling*, SciPy 2015) and ``dask-jobqueue`` for batch schedulers (SLURM, PBS, SGE, LSF,
OAR, HTCondor, Moab). The study file's ``executor`` key picks one:

- ``local`` (default): the runs in order, one after the other, each in a fresh process of its own,
  so that a run's CPU peak memory (the process's resident memory) is its own and not what earlier runs
  left in the allocator; the process ends with the run and shares nothing with the others but the files
  on disk (the prepared data cache, the dense run a ``post_training`` run reuses). On Linux the process is
  forked from a server that imported helpers and the study once and computes nothing (a few milliseconds
  per run instead of the ~5 s an interpreter takes to import torch); ``python -m helpers`` forks that
  server from itself once its parameters are read, before any torch operation, so that not even the
  server imports torch a second time. Elsewhere each run is a fresh interpreter started with ``sys.executable``. A forked run's resident memory counts the library pages it touches,
  not the ~0.4 GB an interpreter touches while importing torch: peaks recorded before 2026-12-03, with an
  interpreter per run, are that much higher for small models. ``{kind: local, process_per_run: false}``
  runs them in this process instead (the peak memory of every run but the first then includes what
  earlier runs left, and ``runs.peak_memory_scope`` says ``shared-process``).
- ``{kind: dask, n_workers: 2, threads_per_worker: 1}``: a ``LocalCluster`` of worker processes on
  this machine (scheduler, workers and dashboard bound to 127.0.0.1).
- ``{kind: dask, scheduler: "tcp://host:8786"}``: the workers of a running Dask scheduler.
- ``{kind: dask, jobqueue: {system: slurm, cores: 8, memory: 32GB, ...}, max_jobs: 10}``: batch jobs,
  each one Dask worker, started and stopped as needed (adaptive scaling up to ``max_jobs``); the
  ``jobqueue`` settings go through to the dask-jobqueue cluster class (``SLURMCluster``, ...).

Every executor is handed the task: the study's kind (:class:`helpers.params.StudyKind`, from the registry
:mod:`helpers.studies`), whose ``run_one`` executes one run and whose ``failure_ids`` name a run that
failed; the executors import no study, so every kind of study runs on every executor.

One Dask task per run (a Dask worker runs its runs in turn in one process, so their CPU peak memory is
recorded as ``shared-process``): the task calls the kind's ``run_one``, which works in the run's own
``runs/.work/<run_id>/`` folder and renames it into ``runs/<run_id>/`` atomically when finished. A
worker that dies loses at most the run it was working on; Dask reschedules that task (up to
``retries`` times, for a raised error and for a lost worker alike) and the new attempt resumes from
the run's last epoch checkpoint. The parent process only submits, waits and finally rebuilds the
tables from the run folders (:func:`helpers.results.collect`, which any process may call at any time
to see the runs finished so far). A ``post_training`` run's task takes its dense run's future as an
argument, so it starts once the dense model is trained; nothing else waits.

Placement. A worker runs one run at a time (worker resource ``run=1``) and the run's torch uses the
worker's ``threads_per_worker`` threads. With ``gpus_per_worker: g`` a worker holds the resource
``GPU=g`` instead, each run asks for ``GPU=1``, so a worker runs one run per GPU at once, each on its
own GPU (``torch.cuda.device`` of a free slot) with ``threads_per_worker // g`` threads.

Worker memory. Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which switches
off glibc's dynamic mmap threshold: every tensor above 128 KiB is then a fresh ``mmap`` with page
faults and ``munmap``, and a training step took about 2 x as long in a worker as in this process
(``benchmarks/README.md``). The executor's nannies load this module as a preload
(:func:`dask_setup`), which drops that one variable, so workers allocate as a plain process does.

Executor settings change where and how fast runs happen, never their results: they are excluded
from the run ids (:data:`helpers.params.RESULT_KEYS`).
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
from helpers.params import ParamsError, RunSpec, check_key

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
    """What an executor is handed: a kind of study (:class:`helpers.params.StudyKind` satisfies it).
    It must pickle (module-level functions do): it travels to a run's own process or a Dask worker."""

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

# Settings the executor itself sets on a jobqueue cluster (a user value is merged, not replaced).
_MERGED_JOBQUEUE_KEYS = ("worker_extra_args", "scheduler_options")

# Environment variables Dask's nanny sets for its workers that slow torch down (see the module docstring).
_DROPPED_WORKER_ENV = ("MALLOC_TRIM_THRESHOLD_",)


def dask_setup(nanny: Any) -> None:
    """Nanny preload (``--preload-nanny helpers.executors``): start workers without Dask's malloc tuning.

    Runs in the nanny before it spawns its worker process; a value the user exported stays.
    """
    for name in _DROPPED_WORKER_ENV:
        if name in os.environ:  # exported by the user (or by an earlier nanny of this process): keep
            continue
        for env in (getattr(nanny, "pre_spawn_env", None), getattr(nanny, "env", None)):
            if isinstance(env, dict):
                env.pop(name, None)


# ---------------------------------------------------------------------------------------------- validation


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"executor.{key} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ParamsError(f"executor.{key} must be at least {minimum}, got {value}")
    return value


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
    if system not in JOBQUEUE_SYSTEMS:
        close = difflib.get_close_matches(str(system), JOBQUEUE_SYSTEMS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(
            f"unknown executor.jobqueue.system {system!r}{hint}; expected one of {', '.join(JOBQUEUE_SYSTEMS)}"
        )
    accepted = _jobqueue_keys(system)
    for key in settings:
        check_key(key, ("system", *accepted), f"key in executor.jobqueue ({JOBQUEUE_SYSTEMS[system]})")
    for key in ("cores", "memory"):
        if settings.get(key) is None:
            raise ParamsError(
                f"executor.jobqueue needs {key} (per job), e.g. cores: 8, memory: 32GB; "
                "dask-jobqueue cannot size the jobs without it"
            )
    _int("jobqueue.cores", settings["cores"], 1)
    if settings.get("processes") is not None:
        _int("jobqueue.processes", settings["processes"], 1)
    for key in _MERGED_JOBQUEUE_KEYS[:1] + ("job_extra_directives", "job_script_prologue"):
        if key in settings and not (
            isinstance(settings[key], list) and all(isinstance(v, str) for v in settings[key])
        ):
            raise ParamsError(f"executor.jobqueue.{key} must be a list of strings, got {settings[key]!r}")
    return {"system": system, **settings}


def validate_executor(value: Any) -> str | dict[str, Any]:
    """Check the study file's ``executor`` and fill in its defaults.

    Args:
        value: ``"local"``, ``"dask"`` or a mapping with ``kind`` (``local`` / ``dask``) and the keys of
            :data:`LOCAL_DEFAULTS` / :data:`DASK_DEFAULTS`.

    Returns:
        ``"local"`` (a local executor with the defaults), the ``local`` mapping where a key differs from
        its default, or the ``dask`` mapping with every key of :data:`DASK_DEFAULTS`.

    Raises:
        ParamsError: naming the bad key or value, what is accepted and, for a mistyped key, the
            closest valid one.
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
            _int(key, cfg[key], 1)
    for key in ("gpus_per_worker", "retries", "min_jobs"):
        _int(key, cfg[key], 0)
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
    """Entry point of a run's own interpreter (outside Linux, see :data:`_FORK_SERVER`): read the task and the run from
    stdin, claim the process, run, report the status."""
    task, spec, study, progress, parent = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent)
    _run_here(task, spec, study, progress, status_fd)


def _child_env() -> dict[str, str]:
    """The environment of a run's process: this one's, importing helpers from where this process does,
    whatever put it on ``sys.path``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p and os.path.isdir(p)])
    return env


def _forker_main(request_fd: int, reply_fd: int) -> None:
    """Entry point of the fork server (:class:`_ForkServer`): read the task, then fork one child per run.

    The server imports helpers and the task's module once (unpickling the task imports it) and computes
    nothing, so each child starts as a fresh interpreter would after its imports: no run before it, no
    tensor in its allocator, no thread pool. The child runs the run as :func:`_own_process_main` does; the
    server waits for it and replies ``exit code <tab> status``. A server whose executor never sent a task
    (a command that ended before its first run) ends when the request pipe closes.
    """
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


#: Runs' own processes are forked from a server on Linux (where ``PR_SET_PDEATHSIG`` ties each to its parent);
#: elsewhere (macOS, where forking after importing system frameworks is unsafe; Windows) they are fresh interpreters.
_FORK_SERVER = sys.platform.startswith("linux")
_PRESTARTED: _ForkServer | None = None


def prestart_fork_server(cfg: str | Mapping[str, Any]) -> None:
    """For the executor ``cfg`` when it gives each run a process of its own on this machine (``local``,
    ``process_per_run``), fork its fork server from this process now, so that the server need not start an
    interpreter and import torch again (~5 s). Call it only from a process that has imported what it needs
    and has run no torch operation yet (``python -m helpers`` does, right after reading its parameters):
    the server and every run it forks inherit this process's state. The next :class:`LocalExecutor` run
    takes it; :func:`discard_prestarted` ends it if none did. Linux only (elsewhere nothing)."""
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
    """A child forked from this process, with the part of ``subprocess.Popen``'s interface the server uses."""

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
    """A process that has imported helpers and the task once, then forks a process per run.

    Starting an interpreter and importing torch, torchvision and helpers takes about 5 s on a 2-core CPU;
    a fork takes milliseconds. Each run still gets a process of its own that ends with it (its CPU peak
    memory is its own). If the executor's process dies, the kernel kills the server, and the server's
    death kills the run (``PR_SET_PDEATHSIG`` at each step, Linux).

    The server is a fresh interpreter, or (``fork=True``, :func:`prestart_fork_server`) a fork of this
    process, made before it ran any torch operation: the same imports, without paying them twice.
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
        """Run ``spec`` in a forked process: its ``(exit code, status)``, the status empty if the run's
        process died; if the server itself died, its exit code."""
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
    """The runs in order (dense runs come before the ``post_training`` runs that reuse them), each in a
    fresh process of its own (``process_per_run``, the default) or all in this process.

    A run's own process is forked from a server that imported helpers and the study once (:class:`_ForkServer`,
    Linux), or is a fresh interpreter (elsewhere).

    Args:
        process_per_run: give every run a fresh process of its own (see the module docstring).
    """

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

    def _run_forked(self, server: _ForkServer, task: Task, spec: RunSpec, study: Path, progress: bool) -> str:
        code, status = server.run(spec, study, progress)
        return self._status(task, spec, study, status, code)

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
        """Execute ``specs`` with ``task.run_one``; a run that raises is recorded as failed (``error.json``)
        and the grid goes on.

        Returns:
            ``run_id -> status`` (``completed``, ``diverged``, ``skipped`` or ``failed``).
        """
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
                    status = self._run_forked(server, task, spec, study, progress)
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
    """The Dask task of one run: ``task.run_one`` with ``threads`` torch threads.

    Args:
        task: the study's kind (its ``run_one``).
        spec: the run.
        study: the study folder (on a file system the workers share).
        threads: torch intra-op threads of the run (not part of the run id).
        gpus: the worker's GPUs; > 0 runs on a free one of them when ``device`` is ``cuda``.
        dependencies: results of the tasks this run waits for (the dense run it reuses).

    Returns:
        The run's status.
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
        """Submit one Dask task per run (``task.run_one``), wait for all, record the runs that failed after
        their retries.

        Returns:
            ``run_id -> status`` (``completed``, ``diverged``, ``skipped`` or ``failed``).
        """
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
    """The dask-jobqueue cluster of a validated ``dask`` executor with ``jobqueue`` settings.

    Each job runs ``processes`` (default 1) Dask workers, each with the resource ``run=1`` (or
    ``GPU=gpus_per_worker``) so a worker runs one run at a time (one per GPU). The scheduler runs in
    this process, with ``allowed_failures = retries``.

    Args:
        cfg: the executor mapping (:func:`validate_executor`).
        loopback: bind the scheduler to 127.0.0.1 without a dashboard (to render job scripts
            without listening on the network; jobs could not reach it).
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

    Args:
        cfg: the ``executor`` mapping, or a study's parameters (YAML file path or mapping) holding it;
            only the ``executor`` key is read and validated.

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
