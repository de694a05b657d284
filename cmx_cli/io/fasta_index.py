"""The index of a FASTA file: where it lives, and whether it can be trusted.

pyfaidx reads a FASTA through a ``.fai`` index (and a ``.gzi`` block index for BGZF). The
index goes beside the FASTA unless that directory is read-only; then it goes to
``$XDG_CACHE_HOME/cmx/fai/`` (or ``~/.cache/cmx/fai/``, or a private temporary directory),
under a name derived from the FASTA's absolute path, size and mtime.

An index is evidence, not truth (DESIGN.md, "Trust"). A ``.fai`` newer than its FASTA may
still describe an older version of it (``cp -p``, ``rsync -a``, a tar archive, ``touch``),
and then records go missing, are read short, or are read shifted. So an existing index is
checked against the file before use (:func:`index_problem`): each record's header line must
stand right before the offset the index gives, its lines must end where the index says,
and nothing but white space may follow the last record. An index that fails is never used,
and never silently overwritten: a fresh one is built in the cache and the user is told.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

from cmx_cli.errors import shortened
from cmx_cli.io.output import atomic_output
from cmx_cli.io.sniff import BYTE_ORDER_MARK

LOG = logging.getLogger("cmx_cli")
#: How far before a record the index check looks for its header line, in bytes.
_HEADER_WINDOW = 1 << 16
_NEWLINES = b"\r\n"


class IndexChoice(NamedTuple):
    """Where to read (or build) a FASTA's index, and whether it may be rebuilt there."""

    fai: Path
    gzi: Path
    build: bool  # no usable index there: pyfaidx builds one


def choose_index(path: Path, bgzf: bool) -> IndexChoice:
    """Choose the index files of ``path``: the ones beside it when they are valid; else new
    ones beside it when it has none and its directory is writable; else the cache's.

    A stale index beside the FASTA is left as it is, with a warning on the ``cmx_cli``
    logger.
    """
    beside = IndexChoice(path.with_name(path.name + ".fai"), path.with_name(path.name + ".gzi"),
                         build=False)
    needed = (beside.fai, beside.gzi) if bgzf else (beside.fai,)
    if all(index.exists() for index in needed):
        problem = _problem_once(path, beside.fai, beside.gzi if bgzf else None)
        if problem is None:
            return beside
        cached = _cached(path, bgzf)
        _warn_once(f"{beside.fai} does not describe {path} as it is now ({problem}), so cmx "
                   f"does not use it; it reads through a fresh index in {cached.fai.parent} "
                   f"and leaves yours as it is (refresh it with `samtools faidx {path}`)")
        return cached
    if not any(index.exists() for index in needed) and _can_write(path.parent, needed):
        return beside._replace(build=True)
    return _cached(path, bgzf)


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """Warn on the ``cmx_cli`` logger, once per message in a process."""
    LOG.warning(message)


def marked_index(path: Path) -> IndexChoice:
    """The index of a plain FASTA that starts with a UTF-8 byte-order mark, which pyfaidx
    cannot index: built from a copy without the mark, its offsets moved past the mark, and
    kept in the cache (other tools would not read such an index)."""
    choice = _cached(path, bgzf=False)
    if not choice.build:
        return choice
    import pyfaidx

    with tempfile.TemporaryDirectory(prefix="cmx-bom-") as scratch:
        copy = Path(scratch) / path.name
        with open(path, "rb") as source, open(copy, "wb") as target:
            source.read(len(BYTE_ORDER_MARK))
            shutil.copyfileobj(source, target)
        pyfaidx.Faidx(str(copy)).close()
        lines = []
        for line in (copy.parent / f"{copy.name}.fai").read_text().splitlines():
            fields = line.split("\t")
            fields[2] = str(int(fields[2]) + len(BYTE_ORDER_MARK))
            lines.append("\t".join(fields) + "\n")
    with atomic_output(choice.fai) as stream:
        stream.write("".join(lines))
    return choice._replace(build=False)


def build_index(path: Path, choice: IndexChoice, bgzf: bool) -> IndexChoice:
    """Build the index files of ``path`` where ``choice`` says, atomically: pyfaidx writes
    them in a scratch directory beside them, and they are renamed into place, so a reader
    (another torchrun rank, another cmx) sees a whole index or none.

    Returns:
        ``choice``, marked as built.

    Raises:
        Whatever pyfaidx raises for a file it cannot index (see ``fasta._translate``).
    """
    import pyfaidx

    scratch = Path(tempfile.mkdtemp(prefix=".cmx-index-", dir=choice.fai.parent))
    try:
        fai, gzi = scratch / choice.fai.name, scratch / choice.gzi.name
        pyfaidx.Faidx(str(path), indexname=str(fai), gzi_indexname=str(gzi) if bgzf else None,
                      duplicate_action="stop", read_long_names=False).close()
        if bgzf:
            os.replace(gzi, choice.gzi)
        os.replace(fai, choice.fai)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return choice._replace(build=False)


def _cached(path: Path, bgzf: bool) -> IndexChoice:
    """The cache's index files for ``path`` (keyed by its absolute path, size and mtime),
    checked when they exist."""
    status = path.stat()
    key = f"{path.resolve()}\0{status.st_size}\0{status.st_mtime_ns}"
    stem = f"{hashlib.sha256(key.encode()).hexdigest()[:20]}-{path.name}"
    cache = _cache_dir()
    choice = IndexChoice(cache / f"{stem}.fai", cache / f"{stem}.gzi", build=True)
    if choice.fai.exists() and (not bgzf or choice.gzi.exists()):
        if _problem_once(path, choice.fai, choice.gzi if bgzf else None) is None:
            return choice._replace(build=False)
        for index in (choice.fai, choice.gzi):
            index.unlink(missing_ok=True)
    return choice


