"""Where the index of a FASTA file lives: beside it, or in a per-user cache.

pyfaidx reads a FASTA through a ``.fai`` index (and a ``.gzi`` block index for BGZF). The
index goes beside the FASTA unless that directory is read-only; then it goes to
``$XDG_CACHE_HOME/cmx/fai/`` (or ``~/.cache/cmx/fai/``, or a private temporary directory),
under a name derived from the FASTA's absolute path, size and mtime.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def index_paths(path: Path, bgzf: bool) -> tuple[Path, Path]:
    """Choose where the .fai and .gzi index files of ``path`` live.

    Beside the FASTA when they are already there and fresh, or when they can be written
    there; otherwise in the per-user cache, keyed by absolute path, size and mtime so that
    a changed file gets a fresh index.
    """
    beside = (path.with_name(path.name + ".fai"), path.with_name(path.name + ".gzi"))
    needed = beside if bgzf else beside[:1]
    if all(_is_fresh(index, path) for index in needed) or _can_write(path.parent, needed):
        return beside
    status = path.stat()
    key = f"{path.resolve()}\0{status.st_size}\0{status.st_mtime_ns}"
    stem = f"{hashlib.sha256(key.encode()).hexdigest()[:20]}-{path.name}"
    cache = _cache_dir()
    return cache / f"{stem}.fai", cache / f"{stem}.gzi"


def _is_fresh(index: Path, fasta: Path) -> bool:
    """Whether an index file exists and is not older than the FASTA (pyfaidx's rule)."""
    try:
        return index.stat().st_mtime >= fasta.stat().st_mtime
    except OSError:
        return False


def _can_write(directory: Path, files: tuple[Path, ...]) -> bool:
    """Whether the index files can be created or replaced in ``directory``."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    return all(not file.exists() or os.access(file, os.W_OK) for file in files)


def _cache_dir() -> Path:
    """Return a writable per-user directory for index files of read-only FASTA files."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    try:
        # The XDG spec says to ignore a relative XDG_CACHE_HOME.
        root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        cache = root / "cmx" / "fai"
        cache.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home directory
        return _private_tempdir()
    return cache if os.access(cache, os.W_OK | os.X_OK) else _private_tempdir()


@functools.lru_cache(maxsize=None)
def _private_tempdir() -> Path:
    """Return a temporary directory for this process, removed at exit."""
    directory = tempfile.mkdtemp(prefix="cmx-fai-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Path(directory)
