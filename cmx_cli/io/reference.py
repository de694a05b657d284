"""The reference genome of variant scoring: a FASTA read through pyfaidx, with contig aliases.

VCF files and FASTA files often name the same contig differently (``chr1`` in one, ``1`` in
the other; ``chrM``, ``MT`` and ``M`` for the mitochondrion). :class:`ReferenceGenome`
resolves a VCF contig name in this order:

1. an explicit ``--contig-map`` TSV (``vcf_name<TAB>fasta_name`` per line);
2. the same name in the FASTA;
3. automatic aliases: the name with ``chr`` removed or added, and for the mitochondrion any
   of ``chrM``, ``chrMT``, ``MT``, ``M``.

Every name resolved to a different FASTA name is recorded in :attr:`aliases_applied`, so the
pre-flight report can say what was matched to what (DESIGN.md, "Variants").
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Union

import pyfaidx

from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import open_fasta

PathLike = Union[str, os.PathLike]

#: Names of the mitochondrial contig in common assemblies (UCSC, Ensembl/NCBI, others).
MITOCHONDRIAL_NAMES = ("chrM", "chrMT", "MT", "M")
_CHR_PREFIX = re.compile(r"^chr", re.IGNORECASE)
_CONTIG_MAP_HINT = (
    "each line of a contig map is 'vcf_name<TAB>fasta_name'; lines starting with '#' "
    "and blank lines are ignored"
)
#: How many FASTA contig names an error message lists.
_NAMES_SHOWN = 8


class ReferenceGenome:
    """A reference FASTA with contig name resolution for VCF records.

    Args:
        path: The reference FASTA (plain or BGZF; indexed on first use by
            :func:`cmx_cli.io.fasta.open_fasta`).
        contig_map: Optional TSV of ``vcf_name<TAB>fasta_name`` lines that take precedence
            over the automatic aliases.

    Attributes:
        path: The FASTA path.
        aliases_applied: VCF contig name -> FASTA contig name, for every name that was
            resolved to a different FASTA name (by the map or by an alias).
        contig_map: The explicit map read from ``contig_map`` (empty without one).

    Raises:
        CmxError: The FASTA cannot be opened, or the contig map is malformed or names a
            contig that is not in the FASTA.
    """

    def __init__(self, path: PathLike, contig_map: Optional[PathLike] = None) -> None:
        self.path = Path(path)
        self._fasta: pyfaidx.Fasta = open_fasta(self.path)
        # Index order is file order; the lengths come from the .fai, not from reading.
        self._lengths: dict[str, int] = {
            name: int(record.rlen) for name, record in self._fasta.faidx.index.items()
        }
        self.contig_map: dict[str, str] = (
            read_contig_map(contig_map, self._lengths, self.path) if contig_map else {}
        )
        self.aliases_applied: dict[str, str] = {}
        self._resolved: dict[str, Optional[str]] = {}

    @property
    def contigs(self) -> list[str]:
        """The FASTA contig names, in file order."""
        return list(self._lengths)

    def resolve(self, vcf_contig: str) -> Optional[str]:
        """Return the FASTA contig that a VCF contig name refers to, or None.

        Args:
            vcf_contig: The contig name as written in the VCF (CHROM column).

        Returns:
            The FASTA contig name, or None when neither the map, the exact name nor an
            alias is in the FASTA.
        """
        if vcf_contig in self._resolved:
            return self._resolved[vcf_contig]
        name = self._lookup(vcf_contig)
        self._resolved[vcf_contig] = name
        if name is not None and name != vcf_contig:
            self.aliases_applied[vcf_contig] = name
        return name

    def length(self, contig: str) -> int:
        """Return the length in bp of a contig (a FASTA name, or a VCF name that resolves).

        Raises:
            CmxError: The contig is not in the FASTA.
        """
        return self._lengths[self._require(contig)]

    def fetch(self, contig: str, start0: int, end0: int) -> bytes:
        """Return the letters of ``[start0, end0)`` (0-based, half-open), clipped to the contig.

        Case is kept (lowercase marks soft-masked bases). A range entirely outside the
        contig gives ``b""``.

        Args:
            contig: A FASTA contig name, or a VCF name that resolves to one.
            start0: 0-based start (may be negative; clipped to 0).
            end0: 0-based exclusive end (clipped to the contig length).

        Raises:
            CmxError: The contig is not in the FASTA, or the FASTA cannot be read.
        """
        name = self._require(contig)
        start0, end0 = max(0, start0), min(self._lengths[name], end0)
        if start0 >= end0:
            return b""
        try:
            letters = self._fasta[name][start0:end0]
        except (OSError, ValueError, pyfaidx.FetchError) as error:
            raise CmxError.in_record(
                self.path, name, f"cannot read bases {start0 + 1:,}-{end0:,} ({error})",
                "check that the FASTA was completely written; delete its .fai to rebuild it",
            ) from error
        return letters.encode("ascii", "replace")

    def describe_contigs(self) -> str:
        """A short list of the FASTA contig names, for error messages."""
        names = self.contigs
        shown = ", ".join(names[:_NAMES_SHOWN])
        return shown + (f", ... ({len(names):,} in all)" if len(names) > _NAMES_SHOWN else "")

    def close(self) -> None:
        """Close the FASTA file."""
        self._fasta.close()

    def __enter__(self) -> "ReferenceGenome":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __contains__(self, vcf_contig: object) -> bool:
        return isinstance(vcf_contig, str) and self.resolve(vcf_contig) is not None

    def _require(self, contig: str) -> str:
        name = contig if contig in self._lengths else self.resolve(contig)
        if name is None:
            raise CmxError.in_record(
                self.path, contig, "no such contig in the reference FASTA",
                f"the FASTA has {self.describe_contigs()}; map names with --contig-map",
            )
        return name

    def _lookup(self, vcf_contig: str) -> Optional[str]:
        if vcf_contig in self.contig_map:
            return self.contig_map[vcf_contig]
        if vcf_contig in self._lengths:
            return vcf_contig
        for candidate in contig_aliases(vcf_contig):
            if candidate in self._lengths:
                return candidate
        return None


def contig_aliases(name: str) -> list[str]:
    """Return the other names a contig commonly goes by, most likely first.

    ``chr1`` -> ``1``; ``1`` -> ``chr1``; ``chrX`` <-> ``X``; the mitochondrion's names
    (``chrM``, ``chrMT``, ``MT``, ``M``) are all aliases of each other.

    Args:
        name: A contig name.

    Returns:
        Candidate names, without ``name`` itself.
    """
    candidates: list[str] = []
    if name in MITOCHONDRIAL_NAMES or name.lower() in ("chrm", "chrmt", "mt"):
        candidates.extend(MITOCHONDRIAL_NAMES)
    stripped = _CHR_PREFIX.sub("", name)
    if stripped != name:
        candidates.append(stripped)
    else:
        candidates.extend(("chr" + name, "Chr" + name, "CHR" + name))
    unique: list[str] = []
    for candidate in candidates:
        if candidate and candidate != name and candidate not in unique:
            unique.append(candidate)
    return unique


def read_contig_map(
    path: PathLike, fasta_lengths: dict[str, int], fasta_path: PathLike
) -> dict[str, str]:
    """Read a ``vcf_name<TAB>fasta_name`` contig map and check it against the FASTA.

    Fields may be separated by a tab or by other whitespace (contig names contain none).

    Args:
        path: The TSV file.
        fasta_lengths: FASTA contig name -> length, to check the targets.
        fasta_path: The FASTA, for messages.

    Returns:
        VCF name -> FASTA name.

    Raises:
        CmxError: The file is missing or unreadable, a line does not have exactly two
            fields, a VCF name is mapped twice to different contigs, or a FASTA name is not
            in the FASTA; each names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise CmxError.in_record(path, None, "no such contig map file", "check the path") from error
    except (OSError, UnicodeDecodeError) as error:
        raise CmxError.in_record(
            path, None, f"cannot read the contig map ({error})", _CONTIG_MAP_HINT
        ) from error
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        where = f"{path}, line {number}"
        if len(fields) != 2:
            raise CmxError(
                f"{where}: expected 2 fields (vcf_name, fasta_name), found {len(fields)}",
                _CONTIG_MAP_HINT,
            )
        vcf_name, fasta_name = fields
        if mapping.get(vcf_name, fasta_name) != fasta_name:
            raise CmxError(
                f"{where}: contig '{vcf_name}' is mapped twice "
                f"('{mapping[vcf_name]}' and '{fasta_name}')",
                "keep one line per VCF contig",
            )
        if fasta_name not in fasta_lengths:
            names = ", ".join(list(fasta_lengths)[:_NAMES_SHOWN])
            raise CmxError(
                f"{where}: contig '{fasta_name}' is not in the FASTA {fasta_path}",
                f"the second column must be a FASTA contig name, e.g. one of {names}",
            )
        mapping[vcf_name] = fasta_name
    return mapping
