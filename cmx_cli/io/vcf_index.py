"""What a VCF's .tbi or .csi index says, read by cmx itself, to tell a stale index from a
sound one.

pysam lists an index's contigs but not what htslib keeps beside them: the chunks of each
bin and, in the pseudo-bin, the number of records of each contig (what ``bcftools index
--stats`` prints). Both formats are BGZF-compressed little-endian binary (the tabix and
CSI specifications, hts-specs ``tabix.pdf`` and ``CSIv1.pdf``); :func:`read_index` reads
them in a few milliseconds for a whole genome's index.

Two checks use them (:mod:`cmx_cli.io.vcf_reader`, issue 23, case 3):

* :meth:`VariantIndex.has_records_within`: a region query that returns nothing where the
  index has records whose whole span lies inside the region means the index describes
  another version of the file.
* :func:`offsets_problem`: an index whose chunks point where no BGZF block starts (or, in a
  text VCF, into the middle of a line) was built from another version of the file; htslib
  then reads a record from the middle and calls the file truncated.
"""
from __future__ import annotations

import contextlib
import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

_BGZF_HEADER = b"\x1f\x8b\x08\x04"
#: Chunks whose offsets :func:`offsets_problem` checks at most (each reads one block).
_MAX_CHECKED_CHUNKS = 2000


@dataclass
class ContigIndex:
    """One contig of an index.

    Attributes:
        bins: Bin number -> its chunks, ``(start, end)`` BGZF virtual offsets.
        mapped: Records of the contig (None when the index has no pseudo-bin).
    """

    bins: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    mapped: Optional[int] = None


@dataclass
class VariantIndex:
    """A .tbi or .csi index: its binning scheme and contigs by reference number."""

    path: Path
    min_shift: int
    depth: int
    contigs: list[ContigIndex]

    @property
    def pseudo_bin(self) -> int:
        """The bin number that holds a contig's counts, not records."""
        return ((1 << ((self.depth + 1) * 3)) - 1) // 7 + 1

    def bin_span(self, number: int) -> tuple[int, int]:
        """The 0-based half-open span of the genome that bin ``number`` covers."""
        level, first = 0, 0
        while level < self.depth and number >= first + (1 << (3 * level)):
            first += 1 << (3 * level)
            level += 1
        size = 1 << (self.min_shift + 3 * (self.depth - level))
        start = (number - first) * size
        return start, start + size

    def has_records_within(self, reference: int, start0: int, end0: Optional[int]) -> bool:
        """Whether the index lists a record that lies wholly inside ``[start0, end0)``: a bin
        holds only records inside its span, so a bin inside the region with chunks has one."""
        if not 0 <= reference < len(self.contigs):
            return False
        contig = self.contigs[reference]
        if start0 == 0 and end0 is None and contig.mapped is not None:
            return contig.mapped > 0
        for number, chunks in contig.bins.items():
            if number == self.pseudo_bin or not chunks:
                continue
            start, end = self.bin_span(number)
            if start >= start0 and (end0 is None or end <= end0):
                return True
        return False

    def chunk_starts(self, reference: Optional[int] = None) -> list[int]:
        """The virtual offsets where the chunks of a contig (or of every contig) start."""
        contigs = self.contigs if reference is None else self.contigs[reference:reference + 1]
        return sorted({start for contig in contigs for number, chunks in contig.bins.items()
                       if number != self.pseudo_bin for start, _ in chunks})


def index_path(vcf: Path) -> Optional[Path]:
    """The index htslib uses for a VCF (``.csi`` before ``.tbi``), or None."""
    for suffix in (".csi", ".tbi"):
        candidate = Path(f"{vcf}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def read_index(path: Path) -> Optional[VariantIndex]:
    """Read a .tbi or .csi file; None when it cannot be read or is of another kind."""
    with contextlib.suppress(OSError, EOFError, zlib.error, struct.error, ValueError):
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        return _parse(path, data)
    return None


def _parse(path: Path, data: bytes) -> Optional[VariantIndex]:
    position = 0

    def take(form: str) -> tuple:
        nonlocal position
        values = struct.unpack_from(form, data, position)
        position += struct.calcsize(form)
        return values

    magic = data[:4]
    position = 4
    if magic == b"TBI\x01":
        n_ref = take("<i")[0]
        take("<6i")
        names_length = take("<i")[0]
        position += names_length
        min_shift, depth, csi = 14, 5, False
    elif magic == b"CSI\x01":
        min_shift, depth, aux_length = take("<3i")
        position += aux_length
        n_ref = take("<i")[0]
        csi = True
    else:
        return None
    index = VariantIndex(path, min_shift, depth, [])
    for _ in range(n_ref):
        contig = ContigIndex()
        for _ in range(take("<i")[0]):
            number = take("<I")[0]
            if csi:
                take("<Q")  # loffset
            n_chunk = take("<i")[0]
            chunks = list(struct.iter_unpack("<QQ", data[position:position + 16 * n_chunk]))
            position += 16 * n_chunk
            if number == index.pseudo_bin and len(chunks) == 2:
                contig.mapped = chunks[1][0]
            else:
                contig.bins[number] = chunks
        if not csi:
            intervals = take("<i")[0]
            position += 8 * intervals  # the linear index
        index.contigs.append(contig)
    return index


def offsets_problem(vcf: Path, index: VariantIndex, reference: Optional[int] = None,
                    text: bool = True) -> Optional[str]:
    """Say how the index's chunk offsets do not fit the file, or None when they all do.

    Args:
        vcf: The BGZF VCF (or BCF) file.
        index: Its index.
        reference: Check only this contig's chunks.
        text: The file is a text VCF, whose chunks start at the start of a line.
    """
    size = vcf.stat().st_size
    with open(vcf, "rb") as handle:
        for virtual in index.chunk_starts(reference)[:_MAX_CHECKED_CHUNKS]:
            block, within = virtual >> 16, virtual & 0xFFFF
            if block >= size:
                return f"it points {block - size:,} bytes past the end of the file"
            handle.seek(block)
            head = handle.read(18)
            if head[:4] != _BGZF_HEADER or head[12:14] != b"BC":
                return f"it points to byte {block:,}, where no compressed block starts"
            if not text or within == 0:
                continue
            block_size = struct.unpack_from("<H", head, 16)[0] + 1
            handle.seek(block)
            try:
                content = zlib.decompress(handle.read(block_size)[18:-8], -15)
            except zlib.error:
                return f"it points to byte {block:,}, where no compressed block starts"
            if within > len(content) or content[within - 1:within] != b"\n":
                return f"it points into the middle of a record (block at byte {block:,})"
    return None
