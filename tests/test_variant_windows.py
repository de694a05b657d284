"""REF and ALT windows around a variant: exact tokens, centring, clipping at contig ends."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_cli import alphabet
from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.variants.windows import AlleleWindow, make_windows, window_bounds

#                    idx 0123456789
SEQUENCE = "AACCGGTTAC"
DWV = Path(__file__).parent / "data" / "vcf" / "DWV_NC_004830.2.fa"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "ref.fa"
    path.write_text(f">c\n{SEQUENCE}\n>soft\naaccNNttac\n>iupac\nAACCRY\n>bad\nAAC-GT\n")
    with ReferenceGenome(path) as genome:
        yield genome


def letters(tokens: np.ndarray) -> str:
    return alphabet.decode(tokens)


@pytest.mark.parametrize("pos1, ref, alt, window, ref_letters, alt_letters, ref_span, alt_span", [
    # SNV, odd window: the exact centre.
    (5, "G", "T", 5, "CCGGT", "CCTGT", (2, 3), (2, 3)),
    # SNV, even window: the extra base goes downstream, c = (W - 1) // 2.
    (5, "G", "T", 4, "CGGT", "CTGT", (1, 2), (1, 2)),
    # Padded insertion: the ALT window grows.
    (5, "G", "GTT", 5, "CCGGT", "CCGTTGT", (2, 3), (2, 5)),
    # Padded deletion, centred on the 2 bp REF span: the ALT window shrinks.
    (5, "GG", "G", 6, "CCGGTT", "CCGTT", (2, 4), (2, 3)),
    # MNV: centred on the REF span.
    (5, "GG", "TA", 6, "CCGGTT", "CCTATT", (2, 4), (2, 4)),
    # Contig start: the left flank is clipped, the window is shorter.
    (1, "A", "C", 5, "AAC", "CAC", (0, 1), (0, 1)),
    # Contig end: the right flank is clipped.
    (10, "C", "A", 5, "TAC", "TAA", (2, 3), (2, 3)),
    # A deletion that ends at the contig end.
    (9, "AC", "A", 4, "TAC", "TA", (1, 3), (1, 2)),
    # A window longer than the contig: the whole contig.
    (5, "G", "A", 100, SEQUENCE, "AACCAGTTAC", (4, 5), (4, 5)),
    # A window as long as the REF allele: no flanks.
    (3, "CCG", "C", 3, "CCG", "C", (0, 3), (0, 1)),
])
def test_exact_windows(reference, pos1, ref, alt, window, ref_letters, alt_letters, ref_span, alt_span):
    result = make_windows(reference, "c", pos1, ref, alt, window)
    assert letters(result.ref_tokens) == ref_letters
    assert letters(result.alt_tokens) == alt_letters
    assert result.ref_span == ref_span
    assert result.alt_span == alt_span
    assert result.ref_tokens.dtype == np.uint8 and result.alt_tokens.dtype == np.uint8
    # The spans point at the alleles (padding base included).
    assert letters(result.ref_tokens[slice(*result.ref_span)]) == SEQUENCE[pos1 - 1:pos1 - 1 + len(ref)]
    assert letters(result.alt_tokens[slice(*result.alt_span)]) == alt


def test_soft_masked_and_ambiguous_reference_letters(reference):
    soft = make_windows(reference, "soft", 3, "c", "t", 5)
    assert letters(soft.ref_tokens) == "AACCN"
    assert letters(soft.alt_tokens) == "AATCN"
    iupac = make_windows(reference, "iupac", 5, "R", "A", 3)
    assert letters(iupac.ref_tokens) == "CNN"  # IUPAC codes become N (DESIGN.md, "Tokens")


def test_lowercase_alleles_are_the_same_bases(reference):
    upper = make_windows(reference, "c", 5, "G", "T", 5)
    lower = make_windows(reference, "c", 5, "g", "t", 5)
    assert np.array_equal(upper.alt_tokens, lower.alt_tokens)


def test_invalid_reference_letter_is_a_user_error(reference):
    with pytest.raises(CmxError) as caught:
        make_windows(reference, "bad", 2, "A", "G", 5)
    assert "position 4" in str(caught.value) and "Hint:" in str(caught.value)


@pytest.mark.parametrize("pos1, ref, alt, window", [
    (5, "GGTTAC", "G", 5),   # REF longer than the window
    (5, "G", "GTTTTT", 5),   # ALT longer than the window
    (0, "A", "C", 5),        # before the contig
    (10, "CA", "C", 5),      # REF passes the contig end
    (11, "A", "C", 5),       # after the contig
    (5, "G", "", 5),         # empty ALT
    (5, "G", "<DEL>", 9),    # not DNA
])
def test_unscorable_alleles_raise(reference, pos1, ref, alt, window):
    with pytest.raises(ValueError):
        make_windows(reference, "c", pos1, ref, alt, window)


def test_allele_window_is_frozen(reference):
    result = make_windows(reference, "c", 5, "G", "T", 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ref_span = (0, 1)  # type: ignore[misc]
    assert isinstance(result, AlleleWindow)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 2000), ref_length=st.integers(1, 50), pos1=st.integers(1, 10**6))
def test_centring_rule(window, ref_length, pos1):
    if ref_length > window:
        return
    start0, end0 = window_bounds(pos1, ref_length, window)
    assert end0 - start0 == window
    left = pos1 - 1 - start0
    right = end0 - (pos1 - 1 + ref_length)
    assert right - left in (0, 1)  # odd remainder: the extra base goes downstream
    if ref_length == 1:
        assert left == (window - 1) // 2


def test_real_snv_window_is_centred():
    with ReferenceGenome(DWV) as genome:
        contig = "NC_004830.2"
        whole = genome.fetch(contig, 0, genome.length(contig)).decode()
        result = make_windows(genome, contig, 5000, whole[4999], "A", 1000)
        assert result.ref_span == (499, 500)
        assert letters(result.ref_tokens) == whole[4500:5500].upper()
        assert len(result.alt_tokens) == 1000
        assert np.flatnonzero(result.ref_tokens != result.alt_tokens).tolist() in ([], [499])
        # The first base of the contig: 499 bases are missing on the left.
        first = make_windows(genome, contig, 1, whole[0], "G", 1000)
        assert first.ref_span == (0, 1) and len(first.ref_tokens) == 501
        # The last base: 500 bases are missing on the right.
        last = make_windows(genome, contig, len(whole), whole[-1], "G", 1000)
        assert last.ref_span == (499, 500) and len(last.ref_tokens) == 500