@functools.lru_cache(maxsize=256)
def _checked(path: str, fai: str, gzi: Optional[str], stamp: tuple) -> Optional[str]:
    """:func:`index_problem`, once per file state (``stamp``) in a process."""
    return index_problem(Path(path), Path(fai), Path(gzi) if gzi else None)


def _problem_once(path: Path, fai: Path, gzi: Optional[Path]) -> Optional[str]:
    stamp = tuple((file.stat().st_size, file.stat().st_mtime_ns)
                  for file in (path, fai, gzi) if file is not None)
    return _checked(str(path), str(fai), str(gzi) if gzi else None, stamp)


class _Entry(NamedTuple):
    name: str
    length: int
    offset: int
    line_bases: int
    line_bytes: int


def index_problem(path: Path, fai: Path, gzi: Optional[Path] = None) -> Optional[str]:
    """Say why a ``.fai`` (and ``.gzi``) does not describe a FASTA file, or None when it does.

    Checks every record the index lists: its header line stands right before the offset
    the index gives and names it; where its first line and its last base end, a line ends;
    after the last record there is only white space.
    """
    try:
        entries = _read_fai(fai)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"the index cannot be read ({error})"
    try:
        with _RawFasta(path, gzi) as raw:
            previous_end = 0
            for entry in entries:
                problem = _entry_problem(raw, entry, previous_end)
                if problem:
                    return f"record '{shortened(entry.name)}': {problem}"
                previous_end = _record_end(entry)
            tail = raw.read(previous_end, min(raw.size - previous_end, _HEADER_WINDOW))
            if raw.size - previous_end > _HEADER_WINDOW or tail.strip():
                return "the file goes on after the last record it lists"
    except (OSError, ValueError, EOFError, struct.error) as error:
        return f"the file cannot be read where the index points ({error})"
    return None


def _read_fai(fai: Path) -> list[_Entry]:
    entries = []
    for line in fai.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} columns where a FASTA index has 5")
        entries.append(_Entry(fields[0], *map(int, fields[1:])))
    return entries


def _record_end(entry: _Entry) -> int:
    """The byte after a record's last base."""
    if entry.length == 0 or entry.line_bases == 0:
        return entry.offset
    lines = -(-entry.length // entry.line_bases)  # ceil
    full = lines - 1
    return entry.offset + full * entry.line_bytes + entry.length - full * entry.line_bases


def _entry_problem(raw: "_RawFasta", entry: _Entry, previous_end: int) -> Optional[str]:
    if not previous_end <= entry.offset <= raw.size:
        return "the index places it outside the file, or out of order"
    start = max(previous_end, entry.offset - _HEADER_WINDOW)
    before = raw.read(start, entry.offset - start)
    # A header line longer than the window (a 2 MB description, issue 23): read back to its
    # start, a window more each time.
    while start > previous_end and b"\n" not in before.rstrip(b"\r\n"):
        extended = max(previous_end, start - max(len(before), _HEADER_WINDOW))
        before = raw.read(extended, start - extended) + before
        start = extended
    header = before.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].removeprefix(BYTE_ORDER_MARK)
    words = header[1:].split()
    if not before.endswith(b"\n") or not header.startswith(b">") or not words \
            or words[0].decode("utf-8", "replace") != entry.name:
        return "its header line is not where the index says"
    if entry.length == 0:
        return None
    newline = entry.line_bytes - entry.line_bases
    if entry.length > entry.line_bases:
        first_end = raw.read(entry.offset + entry.line_bases, newline)
        if len(first_end) != newline or first_end.strip(_NEWLINES):
            return "its first line is not as long as the index says"
    end = _record_end(entry)
    last = raw.read(end - 1, 1 + newline)
    if last[:1] in (b"", b"\r", b"\n") or last[1:].strip(_NEWLINES):
        return "its sequence does not end where the index says"
    return None


class _RawFasta:
    """The bytes of a FASTA file at uncompressed offsets (plain, or BGZF through its .gzi)."""

    def __init__(self, path: Path, gzi: Optional[Path]) -> None:
        if gzi is None:
            self._file = open(path, "rb")
            self._blocks: Optional[list[tuple[int, int]]] = None
            self._starts: list[int] = []
            self.size = os.fstat(self._file.fileno()).st_size
            return
        from Bio import bgzf

        data = gzi.read_bytes()
        (count,) = struct.unpack_from("<Q", data)
        pairs = struct.unpack_from(f"<{2 * count}Q", data, 8)
        # (compressed offset, uncompressed offset) of each block; the first is implicit.
        self._blocks = [(0, 0)] + [(pairs[2 * i], pairs[2 * i + 1]) for i in range(count)]
        self._starts = [start for _, start in self._blocks]
        self._file = bgzf.BgzfReader(str(path), "rb")
        try:
            last_compressed, last_start = self._blocks[-1]
            self._file.seek(bgzf.make_virtual_offset(last_compressed, 0))
            rest = 0
            while True:  # the last block (and the end-of-file marker)
                chunk = self._file.read(1 << 16)
                if not chunk:
                    break
                rest += len(chunk)
            self.size = last_start + rest
        except BaseException:
            self._file.close()
            raise

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from uncompressed ``offset``."""
        if size <= 0 or offset >= self.size:
            return b""
        if self._blocks is None:
            self._file.seek(offset)
        else:
            from bisect import bisect_right

            from Bio import bgzf

            block = self._blocks[bisect_right(self._starts, offset) - 1]
            self._file.seek(bgzf.make_virtual_offset(block[0], offset - block[1]))
        data = self._file.read(size)
        return data if isinstance(data, bytes) else data.encode("latin-1")

    def __enter__(self) -> "_RawFasta":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()


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
