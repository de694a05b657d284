"""Reading FASTA files through pyfaidx: where the index goes, what is valid, one record at a time.

Plain and bgzip-compressed (BGZF) FASTA are read through a ``.fai`` index (and a ``.gzi``
block index for BGZF), so records are fetched one by one and memory does not grow with the
file. The index is written beside the FASTA, or into a per-user cache when that directory
is read-only. Every failure is a :class:`~cmx_cli.errors.CmxError` naming the file and,
where there is one, the record.
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import pyfaidx

from cmx_cli import alphabet
from cmx_cli.errors import CmxError
from cmx_cli.io.fasta_index import build_index, choose_index, marked_index
from cmx_cli.io.output import write_error
from cmx_cli.io.sniff import (
    BYTE_ORDER_MARK, GZIP_MAGIC, bgzf_name, content_head, guess_kind, is_bgzf, raw_head)

PathLike = Union[str, os.PathLike]

#: Suffixes that make pyfaidx read a file through Bio.bgzf; any other name is read as text.
BGZF_SUFFIXES = (".gz", ".bgz")
DNA_ONLY_HINT = "cmx reads DNA only (A C G T, N and IUPAC codes); remove protein or gapped records"
# What pyfaidx raises (or lets through from Bio.bgzf, zlib and the codecs) on a bad file.
_READ_ERRORS = (
    pyfaidx.FastaIndexingError,
    pyfaidx.UnsupportedCompressionFormat,
    ValueError,  # duplicate names; UnicodeDecodeError on binary input
    OSError,
    EOFError,
    IndexError,
    RuntimeError,  # pyfaidx's "Unhandled exception during fasta indexing"
    struct.error,
    zlib.error,
)


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record, encoded.

    Attributes:
        name: The first word of the header line (the index key).
        description: The whole header line after '>', name included.
        tokens: (L,) uint8 tokens from :func:`cmx_cli.alphabet.encode`, all valid.
        lowercase: (L,) bool, True at soft-masked letters; only when asked for.
    """

    name: str
    description: str
    tokens: np.ndarray
    lowercase: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def open_fasta(path: PathLike) -> pyfaidx.Fasta:
    """Open a plain or BGZF FASTA file, building or refreshing its index as needed.

    The index goes beside the file unless the directory is read-only; then it goes to
    ``$XDG_CACHE_HOME/cmx/fai/`` (or ``~/.cache/cmx/fai/``, or a private temporary
    directory), under a name derived from the file's absolute path, size and mtime. An
    existing index is used only when it describes the file as it is
    (:mod:`cmx_cli.io.fasta_index`).

    Args:
        path: The FASTA file.

    Returns:
        An open :class:`pyfaidx.Fasta` that returns letters as ``str`` with case kept.
        Close it (or use it as a context manager) when done.

    Raises:
        CmxError: The file is missing, empty, not FASTA, plain-gzip compressed, has
            duplicate record names or inconsistent line lengths.
    """
    path = Path(path)
    bgzf, marked = _check_file(path)
    index = None
    try:
        index = marked_index(path) if marked else choose_index(path, bgzf)
        if index.build:
            index = build_index(path, index, bgzf)
        with warnings.catch_warnings():
            # The index was checked against the file (whatever its mtime says), or built, so
            # pyfaidx's warning that it is older than the file says nothing.
            warnings.filterwarnings("ignore", message="Index file .* is older than FASTA",
                                    category=RuntimeWarning)
            return pyfaidx.Fasta(
                str(path),
                indexname=str(index.fai),
                gzi_indexname=str(index.gzi) if bgzf else None,
                as_raw=True,
                sequence_always_upper=False,
                read_long_names=False,
                duplicate_action="stop",
                rebuild=False,
                build_index=False,
            )
    except _READ_ERRORS as error:
        raise _translate(path, error, index.fai if index is not None else None) from error


