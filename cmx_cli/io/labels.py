"""Where class labels come from: ``PATH:LABEL``, a label table, a header regex, file names.

For each record the first of these that gives a label wins:

1. the label given with the file (``orchids.fa:Orchid``);
2. the record's row in a ``--label-table`` (``name<TAB>label``);
3. the first capturing group of ``--label-regex`` searched in the whole header line;
4. the file name without its FASTA and compression suffixes, only when neither a table
   nor a regex is given.

Records that get no label are left out, with a warning that counts them per file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import iter_records

PathLike = Union[str, os.PathLike]

_COMPRESSION_SUFFIXES = (".gz", ".bgz", ".bgzf")
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".seq", ".txt")
_TABLE_HINT = "a label table has one 'name<TAB>label' row per record; '#' starts a comment"


@dataclass(frozen=True)
class FastaSource:
    """A FASTA input and the label given with it on the command line, if any."""

    path: Path
    label: Optional[str] = None


def parse_fasta_argument(text: str) -> FastaSource:
    """Parse a ``PATH`` or ``PATH:LABEL`` argument.

    The text is split at its last ':' only when the whole text is not an existing file,
    both sides are non-empty and the label contains no '/'.

    Args:
        text: The argument as typed.

    Returns:
        The path and the label (None when none was given).
    """
    head, colon, label = text.rpartition(":")
    if colon and head and label and "/" not in label and not Path(text).is_file():
        return FastaSource(Path(head), label)
    return FastaSource(Path(text), None)


def stem_label(path: PathLike) -> str:
    """Return the class name a file name implies: ``Klebsiella.fa.gz`` gives ``Klebsiella``.

    One compression suffix (.gz .bgz .bgzf), then one FASTA suffix (.fa .fasta .fna .fas
    .ffn .seq .txt) is removed, ignoring case.
    """
    name = Path(path).name
    for suffixes in (_COMPRESSION_SUFFIXES, _FASTA_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def read_label_table(path: PathLike) -> dict[str, str]:
    """Read a tab-separated ``name<TAB>label`` table.

    An optional ``name<TAB>label`` header (any case), blank lines and lines starting with
    '#' are skipped; columns after the second are ignored.

    Args:
        path: The table file.

    Returns:
        Record name to label.

    Raises:
        CmxError: The file is missing or empty, a row has fewer than two columns or an
            empty field, or a name is given two different labels.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as error:
        raise CmxError(f"{path}: no such file", "check the --label-table path") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CmxError(f"{path}: cannot read the label table ({error})", _TABLE_HINT) from error
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = [column.strip() for column in line.split("\t")]
        if not table and [column.lower() for column in columns[:2]] == ["name", "label"]:
            continue
        if len(columns) < 2 or not columns[0] or not columns[1]:
            raise CmxError(f"{path}, line {number}: expected a name and a label separated "
                           f"by a tab, found {line.strip()[:60]!r}", _TABLE_HINT)
        name, label = columns[0], columns[1]
        if table.get(name, label) != label:
            raise CmxError(
                f"{path}, line {number}: record '{name}' is labelled '{label}' here but "
                f"'{table[name]}' on line {first_line[name]}",
                "give each record one label",
            )
        table[name] = label
        first_line.setdefault(name, number)
    if not table:
        raise CmxError(f"{path}: the label table has no rows", _TABLE_HINT)
    return table


def check_regex(regex: str, option: str) -> None:
    """Raise a CmxError naming ``option`` when ``regex`` does not compile."""
    try:
        re.compile(regex)
    except re.error as error:
        raise CmxError(
            f"{option} {regex!r} is not a valid regular expression ({error})",
            "use Python regex syntax with one capturing group, e.g. 'genus=(\\w+)'",
        ) from error


def header_field(regex: str, description: str) -> Optional[str]:
    """The first capturing group of ``regex`` in a header line (the whole match without
    groups), or None when it does not match or matches nothing."""
    match = re.search(regex, description)
    if not match:
        return None
    value = match.group(1) if match.re.groups else match.group(0)
    return value or None

