"""The study's files under faults: atomic writes that name the path when they fail, safe loads that say
which file is damaged, and moving damaged files aside.

Study folders live for days on laptops and cluster file systems, so files get damaged (a node dies
mid-write, a sync tool copies half a file, an editor saves over a JSON). This module imports nothing of
the package and gives every writer and reader one behaviour:

- :func:`atomic_write`: the previous file stays intact whatever happens; a failed write raises
  :class:`WriteFailedError` naming the path, the reason and what to do.
- :func:`load_torch`: ``weights_only=True`` only; any failure is a :class:`DamagedFileError` in our own
  words, since PyTorch's advise ``weights_only=False``, which would run code from the file
  (:func:`scrub_unsafe_advice`).
- :func:`set_aside`: moves a damaged file or folder into ``<study>/runs/.damaged/<run_id>-<time>/``,
  where nothing reads it again.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "FILE_MODE",
    "DAMAGED_DIR",
    "WriteFailedError",
    "DamagedFileError",
    "atomic_write",
    "load_torch",
    "describe_read_error",
    "scrub_unsafe_advice",
    "set_aside",
]

#: Name of the folder, under a study's ``runs/``, that holds damaged files and run folders set aside.
DAMAGED_DIR = ".damaged"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Mode of files written through a temporary file: what ``open`` would give (mkstemp's is 0600).
FILE_MODE = 0o666 & ~_umask()


class WriteFailedError(OSError):
    """A file could not be written; the previous file at that path, if any, is unchanged. ``errno`` is the
    underlying error's (``ENOSPC``, ``EDQUOT``, ``EACCES``, ...), ``filename`` the path, ``str()`` the message.
    """

    def __str__(self) -> str:
        return str(self.strerror)


class DamagedFileError(ValueError):
    """A file (``path``) exists but cannot be read as what it should be (truncated, overwritten,
    incompatible); ``reason`` says what is wrong in a few words."""

    def __init__(self, message: str, path: str | os.PathLike, reason: str) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.reason = reason


def _os_error_in_chain(exc: BaseException) -> OSError | None:
    """The first :class:`OSError` in ``exc``'s cause / context chain (torch.save wraps them in RuntimeError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _write_advice(code: int | None) -> tuple[str, str]:
    if code == errno.ENOSPC:
        return "no space left on device (ENOSPC)", "free space on that file system (or set `out` to a larger one)"
    if code == errno.EDQUOT:
        return "disk quota exceeded (EDQUOT)", "free space within your quota (or set `out` to another file system)"
    name = errno.errorcode.get(code or 0, "error")
    return f"{os.strerror(code).lower() if code else 'write error'} ({name})", "fix the folder or its permissions"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], mode: str = "w") -> None:
    """Write ``path`` (parent folders created) through a temporary file in its folder, opened with ``mode``
    (``"w"`` or ``"wb"``) and handed to ``write``, then ``fsync`` and :func:`os.replace`.

    Raises:
        WriteFailedError: the file could not be written (disk full, quota, permissions); the message is
            one line naming ``path``, the reason and the fix, and the previous file is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error_in_chain(exc) if isinstance(exc, Exception) else None
        if cause is None:
            raise
        reason, fix = _write_advice(cause.errno)
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise WriteFailedError(
            cause.errno, f"cannot write {path}: {reason}; {kept}; {fix}, then run the same command again", str(path)
        ) from None


def scrub_unsafe_advice(text: str) -> str:
    """``text`` without any sentence that advises loading with ``weights_only=False`` (unsafe: it runs
    code from the file)."""
    lines = []
    for line in text.split("\n"):
        sentences = re.split(r"(?<=[.!?])[ \t]+", line)
        kept = [s for s in sentences if not ("weights_only" in s and "False" in s)]
        if kept or not line:
            lines.append(" ".join(kept))
    return "\n".join(lines)


def describe_read_error(exc: BaseException) -> str:
    """What a failed read of a ``torch.save`` / JSON / CSV / NPZ file means, in a few words of our own."""
    message = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError):
        return "the file is missing"
    if isinstance(exc, EOFError) or not message:
        return "the file is empty or cut short"
    if "central directory" in message or "zip archive" in message or "not a zip file" in message.lower():
        return "not a complete archive (cut short or overwritten)"
    if "weights_only" in message or type(exc).__name__ == "UnpicklingError":
        return "not a file torch.save wrote (overwritten or garbled)"
    if isinstance(exc, UnicodeDecodeError):
        return "not text (overwritten or garbled)"
    detail = scrub_unsafe_advice(message)
    return f"{type(exc).__name__}: {detail[:160]}" if detail else type(exc).__name__


def load_torch(path: str | os.PathLike, *, what: str = "file", mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a message that helps.

    Args:
        path: the file.
        what: what the file is, for the message (``checkpoint``, ``model file``, ...).
        mmap: map tensors instead of reading them (a cheap check that the file is whole); a file that
            fails so is read whole before it counts as damaged.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DamagedFileError: the file exists but cannot be loaded safely; the message names it, says what is
            wrong and never suggests ``weights_only=False``.
    """
    import torch  # lazy: about 1 s, and the table writers (results, plots) use this module without torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"{what} {path} not found", str(path))
    for mapped in (True, False) if mmap else (False,):  # some file systems cannot map: then read it whole
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
            reason = describe_read_error(exc)
    raise DamagedFileError(f"{what} {path} cannot be read: {reason}", path, reason)


def set_aside(study: str | os.PathLike, run_id: str, path: str | os.PathLike) -> Path:
    """Move a damaged file or run folder ``path`` of run ``run_id`` (on the study's file system: a rename)
    to ``<study>/runs/.damaged/<run_id>-<time>/`` and return where it is now. A folder becomes that folder;
    a file goes into it under its own name. Nothing reads ``runs/.damaged`` again: delete it when done.
    """
    path = Path(path)
    root = Path(study) / "runs" / DAMAGED_DIR
    root.mkdir(parents=True, exist_ok=True)
    base = f"{run_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        target = root / (base if n == 0 else f"{base}-{n}")
        try:
            if path.is_dir():
                os.rename(path, target)  # fails if target exists and is not empty
                return target
            target.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue
            raise
        os.rename(path, target / path.name)
        return target / path.name
    raise FileExistsError(errno.EEXIST, f"no free name under {root} for {base}", str(root))
