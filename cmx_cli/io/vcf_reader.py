"""Reading VCF and BCF files: records through pysam, and every input problem as one error line.

Reading goes through pysam (htslib): VCF, BGZF VCF and BCF, optionally restricted to
``--region``s through the .tbi/.csi index. Every problem with the input becomes one
:class:`~cmx_cli.errors.CmxError` line naming the file and the record, never a traceback;
htslib's own stderr messages are silenced while it works (:func:`quiet_htslib`).

Decisions:

* A ``--region`` selects the records whose POS lies in it (``bcftools view
  --regions-overlap pos``), not all that overlap it, so shards cut by region hold every
  record exactly once. Regions are sorted and merged, so the output stays sorted.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import pysam

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import contig_aliases
from cmx_cli.io.sniff import GZIP_MAGIC, content_head, is_bgzf, raw_head
from cmx_cli.io.vcf_index import VariantIndex, index_path, offsets_problem, read_index

PathLike = Union[str, os.PathLike]
Region = tuple[str, int, Optional[int]]

_REGION = re.compile(r"^(?P<contig>[^:\s]\S*?)(?::(?P<start>[\d,]+)(?:-(?P<end>[\d,]*))?)?$")
_RECORD_PROBLEMS = {  # htslib's words -> what they mean to a user
    "invalid number of columns": "wrong number of columns (columns must be separated by tabs)",
    "invalid tag": "an INFO or FORMAT key is invalid or repeated",
    "unable to parse next record": "htslib cannot parse it",
    # htslib says "truncated file" for a record it cannot parse, too; a truncated BGZF file
    # is caught before reading (no end-of-file marker).
    "truncated file": "htslib cannot parse it",
}
#: The empty BGZF block that ends every complete BGZF file (SAM spec, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_RECORD_HINT = "fix or remove the record (`bcftools view FILE > /dev/null` shows htslib's words)"


@contextlib.contextmanager
def quiet_htslib() -> Iterator[None]:
    """Silence htslib on stderr: every problem is reported as a CmxError instead."""
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


class VariantReader:
    """The records of a VCF/BCF file; reading errors become one-line :class:`CmxError`.

    Open with :func:`open_variants`. Iterating yields ``pysam.VariantRecord`` objects in
    file order (with regions: by contig, then start).

    Attributes:
        path: The file.
        header: Its ``pysam.VariantHeader``; htslib adds the contigs and keys that records
            use without declaring them, as it reads them.
        regions: The merged regions, ``(contig, start0, end0 or None)``.
        warnings: Things to tell the user (an index older than its file).
        records_read: Records yielded so far.
    """

    def __init__(
        self, path: PathLike, regions: Sequence[str] = (), extra_header_lines: Sequence[str] = ()
    ) -> None:
        self.path = Path(path)
        _sniff(self.path)
        with quiet_htslib():
            try:
                self._file = pysam.VariantFile(str(self.path))
            except (ValueError, OSError, NotImplementedError) as error:
                problem, hint = _diagnose_header(self.path, error)
                raise CmxError.in_record(self.path, None, problem, hint) from error
        self.header = self._file.header
        self._initial_header = set(str(self.header).splitlines())
        for line in extra_header_lines:  # declared before parsing: no record gets flagged
            self.header.add_line(line)
        self.warnings: list[str] = []
        try:
            self.regions = self._resolve_regions(regions) if regions else []
        except BaseException:
            self._file.close()
            raise
        self.records_read = 0
        self.last_location: Optional[str] = None

    def __iter__(self) -> Iterator[Any]:
        if self.regions:
            sources = [self._fetch(*region) for region in self.regions]
        else:
            sources = [iter(self._file)]
        for source in sources:
            while True:
                with quiet_htslib():
                    try:
                        record = next(source)
                    except StopIteration:
                        break
                    except (ValueError, OSError) as error:
                        if self.regions:  # read through the index: is it the index's fault?
                            self._check_index_offsets(error)
                        raise self.record_error(error) from error
                self.records_read += 1
                self.last_location = f"{record.chrom}:{record.pos}"
                yield record

    @property
    def is_bcf(self) -> bool:
        """Whether the file is BCF (binary, typed values) rather than text VCF."""
        return bool(self._file.is_bcf)

    def header_additions(self) -> list[str]:
        """Return the header lines htslib added while reading (declarations the file lacks)."""
        return [line for line in str(self.header).splitlines()
                if line.startswith("##") and line not in self._initial_header]

    def record_error(self, error: Exception, current: bool = False) -> CmxError:
        """Build the error for the record after the last one yielded, or for the last one.

        Args:
            error: What pysam raised.
            current: The error concerns the last record yielded, not the next one.
        """
        text = " ".join(str(error).split()).replace("Error(s) reading record: ", "")
        problem = _RECORD_PROBLEMS.get(text, text)
        if current:
            return CmxError.in_record(self.path, self.last_location, problem, _RECORD_HINT)
        number = self.records_read + 1
        located = None if self.regions or self._file.is_bcf else _find_data_line(self.path, number)
        if located is not None:
            line, location, fields = located
            problem = _explain_fields(fields, len(self.header.samples)) or problem
            return CmxError.in_record(
                self.path, location, f"line {line:,}: {problem}", _RECORD_HINT)
        after = f" (after {self.last_location})" if self.last_location else ""
        return CmxError.in_record(
            self.path, f"record {number:,}{after}", f"cannot be read: {problem}", _RECORD_HINT)

    def close(self) -> None:
        """Close the file. A reader has nothing to lose on closing: htslib's complaint about
        a file it failed to read (a stale index) must not hide the error that says why."""
        with quiet_htslib(), contextlib.suppress(OSError, ValueError):
            self._file.close()

    def __enter__(self) -> "VariantReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fetch(self, contig: str, start0: int, end0: Optional[int]) -> Iterator[Any]:
        with quiet_htslib():
            records = self._file.fetch(contig, start0, end0)
        fetched = 0
        for record in records:
            fetched += 1
            if record.start >= start0:  # POS inside the region, not overlap (module docstring)
                yield record
        self._check_index_counts(contig, start0, end0, fetched)
        self._check_index_covered(contig, start0, end0)

    def _index(self) -> tuple[Optional[Path], Optional[VariantIndex]]:
        """The index file htslib reads, and what it says (None where cmx cannot read it)."""
        if not hasattr(self, "_index_read"):
            path = index_path(self.path)
            self._index_read = (path, read_index(path) if path is not None else None)
        return self._index_read

    def _stale_index(self, problem: str, record: Optional[str] = None) -> CmxError:
        """The error for an index that does not describe this version of the file (at
        ``record``, when one shows it)."""
        return CmxError.in_record(
            self.path, record, f"{problem}: the index is stale (built from another "
            "version of the file), and reading through it would drop or garble records",
            f"rebuild the index with `bcftools index -f {self.path.name}` "
            f"(or `tabix -f -p vcf {self.path.name}`)")

    def _check_index_counts(self, contig: str, start0: int, end0: Optional[int],
                            fetched: int) -> None:
        """Refuse an index whose counts disagree with what a region query returned: nothing
        where the index lists records wholly inside the region, or, for a whole contig,
        another number of records than the index counts (issue 23, case 3)."""
        path, index = self._index()
        reference = dict(self._file.index.items()).get(contig) if self._file.index else None
        if index is None or reference is None or reference >= len(index.contigs):
            return
        region = _region_text(contig, start0, end0)
        mapped = index.contigs[reference].mapped
        if start0 == 0 and end0 is None and mapped is not None and mapped != fetched:
            raise self._stale_index(
                f"--region {region} returns {fetched:,} record(s), but {path.name} counts "
                f"{mapped:,} on {contig}")
        if fetched == 0 and index.has_records_within(reference, start0, end0):
            counted = f" ({mapped:,} on the contig)" if mapped else ""
            raise self._stale_index(
                f"--region {region} returns no record, but {path.name} lists records "
                f"inside it{counted}")

    def _check_index_offsets(self, error: Exception) -> None:
        """Raise the stale-index error when a read through the index failed because the
        index points where no record starts (htslib calls that a truncated file)."""
        path, index = self._index()
        if index is None:
            return
        problem = offsets_problem(self.path, index, text=not self._file.is_bcf)
        if problem is not None:
            after = f" after {self.last_location}" if self.last_location else ""
            raise self._stale_index(
                f"reading through {path.name} failed{after}, because {problem}") from error

    def _check_index_covered(self, contig: str, start0: int, end0: Optional[int]) -> None:
        """Refuse a stale index: the record that follows a region's records in the file must
        lie past the region, or the index did not list them all (it was built from another
        version of the file, and the rest of the region would be silently dropped)."""
        with quiet_htslib():
            try:
                following = next(iter(self._file))  # read on from where the fetch stopped
            except (StopIteration, ValueError, OSError):
                return
        if following.chrom != contig or following.start < start0 or (
                end0 is not None and following.start >= end0):
            return
        index = index_path(self.path)
        raise self._stale_index(
            f"the record lies in --region {_region_text(contig, start0, end0)} but "
            f"{index.name if index is not None else 'its index'} does not list it",
            f"{contig}:{following.pos}")

    def indexed_contigs(self, purpose: str = "--region") -> list[str]:
        """The contigs the file's index lists, in its order (file order for a .tbi).

        Raises:
            CmxError: The file has no index; ``purpose`` says what needed it.
        """
        if self._file.index is None:
            raise CmxError.in_record(
                self.path, None, f"{purpose} needs an index (.tbi or .csi) beside the file",
                f"index it with `bcftools index {self.path.name}` (or `tabix -p vcf "
                f"{self.path.name}`); compress a plain .vcf with `bgzip` first",
            )
        return list(self._file.index)

    def _resolve_regions(self, regions: Sequence[str]) -> list[Region]:
        indexed = self.indexed_contigs()
        for suffix in (".csi", ".tbi"):
            index = Path(f"{self.path}{suffix}")
            if index.exists() and index.stat().st_mtime < self.path.stat().st_mtime:
                self.warnings.append(f"the index {index.name} is older than {self.path.name}")
        known = list(dict.fromkeys([*self.header.contigs, *indexed]))
        parsed = []
        for text in regions:
            contig, start0, end0 = parse_region(text, known)
            if contig not in known:
                contig = next((name for name in contig_aliases(contig) if name in known), contig)
            if contig not in known:
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise CmxError(f"--region {text}: contig '{contig}' is not in {self.path}",
                               f"the file has {shown or 'no contigs'}")
            parsed.append((known.index(contig), start0, contig, end0))
        merged: list[Region] = []
        for _, start0, contig, end0 in sorted(parsed, key=lambda item: item[:2]):
            previous = merged[-1] if merged else None
            touching = previous and (previous[2] is None or start0 <= previous[2])
            if previous and previous[0] == contig and touching:
                end = None if previous[2] is None or end0 is None else max(previous[2], end0)
                merged[-1] = (contig, previous[1], end)
            else:
                merged.append((contig, start0, end0))
        return merged


def open_variants(path: PathLike, regions: Sequence[str] = ()) -> VariantReader:
    """Open a VCF, BGZF VCF or BCF file for reading, optionally restricted to regions.

    Args:
        path: The file.
        regions: ``chr``, ``chr:start-end`` (1-based, inclusive), ``chr:start`` or
            ``chr:start-``, read through the index; chr/MT aliases of contig names work.

    Returns:
        A :class:`VariantReader`: iterable of ``pysam.VariantRecord``, context manager.

    Raises:
        CmxError: The file is missing, empty, plain gzip, legacy BCF1 or not VCF; htslib
            rejects its header; regions without an index or with an unknown contig. A
            record that htslib cannot parse raises while iterating.
    """
    return VariantReader(path, regions)


def parse_region(text: str, contigs: Sequence[str] = ()) -> Region:
    """Parse ``chr``, ``chr:start``, ``chr:start-`` or ``chr:start-end`` (1-based, inclusive).

    A text that is a whole contig name of ``contigs`` is that contig (names may hold ':').

    Returns:
        ``(contig, start0, end0)``, 0-based half-open; ``end0`` is None for "to the end".

    Raises:
        CmxError: Not a region, start < 1 or end < start.
    """
    if text in contigs:
        return text, 0, None
    match = _REGION.match(text.strip())
    if match is None:
        raise CmxError(f"--region {text!r} is not a region",
                       "write chr, chr:start or chr:start-end")
    if match.group("start") is None:
        return match.group("contig"), 0, None
    start = int(match.group("start").replace(",", ""))
    end = int(match.group("end").replace(",", "")) if match.group("end") else None
    if start < 1 or (end is not None and end < start):
        raise CmxError(f"--region {text}: start must be at least 1 and at most end",
                       "coordinates are 1-based and inclusive, e.g. chr1:1001-2000")
    return match.group("contig"), start - 1, end


def _region_text(contig: str, start0: int, end0: Optional[int]) -> str:
    """A region as the user writes it (1-based, inclusive)."""
    if end0 is not None:
        return f"{contig}:{start0 + 1:,}-{end0:,}"
    return contig if start0 == 0 else f"{contig}:{start0 + 1:,}-"


def _sniff(path: Path) -> None:
    """Reject what pysam cannot read, or would report obscurely, before it tries."""
    if str(path) == "-":
        raise CmxError("reading a VCF from stdin is not supported",
                       "give a file: the pre-flight pass reads it before scoring")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise CmxError.in_record(
            path, None, "this is a pipe or a device, and cmx reads a VCF twice (a pre-flight "
            "pass, then scoring)", "save it to a file first, or give the .vcf.gz itself")
    if not path.is_file():
        problem = "this is a directory, not a file" if path.is_dir() else "no such file"
        raise CmxError.in_record(path, None, problem, "give a VCF or BCF file")
    head = raw_head(path, 18)
    if not head:
        raise CmxError.in_record(path, None, "the file is empty", "give a VCF or BCF file")
    if head[:2] == GZIP_MAGIC and not is_bgzf(head):
        stem = re.sub(r"(\.vcf)?\.(gz|bgz)$", "", path.name)
        raise CmxError.in_record(
            path, None, "the file is compressed with plain gzip, not BGZF, so it cannot be read",
            f"recompress it: `zcat {path.name} | bgzip -c > {stem}.bgz.vcf.gz`, then index it "
            f"with `tabix -p vcf {stem}.bgz.vcf.gz`")
    if head[:2] == GZIP_MAGIC:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - len(_BGZF_EOF)))
            if handle.read() != _BGZF_EOF:
                raise CmxError.in_record(
                    path, None, "the BGZF file has no end-of-file marker, so it is truncated",
                    "copy or download it again, or re-create it")
    if _text_head(path, 4) == b"BCF\x04":
        raise CmxError.in_record(
            path, None, "this is a legacy BCF1 file (samtools 0.1.x), which htslib cannot read",
            "convert it to VCF with the samtools 0.1.x `bcftools view` that wrote it")


def _text_head(path: Path, size: int = 1 << 20) -> bytes:
    """Return the first bytes of a file, decompressed when it is gzip/BGZF (b"" when it
    cannot be read)."""
    with contextlib.suppress(OSError, EOFError, zlib.error):
        return content_head(path, size)
    return b""


def _diagnose_header(path: Path, error: Exception) -> tuple[str, str]:
    """Explain why htslib rejected a file, as (problem, hint)."""
    head = _text_head(path)
    lines = head.decode("latin-1").splitlines()
    if head.startswith(b"BCF\x02"):
        return (f"htslib cannot read this BCF file ({' '.join(str(error).split())[:80]})",
                f"check it with `bcftools view -h {path.name}`; re-create it if it is damaged")
    if b"\0" in head[:4096] or not lines:
        return "the file is not VCF or BCF (binary content)", "give a VCF, VCF.gz or BCF file"
    if lines[0].startswith("#CHROM"):
        return ("the file does not start with a '##fileformat=VCFv4.x' line",
                "add '##fileformat=VCFv4.2' as the first line")
    if not lines[0].startswith("##fileformat=VCF"):
        return (f"the file is not VCF: its first line is {lines[0][:40]!r}",
                "a VCF starts with '##fileformat=VCFv4.x'")
    chrom = next((line for line in lines if line.startswith("#CHROM")), None)
    data_seen = any(not line.startswith("#") for line in lines)
    if chrom is None and (data_seen or len(head) < 1 << 20):
        return ("the header has no '#CHROM' line before the first record",
                "add the tab-separated line '#CHROM POS ID REF ALT QUAL FILTER INFO' "
                "(and FORMAT plus sample names) after the ## lines")
    columns = chrom.split("\t")
    if len(columns) < 8:
        return (f"the '#CHROM' line is not tab-separated ({len(columns)} tab-separated field(s))",
                "separate VCF columns with single tabs, not spaces")
    if len(columns) == 9:
        return ("the '#CHROM' line has a FORMAT column but no sample columns",
                f"remove that FORMAT column: `sed '/^#CHROM/s/\\tFORMAT$//' {path.name}`")
    return (f"htslib rejects the header ({' '.join(str(error).split())[:120]})",
            f"check it with `bcftools view -h {path.name}`")


def _find_data_line(path: Path, number: int) -> Optional[tuple[int, str, list[str]]]:
    """Return (line number, CHROM:POS, tab-separated fields) of a text VCF's record line."""
    with contextlib.suppress(OSError, EOFError, zlib.error):
        compressed = raw_head(path, 2) == GZIP_MAGIC
        seen = 0
        with (gzip.open(path, "rb") if compressed else path.open("rb")) as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.startswith(b"#") or not line.strip():
                    continue
                seen += 1
                if seen == number:
                    fields = line.decode("latin-1").rstrip("\r\n").split("\t")
                    return line_number, ":".join(fields[:2]).strip() or "?", fields
    return None


def _explain_fields(fields: list[str], samples: int) -> Optional[str]:
    """Say what is wrong with a record line htslib rejected, when it is a common mistake."""
    expected = 8 + (samples + 1 if samples else 0)
    if len(fields) != expected:
        return (f"{len(fields)} tab-separated columns where the header has {expected} "
                "(columns must be separated by single tabs)")
    if not fields[1].isdigit():
        return f"POS {fields[1]!r} is not a whole number"
    empty = [str(index - 8) for index in range(9, len(fields)) if not fields[index]]
    if empty:
        return f"sample column(s) {', '.join(empty)} are empty (use '.' for missing values)"
    keys = fields[8].split(":") if len(fields) > 8 else []
    if "GT" in keys:
        for sample, value in enumerate(fields[9:], start=1):
            values = value.split(":")
            genotype = values[keys.index("GT")] if keys.index("GT") < len(values) else "."
            alleles = re.split(r"[/|]", genotype)
            if not all(allele == "." or allele.isdigit() for allele in alleles):
                return (f"sample column {sample}: GT {genotype!r} is not a genotype (allele "
                        "numbers or '.', separated by '/' or '|')")
    return None