@dataclass(frozen=True)
class LabelRule:
    """How to find the label of a record (see the module docstring for the order).

    Attributes:
        regex: Searched in the whole header line; the first group (or the whole match)
            is the label.
        table: Record name to label.
    """

    regex: Optional[str] = None
    table: Optional[dict[str, str]] = None

    @classmethod
    def build(
        cls, regex: Optional[str] = None, table_path: Optional[PathLike] = None
    ) -> "LabelRule":
        """Check a ``--label-regex`` and read a ``--label-table``.

        Raises:
            CmxError: The regex does not compile, or the table is malformed.
        """
        if regex is not None:
            check_regex(regex, "--label-regex")
        table = read_label_table(table_path) if table_path is not None else None
        return cls(regex=regex, table=table)

    def label_for(self, source: FastaSource, record_name: str, description: str) -> Optional[str]:
        """Return the label of one record, or None when no rule gives one."""
        if source.label:
            return source.label
        if self.table is not None and record_name in self.table:
            return self.table[record_name]
        if self.regex is not None:
            label = header_field(self.regex, description)
            if label is not None:
                return label
        if self.regex is None and self.table is None:
            return stem_label(source.path)
        return None

    def describe_miss(self) -> str:
        """Say why a record got no label, for warnings."""
        reasons = []
        if self.table is not None:
            reasons.append("not in --label-table")
        if self.regex is not None:
            reasons.append("no match for --label-regex")
        return " and ".join(reasons) or "no label"


@dataclass
class LabelledSequences:
    """Encoded records with their labels, in input order (parallel lists)."""

    names: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: Whole header lines; empty when the set was built without them.
    descriptions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def extend(self, other: "LabelledSequences") -> None:
        """Append another set's records (in place)."""
        self.names += other.names
        self.labels += other.labels
        self.tokens += other.tokens
        self.sources += other.sources
        self.descriptions += other.descriptions

    def subset(self, indices: Sequence[int]) -> "LabelledSequences":
        """The records at ``indices``, in that order."""
        return LabelledSequences(
            [self.names[i] for i in indices], [self.labels[i] for i in indices],
            [self.tokens[i] for i in indices], [self.sources[i] for i in indices],
            [self.descriptions[i] for i in indices] if self.descriptions else [])


def load_labelled(
    sources: list[FastaSource], rule: LabelRule
) -> tuple[LabelledSequences, list[str]]:
    """Read FASTA sources and label their records.

    Args:
        sources: The FASTA inputs, in order.
        rule: How to find each record's label.

    Returns:
        The labelled records, and human-readable warnings (records left out for want of
        a label; table rows that match no record).

    Raises:
        CmxError: As :func:`cmx_cli.io.fasta.iter_records`, or when one record name
            occurs in two inputs.
    """
    result = LabelledSequences()
    warnings: list[str] = []
    seen: dict[str, Path] = {}
    for source in sources:
        total = missing = 0
        for record in iter_records(source.path):
            if record.name in seen:
                raise CmxError.in_record(
                    source.path, record.name, f"the record is also in {seen[record.name]}",
                    "record names must be unique across all inputs; "
                    "is the same file given twice?",
                )
            seen[record.name] = source.path
            total += 1
            label = rule.label_for(source, record.name, record.description)
            if label is None:
                missing += 1
                continue
            result.names.append(record.name)
            result.labels.append(label)
            result.tokens.append(record.tokens)
            result.sources.append(str(source.path))
            result.descriptions.append(record.description)
        if missing:
            warnings.append(
                f"{source.path}: {missing} of {total} records have no label "
                f"({rule.describe_miss()}) and were left out"
            )
    if rule.table is not None:
        unused = sorted(set(rule.table) - set(seen))
        if unused:
            warnings.append(
                f"--label-table: {len(unused)} of {len(rule.table)} names are in no input "
                f"file (e.g. '{unused[0]}')"
            )
    return result, warnings
