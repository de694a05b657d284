"""Labelled variants for `cmx finetune`: labels and groups from a VCF or a TSV, with windows.

Where the labels come from:

* ``--vcf`` with ``--label-field KEY``: the INFO field KEY of each record. A ``Number=A``
  field gives one label per ALT allele; a single value applies to every ALT allele; a Flag
  is 1 when present and 0 when absent.
* ``--labels TSV`` with columns ``chrom pos ref alt label [group]`` (a header line is
  allowed; ``#`` lines are comments). With ``--vcf`` the rows label the VCF's alleles, matched
  by chrom, pos, ref and alt; without it the rows are the variants.
* Groups (e.g. tissues): ``--group-field KEY`` (an INFO field) or the TSV's sixth column.

Labels are binary: ``1``/``0``, ``true``/``false`` or ``yes``/``no`` in any case. Anything
else is an error naming the file and the record.

Every allele is judged by the same checks as `cmx predict` (:mod:`cmx_cli.variants.alleles`):
contig, allele form, REF against the FASTA (``--ref-mismatch``), length. Alleles that fail a
check, have no label or no group, or repeat an earlier allele are counted by reason and left
out. A repeat with a different label or group drops every copy (``conflicting_label``).
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional, Sequence

from rich.table import Table

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.alleles import SKIP_REASONS, AlleleStatus, classify_record
from cmx_cli.io.vcf_reader import open_variants
from cmx_cli.variants.windows import AlleleWindow, make_windows

#: Reasons of this module for leaving a labelled allele out, beside SKIP_REASONS.
LABEL_SKIP_REASONS: dict[str, str] = {
    "no_label": "no label",
    "no_group": "no group",
    "duplicate": "same allele listed again (first copy kept)",
    "conflicting_label": "same allele with different labels or groups (all copies dropped)",
}
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}
_LABEL_HINT = "labels must be 1/0, true/false or yes/no; recode the field first"
_TABLE_COLUMNS = ("chrom", "pos", "ref", "alt", "label")


@dataclass(frozen=True)
class LabelledVariant:
    """One labelled ALT allele.

    Attributes:
        chrom: The contig as the input names it.
        pos: The 1-based VCF position.
        ref, alt: The alleles as written.
        label: 0 or 1.
        group: The group name ("" without groups).
    """

    chrom: str
    pos: int
    ref: str
    alt: str
    label: int
    group: str = ""


@dataclass
class LabelledVariants:
    """The usable labelled variants of an input, with their windows and what was left out.

    Attributes:
        source: The input file(s), for messages.
        variants: The usable alleles, in input order.
        windows: Their REF/ALT windows.
        contigs: The FASTA contig of each.
        counts: Input records (``records``), labelled alleles seen (``alleles``), and the
            alleles left out by reason (:data:`SKIP_REASONS`, :data:`LABEL_SKIP_REASONS`).
        warnings: Things to tell the user.
    """

    source: str
    variants: list[LabelledVariant] = field(default_factory=list)
    windows: list[AlleleWindow] = field(default_factory=list)
    contigs: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def left_out(self) -> dict[str, int]:
        """Alleles left out, by reason."""
        return {reason: count for reason, count in sorted(self.counts.items())
                if count and reason not in ("records", "alleles")}

    def rows(self) -> list[tuple[str, int]]:
        """What was read, used and left out: (what, count) pairs."""
        labels = Counter(variant.label for variant in self.variants)
        rows = [("records", self.counts["records"]), ("labelled alleles", self.counts["alleles"])]
        rows += [(f"left out: {describe_reason(reason)}", count)
                 for reason, count in self.left_out().items()]
        rows += [("used", len(self.variants)), ("  label 1", labels[1]), ("  label 0", labels[0])]
        return rows

    def table(self) -> Table:
        """What was read, used and left out, as a rich table (for a terminal)."""
        table = Table(title=f"Labelled variants: {self.source}", title_justify="left")
        table.add_column("check")
        table.add_column("result", justify="right")
        for name, value in self.rows():
            table.add_row(name, f"{value:,}")
        return table

    def line(self) -> str:
        """The counts of :meth:`table` as one line, for a log that is not a terminal."""
        parts = []
        for name, value in self.rows():
            if name.startswith("left out: "):
                parts.append(f"left out {value:,} ({name[len('left out: '):]})")
            else:
                parts.append(f"{name.strip()} {value:,}")
        return f"Labelled variants: {self.source}: " + "; ".join(parts)


def describe_reason(reason: str) -> str:
    """The human text of a reason for leaving an allele out."""
    return SKIP_REASONS.get(reason) or LABEL_SKIP_REASONS.get(reason, reason)


def parse_label(value: Any, path: Any, location: str) -> int:
    """Read a binary label (see the module docstring).

    Raises:
        CmxError: For any other value, naming the file and record.
    """
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise CmxError.in_record(path, location, f"label {value!r} is not binary", _LABEL_HINT)


@dataclass(frozen=True)
class _TableRow:
    line: int
    chrom: str
    pos: int
    ref: str
    alt: str
    label: int
    group: Optional[str]


def read_labels_table(path: Any) -> list[_TableRow]:
    """Read a ``chrom pos ref alt label [group]`` TSV.

    Raises:
        CmxError: A missing file, a short row, a position that is not a positive integer,
            or a label that is not binary, naming the line.
    """
    path = Path(path)
    hint = "the columns are chrom, pos, ref, alt, label and an optional group, tab-separated"
    try:
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as error:
        raise CmxError(f"{path}: cannot read the labels table ({error})", hint) from error
    rows: list[_TableRow] = []
    for number, fields in enumerate(lines, start=1):
        if not fields or not "".join(fields).strip() or fields[0].startswith("#"):
            continue
        fields = [value.strip() for value in fields]
        if not rows and [value.lower() for value in fields[:5]] == list(_TABLE_COLUMNS):
            continue  # the header line
        where = f"line {number}"
        if len(fields) < 5:
            raise CmxError.in_record(path, where, f"{len(fields)} columns, need at least 5", hint)
        if not fields[1].isdigit() or int(fields[1]) < 1:
            raise CmxError.in_record(path, where, f"position {fields[1]!r} is not a positive "
                                     "integer", hint)
        group = fields[5] if len(fields) > 5 and fields[5] else None
        rows.append(_TableRow(number, fields[0], int(fields[1]), fields[2], fields[3],
                              parse_label(fields[4], path, where), group))
    if not rows:
        raise CmxError(f"{path}: no labelled variants", hint)
    return rows


def _info_value(record: Any, key: str, alt_index: int, n_alts: int) -> Any:
    """The value of INFO ``key`` for one ALT allele, None when absent."""
    value = record.info.get(key)
    if isinstance(value, tuple):
        if len(value) == n_alts:
            value = value[alt_index]
        elif len(value) == 1:
            value = value[0]
        else:
            return None
    return None if value == "." else value  # a missing entry of a list read as text


def _flag_keys(header: Any, keys: Sequence[Optional[str]]) -> set[str]:
    return {key for key in keys if key and key in header.info and header.info[key].type == "Flag"}


class _Collector:
    """Checks alleles, cuts their windows and removes repeats, counting each outcome."""

    def __init__(self, reference: ReferenceGenome, window: int, ref_mismatch: str,
                 result: LabelledVariants, on_record: Optional[Callable[[], None]]) -> None:
        self.reference, self.window, self.ref_mismatch = reference, window, ref_mismatch
        self.result = result
        self.on_record = on_record or (lambda: None)
        self._seen: dict[tuple, int] = {}
        self._conflicts: set[int] = set()

    def statuses(self, record: Any, path: Any, location: str) -> tuple[Optional[str], list]:
        """The FASTA contig and allele statuses of a record; raises under ``--ref-mismatch error``."""
        check = classify_record(record, self.reference, self.window, self.ref_mismatch)
        if check.ref_problem is not None and self.ref_mismatch == "error":
            raise CmxError.in_record(
                path, location, check.ref_detail,
                f"check that the variants are on {self.reference.path.name} (same assembly), "
                "or pass --ref-mismatch warn or skip")
        return check.contig, list(check.alleles)

    def add(self, record: Any, contig: Optional[str], status: AlleleStatus,
            variant: LabelledVariant) -> None:
        """Count one labelled allele and keep it if it is usable."""
        counts = self.result.counts
        counts["alleles"] += 1
        if status.reason is not None:
            counts[status.reason] += 1
            return
        key = (contig, variant.pos, variant.ref.upper(), variant.alt.upper())
        if key in self._seen:
            first = self._seen[key]
            earlier = self.result.variants[first]
            same = (earlier.label, earlier.group) == (variant.label, variant.group)
            counts["duplicate" if same else "conflicting_label"] += 1
            if not same:
                self._conflicts.add(first)
            return
        self._seen[key] = len(self.result.variants)
        self.result.variants.append(variant)
        self.result.contigs.append(contig)  # type: ignore[arg-type]
        self.result.windows.append(make_windows(self.reference, contig, record.pos, record.ref,
                                                status.alt, self.window))  # type: ignore[arg-type]

    def finish(self) -> LabelledVariants:
        """Drop the first copies of conflicting repeats, and alleles without a group when
        others have one; return the result."""
        result = self.result
        grouped = any(variant.group for variant in result.variants)
        ungrouped = {i for i, variant in enumerate(result.variants) if grouped and not variant.group}
        result.counts["conflicting_label"] += len(self._conflicts)
        result.counts["no_group"] += len(ungrouped - self._conflicts)
        drop = self._conflicts | ungrouped
        if drop:
            keep = [i for i in range(len(result.variants)) if i not in drop]
            result.variants = [result.variants[i] for i in keep]
            result.windows = [result.windows[i] for i in keep]
            result.contigs = [result.contigs[i] for i in keep]
        return result


def load_labelled_variants(
    reference: ReferenceGenome, window: int, *, vcf: Optional[str] = None,
    label_field: Optional[str] = None, labels_table: Optional[str] = None,
    group_field: Optional[str] = None, regions: Sequence[str] = (), ref_mismatch: str = "skip",
    on_record: Optional[Callable[[], None]] = None,
) -> LabelledVariants:
    """Read labelled variants and cut their windows (module docstring).

    Args:
        reference: The reference genome.
        window: The window length in bp.
        vcf: A VCF/BCF file (with ``label_field`` or ``labels_table``).
        label_field: The INFO key of the labels.
        labels_table: A ``chrom pos ref alt label [group]`` TSV.
        group_field: The INFO key of the groups.
        regions: Read only these regions of the VCF (it needs an index).
        ref_mismatch: ``error``, ``warn`` or ``skip``, as for `cmx predict`.
        on_record: Called after each input record (for progress).

    Returns:
        The usable variants and the counts.

    Raises:
        CmxError: For unreadable or malformed input, or when no variant is usable.
    """
    if (label_field is None) == (labels_table is None):
        raise ValueError("give exactly one of label_field and labels_table")
    table = read_labels_table(labels_table) if labels_table else None
    source = ", ".join(str(Path(name).name) for name in (vcf, labels_table) if name)
    collector = _Collector(reference, window, ref_mismatch, LabelledVariants(source), on_record)
    if vcf is None:
        _collect_table(table or [], labels_table, collector)
    else:
        _collect_vcf(vcf, regions, label_field, group_field, table, collector)
    result = collector.finish()
    if not result.variants:
        reasons = ", ".join(f"{count:,} {describe_reason(reason)}"
                            for reason, count in result.left_out().items())
        hint = "check --label-field/--labels and that the variants are on this reference"
        if set(result.left_out()) == {"contig_missing"}:
            hint = ("none of the contigs is in the reference FASTA: check the assembly, or map "
                    "the names with --contig-map")
        raise CmxError(f"{source}: no usable labelled variant ({reasons or 'no records'})", hint)
    return result


def _collect_table(rows: list[_TableRow], path: Any, collector: _Collector) -> None:
    for row in rows:
        collector.result.counts["records"] += 1
        record = SimpleNamespace(chrom=row.chrom, pos=row.pos, ref=row.ref, alts=(row.alt,))
        contig, statuses = collector.statuses(record, path, f"line {row.line}")
        variant = LabelledVariant(row.chrom, row.pos, row.ref, row.alt, row.label,
                                  row.group or "")
        collector.add(record, contig, statuses[0], variant)
        collector.on_record()


def _table_index(rows: list[_TableRow]) -> dict[tuple, list[_TableRow]]:
    """The rows by allele; a repeated allele keeps all its rows (counted as repeats later)."""
    index: dict[tuple, list[_TableRow]] = {}
    for row in rows:
        index.setdefault((row.chrom, row.pos, row.ref.upper(), row.alt.upper()), []).append(row)
    return index


def _collect_vcf(vcf: str, regions: Sequence[str], label_field: Optional[str],
                 group_field: Optional[str], table: Optional[list[_TableRow]],
                 collector: _Collector) -> None:
    index = _table_index(table) if table is not None else None
    matched: set[tuple] = set()
    with open_variants(vcf, regions) as reader:
        for key in (label_field, group_field):
            if key and key not in reader.header.info:
                raise CmxError(f"{vcf}: the header declares no INFO field {key!r}",
                               f"the INFO fields are: {', '.join(reader.header.info) or 'none'}")
        flags = _flag_keys(reader.header, (label_field, group_field))
        if label_field and label_field not in flags:
            _read_labels_as_written(reader, label_field)
        for record in reader:
            collector.result.counts["records"] += 1
            location = reader.last_location or ""
            try:
                contig, statuses = collector.statuses(record, vcf, location)
            except (ValueError, OSError) as error:
                raise reader.record_error(error, current=True) from error
            for status in statuses:
                for labelled in _allele_labels(record, status, label_field, group_field, index,
                                               flags, vcf, location, matched):
                    collector.add(record, contig, *labelled)
            collector.on_record()
        collector.result.warnings.extend(reader.warnings)
    unmatched = sum(len(rows) for key, rows in (index or {}).items() if key not in matched)
    if unmatched:
        collector.result.warnings.append(
            f"{unmatched:,} rows of the labels table match no VCF allele "
            "(chrom, pos, ref and alt must be the same)")


def _read_labels_as_written(reader: Any, key: str) -> None:
    """Read a numeric label field of a text VCF as text, so that a label such as ``maybe``
    is the error it is: htslib turns a number it cannot parse into a missing value, which
    would leave the record out as unlabelled without a word (issue 23, case 4). A BCF
    stores numbers as numbers, and needs nothing."""
    declared = reader.header.info[key]
    if reader.is_bcf or declared.type not in ("Integer", "Float"):
        return
    number = declared.number
    declared.remove_header()
    reader.header.add_line(f'##INFO=<ID={key},Number={number},Type=String,'
                           f'Description="The labels, read as written">')


def _allele_labels(record: Any, status: AlleleStatus, label_field: Optional[str],
                   group_field: Optional[str], index: Optional[dict], flags: set[str],
                   vcf: str, location: str, matched: set) -> Iterator[tuple]:
    """The (status, variant) of one VCF allele that has a label (none when it has not)."""
    alt, n_alts = status.alt, len(record.alts or ())
    if index is not None:
        key = (record.chrom, record.pos, (record.ref or "").upper(), alt.upper())
        if key not in index:
            return
        matched.add(key)
        pairs = [(row.label, row.group or "") for row in index[key]]
    else:
        value = (label_field in record.info if label_field in flags
                 else _info_value(record, label_field, status.index, n_alts))
        if value is None:
            yield replace_reason(status, "no_label"), _placeholder(record, alt)
            return
        pairs = [(parse_label(value, vcf, location), "")]
    if group_field:
        value = _info_value(record, group_field, status.index, n_alts)
        if value is None:
            yield replace_reason(status, "no_group"), _placeholder(record, alt)
            return
        pairs = [(label, str(value)) for label, _ in pairs]
    for label, group in pairs:
        yield status, LabelledVariant(record.chrom, record.pos, record.ref, alt, label, group)


def replace_reason(status: AlleleStatus, reason: str) -> AlleleStatus:
    """The status with ``reason`` unless it already has one."""
    if status.reason is not None:
        return status
    return AlleleStatus(status.index, status.alt, reason)


def _placeholder(record: Any, alt: str) -> LabelledVariant:
    return LabelledVariant(record.chrom, record.pos, record.ref or "", alt, 0)
