"""Reference and alternate windows around a variant (DESIGN.md, "Variants").

A variant's input is two token sequences cut from the reference FASTA and centred on the
variant: the REF window (the reference as it is) and the ALT window (the same region with
the REF allele replaced by the ALT allele).

How the centring works, for a window of ``W`` bp and a REF allele of ``k`` bp starting at
0-based position ``s`` (``s = POS - 1``):

* The window is centred on the REF allele's span ``[s, s + k)``, not on POS alone, so the
  flanks are ``left = (W - k) // 2`` bases before the allele and ``right = W - k - left``
  bases after it. The REF window is ``[s - left, s + k + right)``, which is ``W`` bp.
* For an SNV (``k = 1``) the variant sits at index ``c = (W - 1) // 2``: with an odd ``W``
  it is the exact centre (``W = 1001`` -> 500 bases on each side); with an even ``W`` the
  one extra base goes downstream (``W = 1000`` -> ``c = 499``: 499 bases before, 500 after).
* Multi-base REF alleles follow the same rule, so for VCF-style padded indels (REF and
  ALT share their first base, e.g. ``GT -> G``) the window is centred on the whole REF
  span including the padding base, and the full REF -> ALT replacement is applied; nothing
  is trimmed or normalised.
* The ALT window is ``left flank + ALT + right flank``: an insertion makes it longer than
  ``W`` and a deletion shorter. No padding, no trimming (the ChordMixer core takes any
  length).
* Near a contig end the flank on that side is clipped to the contig: the window is simply
  shorter, and it is not shifted to make up the missing bases.

The spans in :class:`AlleleWindow` give the allele's position inside each window
(0-based, half-open): for an SNV both are ``(c, c + 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cmx_cli import alphabet
from cmx_cli.errors import CmxError


class Reference(Protocol):
    """What window building needs from a reference (a :class:`ReferenceGenome` has it)."""

    def length(self, contig: str) -> int:  # noqa: D102
        ...

    def fetch(self, contig: str, start0: int, end0: int) -> bytes:  # noqa: D102
        ...


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class AlleleWindow:
    """The REF and ALT windows of one ALT allele.

    Attributes:
        ref_tokens: (L_ref,) uint8 tokens of the reference window (``L_ref <= W``).
        alt_tokens: (L_alt,) uint8 tokens of the same region with the allele applied
            (``L_alt = L_ref - len(REF) + len(ALT)``).
        ref_span: Half-open position of the REF allele inside ``ref_tokens``.
        alt_span: Half-open position of the ALT allele inside ``alt_tokens``; it starts where
            ``ref_span`` starts.
        context: What a scorer needs to know about the variant beyond its windows (the
            group index for a grouped variant classifier); None by default.
    """

    ref_tokens: np.ndarray
    alt_tokens: np.ndarray
    ref_span: tuple[int, int]
    alt_span: tuple[int, int]
    context: Any = None


def group_index(window: AlleleWindow) -> int:
    """The group a window is scored for: the index its context holds, 0 without one."""
    return 0 if window.context is None else int(window.context)


def window_bounds(pos1: int, ref_length: int, window: int) -> tuple[int, int]:
    """Return the unclipped 0-based half-open REF window around a REF allele.

    Args:
        pos1: The VCF POS (1-based) of the REF allele's first base.
        ref_length: Length of the REF allele in bp (at least 1).
        window: The window length ``W`` in bp (at least ``ref_length``).

    Returns:
        ``(start0, end0)`` with ``end0 - start0 == window``; ``start0`` may be negative and
        ``end0`` may pass the contig end (callers clip).
    """
    left = (window - ref_length) // 2
    right = window - ref_length - left
    start0 = pos1 - 1
    return start0 - left, start0 + ref_length + right


def make_windows(
    reference: Reference, contig: str, pos1: int, ref: str, alt: str, window: int = 1000
) -> AlleleWindow:
    """Cut the REF and ALT windows of one allele from the reference (module docstring).

    Args:
        reference: The reference genome.
        contig: The FASTA contig (or a VCF name that the reference resolves).
        pos1: The VCF POS (1-based) of the REF allele.
        ref: The VCF REF allele; only its length is used, the REF window's letters come
            from the FASTA (callers check that they agree: :mod:`cmx_cli.variants.alleles`).
        alt: The ALT allele, letters A C G T N in any case.
        window: The window length in bp.

    Returns:
        The allele's windows and spans.

    Raises:
        ValueError: The alleles are empty, longer than the window, contain letters
            that are not DNA, or the REF allele does not lie inside the contig (callers
            classify such alleles as unscorable first).
        CmxError: The FASTA holds a letter that is not DNA inside the window.
    """
    if not ref or not alt:
        raise ValueError(f"empty allele: REF {ref!r}, ALT {alt!r}")
    if len(ref) > window or len(alt) > window:
        raise ValueError(
            f"allele longer than the {window:,} bp window: REF {len(ref)}, ALT {len(alt)}")
    length = reference.length(contig)
    allele_start = pos1 - 1
    allele_end = allele_start + len(ref)
    if allele_start < 0 or allele_end > length:
        raise ValueError(
            f"REF at {contig}:{pos1} ({len(ref)} bp) is outside the contig ({length:,} bp)")
    start0, end0 = window_bounds(pos1, len(ref), window)
    start0, end0 = max(0, start0), min(length, end0)
    letters = reference.fetch(contig, start0, end0)
    ref_tokens = alphabet.encode(letters)
    bad = alphabet.first_invalid(ref_tokens)
    if bad >= 0:
        raise CmxError(
            f"reference contig '{contig}', position {start0 + bad + 1:,}: "
            f"invalid letter {chr(letters[bad])!r} in the FASTA",
            "the reference must hold DNA letters only (A C G T, N and IUPAC codes)",
        )
    alt_tokens_allele = alphabet.encode(alt)
    if alphabet.first_invalid(alt_tokens_allele) >= 0:
        raise ValueError(f"ALT {alt!r} holds letters that are not DNA")
    before = allele_start - start0  # bases of the left flank actually available
    after = allele_end - start0
    alt_tokens = np.concatenate((ref_tokens[:before], alt_tokens_allele, ref_tokens[after:]))
    return AlleleWindow(
        ref_tokens=ref_tokens,
        alt_tokens=alt_tokens,
        ref_span=(before, after),
        alt_span=(before, before + len(alt)),
    )
