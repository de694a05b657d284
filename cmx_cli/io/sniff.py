"""What a file is, from its first bytes: FASTA, VCF or BCF, plain or BGZF-compressed.

Used to choose how to read an input whatever its name (``calls.txt``, ``/dev/fd/63``) and to
say what a wrong file is instead of failing obscurely.
"""
from __future__ import annotations

import contextlib
import gzip
import re
import zlib
from pathlib import Path
from typing import Optional

GZIP_MAGIC = b"\x1f\x8b"
#: The UTF-8 byte-order mark some editors put at the start of a text file.
BYTE_ORDER_MARK = b"\xef\xbb\xbf"
SNIFF_BYTES = 4096
_MAGIC_KINDS = (
    (b"##fileformat=VCF", "VCF"), (b"#CHROM", "VCF"), (b"BCF\2", "BCF"),
    (b"BAM\1", "BAM"), (b"CRAM", "CRAM"), (b"##gff-version", "GFF"),
)


def is_bgzf(head: bytes) -> bool:
    """Whether a gzip header carries the BGZF 'BC' extra field (SAM spec, section 4.1)."""
    return len(head) >= 16 and head[:2] == GZIP_MAGIC and head[3] & 4 != 0 \
        and head[12:14] == b"BC"


def bgzf_name(path: Path, suffix: str = ".bgz") -> str:
    """Suggest a file name for the BGZF copy of ``path``."""
    stem = re.sub(r"\.(gz|bgz|bgzf)$", "", path.name, flags=re.IGNORECASE)
    return stem + suffix


def raw_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first bytes of a file as they are on disk.

    Raises:
        OSError: When it cannot be read.
    """
    with open(path, "rb") as handle:
        return handle.read(size)


def content_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first bytes of a file after decompression when it is gzip or BGZF.

    Raises:
        OSError, EOFError, zlib.error: When it cannot be read or decompressed.
    """
    if raw_head(path, 2) != GZIP_MAGIC:
        return raw_head(path, size)
    with gzip.open(path, "rb") as handle:
        return handle.read(size)


def input_kind(path: Path) -> Optional[str]:
    """``vcf``, ``bcf`` or ``fasta`` by content (VCF header, BCF magic, a '>' record), or
    None when the file is none of them or cannot be read."""
    with contextlib.suppress(OSError, EOFError, zlib.error):
        head = content_head(path)
        if head.startswith(b"BCF"):
            return "bcf"
        text = head.lstrip(BYTE_ORDER_MARK).lstrip()
        if text.startswith((b"##fileformat=VCF", b"#CHROM")):
            return "vcf"
        if text.startswith((b">", b";")):
            return "fasta"
    return None


def guess_kind(head: bytes) -> str:
    """Name what a file that is not what was expected probably is, for an error message."""
    if head.startswith(b"@"):
        return "it looks like FASTQ (records start with '@')"
    for magic, kind in _MAGIC_KINDS:
        if head.startswith(magic):
            return f"it looks like {kind}"
    if b"\0" in head or not is_text(head):
        return "it looks like a binary file"
    first_line = head.split(b"\n", 1)[0][:40].decode("utf-8", "replace")
    return f"the first line is {first_line!r}"


def is_text(data: bytes) -> bool:
    """Whether ``data`` decodes as UTF-8 (a multi-byte letter cut at the end is still text)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(data) - 3
    return True
