"""Writing scored variants: plain VCF, BGZF VCF with its index, BCF, or TSV rows.

:func:`open_writer` writes to a temporary file in the target directory and renames it (and
its index) when complete, so nothing is left under the output name after an error.

Decisions:

* ``.vcf.gz``/``.vcf.bgz`` output gets a .tbi index, or .csi when the caller asks for it
  (a contig or record past the TBI limit); ``.bcf`` output always gets .csi, as
  ``bcftools index`` does. A TSV named ``.gz``/``.bgz`` is BGZF too, indexed on its chrom
  and pos columns (``tabix -s1 -b2 -e2 -S1``).
* A record none of whose ALT alleles was scored gets no score key (an absent INFO key is
  missing in VCF); otherwise unscored alleles are ``.`` in the ``Number=A`` list.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Sequence

import pysam

from cmx_cli.errors import CmxError
from cmx_cli.io.output import (
    COMPRESSED_SUFFIXES, BgzfText, output_target, sync_to_disk, temporary_file, write_errors)
from cmx_cli.variants.alleles import AlleleStatus, split_record
from cmx_cli.io.vcf_reader import quiet_htslib


#: Lines that cmx wrote before its model line named the field it describes.
_UNNAMED_MODEL_LINES = ("cmx_model", "cmx_version")


def output_kind(output: str, tsv: bool) -> str:
    """``tsv``, ``tsv-bgzf``, ``text`` (plain VCF), ``bgzf`` (VCF.gz) or ``bcf``, from the
    name."""
    compressed = output != "-" and output.lower().endswith(COMPRESSED_SUFFIXES)
    if tsv:
        return "tsv-bgzf" if compressed else "tsv"
    if compressed:
        return "bgzf"
    return "bcf" if output.lower().endswith(".bcf") else "text"


class IndexNotWritten(Exception):
    """htslib could not write the index of an output (a full device, mostly).

    Attributes:
        suffix: ``.tbi`` or ``.csi``.
        reason: Why, in words (``the device is full``).
    """

    def __init__(self, suffix: str, reason: str) -> None:
        super().__init__(f"{suffix}: {reason}")
        self.suffix, self.reason = suffix, reason


#: Less free space than this where an index failed to be written: the device is full.
_NEARLY_FULL = 1 << 20


def _why_not_written(path: str) -> str:
    """Why htslib failed to write a file: it gives no errno, so look at the device."""
    with contextlib.suppress(OSError):
        status = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if status.f_bavail * status.f_frsize < _NEARLY_FULL:
            return "the device is full"
        if status.f_favail == 0:
            return "the device has no free inodes"
    return "htslib could not write it"


class _Writer:
    """Writes VCF text, BGZF VCF, BCF or TSV rows to an open handle or a temporary path."""

    def __init__(self, kind: str, header: Any, handle: Any, path: Optional[str], info_id: str,
                 percentile_id: Optional[str] = None):
        self.kind, self.handle, self.path, self.info_id = kind, handle, path, info_id
        self.percentile_id = percentile_id
        self.written = 0
        self.index_path: Optional[str] = None
        self._hts = None
        if kind in ("bgzf", "bcf"):
            with quiet_htslib():
                self._hts = pysam.VariantFile(path, "wz" if kind == "bgzf" else "wb",
                                              header=header)
        elif kind.startswith("tsv"):
            handle.write("chrom\tpos\tid\tref\talt\tscore"
                         + ("\tpercentile\n" if percentile_id else "\n"))
        else:
            handle.write(str(header))

    def write(self, record: Any, statuses: list[AlleleStatus], values: list[Optional[float]],
              split: bool, percentiles: Optional[list[Optional[float]]] = None) -> None:
        """Write one record with a score (and a percentile, with a background) per allele."""
        percentiles = percentiles if percentiles is not None else [None] * len(values)
        if self.kind.startswith("tsv"):
            for status, value, percentile in zip(statuses, values, percentiles):
                score = "." if value is None else f"{value:.6g}"
                extra = ("" if not self.percentile_id else
                         "\t." if percentile is None else f"\t{percentile:.6g}")
                self.handle.write(f"{record.chrom}\t{record.pos}\t{record.id or '.'}\t"
                                  f"{record.ref}\t{status.alt}\t{score}{extra}\n")
                self.written += 1
            return
        alts = record.alts or ()
        if split and len(alts) > 1:
            for index in range(len(alts)):
                self._emit(split_record(record, index), values[index:index + 1],
                           percentiles[index:index + 1])
        else:
            self._emit(record, values if alts else [], percentiles if alts else [])

    def _emit(self, record: Any, values: list[Optional[float]],
              percentiles: list[Optional[float]]) -> None:
        for key, numbers in ((self.info_id, values), (self.percentile_id, percentiles)):
            if key is None:
                continue
            if any(number is not None for number in numbers):
                record.info[key] = tuple(numbers)
            elif key in record.info:  # a stale value from an earlier run
                del record.info[key]
        with quiet_htslib():
            if self._hts is not None:
                self._hts.write(record)
            else:
                self.handle.write(str(record))
        self.written += 1

    def close(self) -> None:
        """Close a BGZF/BCF file (text handles belong to the caller)."""
        if self._hts is not None and self._hts.is_open:
            with quiet_htslib():
                self._hts.close()

    def finish(self, use_csi: bool) -> None:
        """Close a BGZF/BCF file and index it (a BGZF TSV, closed by the caller, too)."""
        if self.kind not in ("bgzf", "bcf", "tsv-bgzf"):
            return
        self.close()
        suffix = ".csi" if use_csi or self.kind == "bcf" else ".tbi"
        self.index_path = f"{self.path}{suffix}"
        columns = (dict(seq_col=0, start_col=1, end_col=1, line_skip=1)
                   if self.kind == "tsv-bgzf" else dict(preset="vcf"))
        with quiet_htslib():
            try:
                pysam.tabix_index(self.path, index=self.index_path, csi=suffix == ".csi",
                                  force=True, **columns)
            except ValueError as error:  # the records are sorted: pre-flight checked it
                raise CmxError(f"cannot index the output ({error})",
                               "write plain .vcf output, and report the problem") from error
            except OSError as error:  # htslib says only "building of index ... failed"
                raise IndexNotWritten(suffix, _why_not_written(self.index_path)) from error


@contextlib.contextmanager
def open_writer(output: str, kind: str, header: Any, use_csi: bool, info_id: str,
                 description: str, header_lines: Sequence[str],
                 percentile: Optional[tuple[str, str]] = None) -> Iterator[_Writer]:
    """Extend the header, write to a temporary file, and rename it (and its index) when done.

    ``percentile`` is the INFO key and description of each score's background percentile
    (:mod:`cmx_cli.variants.background`), when there is one."""
    percentile_id = percentile[0] if percentile else None
    if not kind.startswith("tsv"):
        _extend_header(header, info_id, description, header_lines)
        if percentile:
            _declare_score_key(header, *percentile, "--info-id")
    if output == "-":
        yield _Writer(kind, header, sys.stdout, None, info_id, percentile_id)
        sys.stdout.flush()
        return
    destination, replaceable = output_target(output)
    if not replaceable:  # a device or a pipe: written in place, not indexed
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(open(destination, "w", encoding="utf-8")) \
                if kind in ("text", "tsv", "tsv-bgzf") else None
            writer = _Writer(kind, header, handle, str(destination), info_id, percentile_id)
            stack.callback(writer.close)
            yield writer
        return
    with temporary_file(destination, (".tbi", ".csi")) as temporary, write_errors(
            output, temporary, f"{temporary}.tbi", f"{temporary}.csi"):
        handle = _text_handle(temporary, kind)
        writer = _Writer(kind, header, handle, temporary, info_id, percentile_id)
        try:
            yield writer
            if handle is not None:
                handle.close()
            try:
                writer.finish(use_csi)
            except IndexNotWritten as failure:
                # Both files or neither: the output is not renamed into place without its
                # index, and a previous output (with its index) stays as it was.
                raise CmxError(
                    f"{output}{failure.suffix}: cannot write the index of {output}, "
                    f"{failure.reason}; neither file was written",
                    "free space on the device, or write to another one") from failure
        except BaseException:
            # Close what is open without letting a second failure (a full disk fails the
            # close too) hide the first one or keep the temporary files.
            with contextlib.suppress(OSError, ValueError):
                if handle is not None:
                    handle.close()
                writer.close()
            raise
        sync_to_disk(temporary)
        if writer.index_path is not None:
            # Beside the name given, which htslib looks for even when it is a symbolic link;
            # placed before the output, as that rename cannot fail for want of space.
            suffix = writer.index_path[len(temporary):]
            _place_index(writer.index_path, f"{output}{suffix}", output)
            writer.index_path = f"{output}{suffix}"
        os.replace(temporary, destination)
        if writer.index_path is not None:
            # htslib looks for .csi before .tbi: an old index of the other kind would win.
            other = ".tbi" if writer.index_path.endswith(".csi") else ".csi"
            Path(f"{output}{other}").unlink(missing_ok=True)


def _place_index(source: str, target: str, output: str) -> None:
    """Move a finished index to its name: renamed, or, on another file system (the output
    is a link to one), copied beside the target first, so no half-copied index is left."""
    try:
        os.replace(source, target)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    with temporary_file(Path(target)) as staged:
        try:
            shutil.copyfile(source, staged)
        except OSError as error:
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            raise CmxError(
                f"{target}: cannot write the index of {output}, "
                + ("the device is full" if full else os.strerror(error.errno or errno.EIO))
                + "; the output was not written", "free space on the device, or write to "
                "another one") from error
        os.replace(staged, target)
    os.unlink(source)


def _text_handle(path: str, kind: str) -> Optional[IO]:
    """The text stream a kind of output is written through (None: pysam writes it)."""
    if kind in ("text", "tsv"):
        return open(path, "w", encoding="utf-8")
    if kind == "tsv-bgzf":
        return BgzfText(path)  # type: ignore[return-value]
    return None


def header_value(text: str) -> str:
    """A value for a quoted field of a structured header line (``Description="..."``)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _declare_score_key(header: Any, key: str, description: str, option: str) -> None:
    """Declare a ``Number=A, Type=Float`` INFO key, or take over one declared alike.

    The values written replace the input's, so the description is this run's: a key
    scored before by another model keeps no stale Description (issue 23, case 6)."""
    if key in header.info:
        existing = header.info[key]
        if (existing.number, existing.type) != ("A", "Float"):
            raise CmxError(
                f"the input VCF already defines INFO/{key} as Number={existing.number}, "
                f"Type={existing.type}", f"choose another key with {option}")
        existing.remove_header()
    header.add_line(
        f'##INFO=<ID={key},Number=A,Type=Float,Description="{header_value(description)}">')


def _extend_header(header: Any, info_id: str, description: str, lines: Sequence[str]) -> None:
    """Declare the score key and add the ``##cmx_...`` lines.

    A structured line with an ID (``##cmx_model=<ID=CMX,...>``) replaces the input's line of
    that key and ID, so each scored field has one. The model lines of earlier cmx versions
    name no field; they go when the field they may describe is replaced."""
    replacing = info_id in header.info
    _declare_score_key(header, info_id, description, "--info-id")
    for line in lines:
        if not line.startswith("##") or "=" not in line or "\n" in line:
            raise ValueError(f"header lines must be single '##key=value' lines: {line!r}")
        key, value = line[2:].split("=", 1)
        named = re.match(r"<ID=([^,>]+)", value)
        for record in list(header.records):
            if (named and record.key == key and record.type == "STRUCTURED"
                    and record.get("ID") == named.group(1)):
                record.remove()
        header.add_line(line)
    if replacing:
        for record in list(header.records):
            if record.type == "GENERIC" and record.key in _UNNAMED_MODEL_LINES:
                record.remove()