class FastaFile:
    """An indexed FASTA file whose every read is checked; a context manager.

    Args:
        path: The FASTA file (plain or BGZF).

    Raises:
        CmxError: As :func:`open_fasta`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._fasta = open_fasta(self.path)

    def lengths(self) -> dict[str, int]:
        """Every record's name and length, in file order, from the index.

        Raises:
            CmxError: For a record with no letters.
        """
        lengths = {}
        for name, record in self._fasta.faidx.index.items():
            if record.rlen == 0:
                raise CmxError.in_record(
                    self.path, name, "the record has no sequence letters",
                    "remove the empty record, or check for a stray '>' line",
                )
            lengths[name] = int(record.rlen)
        return lengths

    def description(self, name: str) -> str:
        """The whole header line of a record after '>', name included."""
        try:
            return _description(self._fasta, name)
        except _READ_ERRORS as error:
            raise self._unreadable(name, error) from error

    def letters(self, name: str, start: int, end: int) -> str:
        """The letters of bases ``[start, end)`` (0-based) of a record, case kept.

        Raises:
            CmxError: When the file cannot be read there, or its lines are ragged.
        """
        try:
            letters = self._fasta.get_seq(name, start + 1, end)
        except _READ_ERRORS as error:
            raise self._unreadable(name, error, start, end) from error
        if len(letters) != end - start:
            # pyfaidx accepts a record whose last line is longer than the others and then
            # reads past it (into the next header); the length gives it away.
            raise CmxError.in_record(
                self.path, name, "the sequence lines have inconsistent lengths", _REWRAP_HINT)
        return letters

    def tokens(self, name: str, start: int, end: int) -> tuple[str, np.ndarray]:
        """The letters and tokens of bases ``[start, end)`` of a record.

        Raises:
            CmxError: As :meth:`letters`, and for a letter that is not DNA (naming it and
                its 1-based position in the record).
        """
        letters = self.letters(name, start, end)
        tokens = alphabet.encode(letters)
        bad = alphabet.first_invalid(tokens)
        if bad >= 0:
            raise CmxError.in_record(
                self.path, name, f"invalid letter {letters[bad]!r} at position {start + bad + 1:,}",
                DNA_ONLY_HINT,
            )
        return letters, tokens

    def check_letters(self, chunk: int = 1 << 23) -> dict[str, int]:
        """Read every record once, so that a letter that is not DNA stops a run before it
        starts rather than whenever a read first covers it; returns :meth:`lengths`."""
        lengths = self.lengths()
        for name, length in lengths.items():
            for start in range(0, length, chunk):
                self.tokens(name, start, min(start + chunk, length))
        return lengths

    def _unreadable(self, name: str, error: Exception, start: int = 0,
                    end: Optional[int] = None) -> CmxError:
        where = "the header line" if end is None else f"bases {start + 1:,}-{end:,}"
        return CmxError.in_record(
            self.path, name, f"cannot read {where} ({_one_line(error)})",
            "check that the file is plain-text FASTA or BGZF-compressed FASTA",
        )

    def close(self) -> None:
        """Close the file."""
        self._fasta.close()

    def __enter__(self) -> "FastaFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def iter_records(path: PathLike, with_lowercase: bool = False) -> Iterator[FastaRecord]:
    """Yield the records of a FASTA file in file order, fetching one at a time.

    Args:
        path: The FASTA file.
        with_lowercase: Also return the soft-mask flag of each letter.

    Yields:
        Each record, validated and encoded.

    Raises:
        CmxError: As :class:`FastaFile`: a record with no letters, ragged lines, or a
            letter that is not DNA (naming the letter and its 1-based position).
    """
    with FastaFile(path) as fasta:
        for name, length in fasta.lengths().items():
            description = fasta.description(name)
            letters, tokens = fasta.tokens(name, 0, length)
            lowercase = alphabet.lowercase_mask(letters) if with_lowercase else None
            yield FastaRecord(name, description, tokens, lowercase)


def count_records(path: PathLike) -> int:
    """Return the number of records in a FASTA file, from its index.

    Raises:
        CmxError: As :func:`open_fasta`.
    """
    with open_fasta(path) as fasta:
        # Not len(fasta): pyfaidx defines that as the total number of bases.
        return len(fasta.faidx.index)


_REWRAP_HINT = (
    "every sequence line of a record but the last must have the same length; "
    "rewrap the file, e.g. `seqkit seq -w 60 in.fa > out.fa`"
)


def _description(fasta: pyfaidx.Fasta, name: str) -> str:
    """Return the header line after '>' of one record.

    pyfaidx returns the text between the end of the previous record's sequence and this
    one's, minus its first and last character. That text also holds any ';' comments and
    blank lines before the header (then the '>' is kept), and a '\\r' from CRLF files.
    """
    lines = fasta.faidx.get_long_name(name).splitlines()
    line = lines[-1] if lines else ""
    if not line.startswith(name):  # the header's '>' was not the first character cut
        line = line[1:]
    return line.rstrip()


def _check_file(path: Path) -> tuple[bool, bool]:
    """Check that a path is a non-empty, FASTA-looking file; return whether it is BGZF and
    whether it starts with a UTF-8 byte-order mark."""
    if not path.exists():
        raise CmxError.in_record(
            path, None, "no such file", "check the path (inputs are PATH or PATH:LABEL)"
        )
    if path.is_dir():
        raise CmxError.in_record(path, None, "this is a directory, not a file", "give a FASTA file")
    try:
        head = raw_head(path)
    except OSError as error:
        raise CmxError.in_record(
            path, None, f"the file cannot be read ({error.strerror})", "check its permissions"
        ) from error
    if not head:
        raise CmxError.in_record(path, None, "the file is empty", _NOT_FASTA_HINT)
    compressed = head.startswith(GZIP_MAGIC)
    try:
        content = content_head(path)
    except (OSError, EOFError, zlib.error) as error:
        raise CmxError.in_record(
            path, None, f"the file cannot be decompressed ({_one_line(error)})",
            "check that the file was completely written, or recompress it with `bgzip`",
        ) from error
    marked = content.startswith(BYTE_ORDER_MARK)
    stripped = content[len(BYTE_ORDER_MARK):].lstrip() if marked else content.lstrip()
    if stripped and stripped[:1] not in (b">", b";"):
        raise CmxError.in_record(
            path, None, f"the file is not FASTA: {guess_kind(stripped)}", _NOT_FASTA_HINT
        )
    if b"\r" in content and b"\n" not in content:
        raise CmxError.in_record(
            path, None, "its lines end in a carriage return (CR) only, the old Mac format, so "
            "the whole file reads as one line",
            f"convert the line ends, e.g. `tr '\\r' '\\n' < {path.name} > fixed.fa`")
    named_bgzf = path.name.lower().endswith(BGZF_SUFFIXES)
    if compressed and not is_bgzf(head):
        raise CmxError.in_record(
            path, None,
            "the file is compressed with plain gzip (not BGZF), so it cannot be indexed",
            f"recompress it with `gunzip -c {path.name} | bgzip > {bgzf_name(path)}`",
        )
    if compressed and not named_bgzf:
        raise CmxError.in_record(
            path, None, "the file is BGZF-compressed but its name does not end in .gz or .bgz",
            f"rename it, e.g. to {bgzf_name(path, '.gz')}",
        )
    if named_bgzf and not compressed:
        raise CmxError.in_record(
            path, None, "the name ends in .gz or .bgz but the file is not compressed",
            "rename it to end in .fa, or compress it with `bgzip`",
        )
    if marked and compressed:
        raise CmxError.in_record(
            path, None, "the file starts with a UTF-8 byte-order mark inside its compression",
            f"remove it: `zcat {path.name} | sed '1s/^\\xEF\\xBB\\xBF//' | bgzip > "
            f"{bgzf_name(path)}`")
    return named_bgzf, marked


_NOT_FASTA_HINT = "give a FASTA file whose records start with a '>' header line"


def _translate(path: Path, error: Exception, index: Optional[Path] = None) -> CmxError:
    """Turn an exception raised by pyfaidx while indexing (``index``, when known) into a
    one-line CmxError."""
    text = _one_line(error)
    duplicate = re.search(r'Duplicate key "(.*)"', text)
    if duplicate:
        return CmxError.in_record(
            path, duplicate.group(1), "the record name appears more than once",
            "record names (the first word of each '>' line) must be unique; "
            "rename or remove the duplicate",
        )
    inconsistent = re.search(r"Inconsistent line found in >(.*) at line (\d+)", text)
    if inconsistent:
        return CmxError.in_record(
            path, inconsistent.group(1),
            f"line {inconsistent.group(2)}: the sequence lines have inconsistent lengths",
            _REWRAP_HINT,
        )
    nameless = re.search(r"Bad sequence name .* at line (\d+)", text)
    if nameless:  # pyfaidx counts this line from 0
        return CmxError.in_record(
            path, None, f"line {int(nameless.group(1)) + 1}: a '>' header line has no name",
            "give every record a name after the '>'",
        )
    if "does not contain a valid sequence" in text:
        return CmxError.in_record(
            path, None, "the file contains no FASTA records", _NOT_FASTA_HINT
        )
    if isinstance(error, UnicodeDecodeError):
        return _not_utf8(path)
    unhandled = re.search(r"during fasta indexing at entry (\S+?)(?:Please|$)", text)
    if unhandled:  # pyfaidx cannot place blank lines (two or more at the end of the file)
        return CmxError.in_record(
            path, unhandled.group(1), "the index cannot be built: the file has blank lines "
            "it cannot place", "remove the blank lines, e.g. with `sed '/^$/d'`")
    if "EOF marker not found" in text:
        return CmxError.in_record(
            path, None, "the BGZF file has no end-of-file marker, so it is probably truncated",
            "copy or download it again, or recompress it with `bgzip`",
        )
    if "may not be writable" in text:
        # pyfaidx raises a new IOError without the cause's errno: a full device or a
        # file-size limit is said as for any other output (issue 23).
        cause = error.__context__
        if index is not None and isinstance(cause, OSError) and cause.errno is not None:
            return write_error(index, cause, "no index was written")
        return CmxError.in_record(
            path, None, "cannot write the index file",
            "make the directory writable, or set XDG_CACHE_HOME to a writable directory",
        )
    return CmxError.in_record(
        path, None, f"the file cannot be read as FASTA ({text})", _NOT_FASTA_HINT
    )


def _not_utf8(path: Path) -> CmxError:
    """The error for a FASTA with bytes that are not UTF-8 text, naming the first such line."""
    record, number, column, byte, header = None, 0, 0, 0, False
    with contextlib.suppress(OSError):
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                header = line.startswith(b">")
                if header:
                    record = line[1:].split(maxsplit=1)[0].decode("utf-8", "replace") or None
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    column, byte = error.start + 1, line[error.start]
                    break
    if column and header:  # a description in another encoding (Latin-1, say)
        return CmxError.in_record(
            path, record, f"line {number:,}, column {column}: the header holds the byte "
            f"0x{byte:02X}, which is not UTF-8",
            f"convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.fa`")
    where = f"line {number:,}: " if column else ""
    return CmxError.in_record(path, record, f"{where}the file holds bytes that are not text, "
                              "so it is not FASTA", _NOT_FASTA_HINT)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
