"""Masked-base corruption: rates, the 80-10-10 split, N never selected, MASK distinct from N."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_cli import alphabet
from cmx_cli.data.masking import (
    IGNORE_INDEX,
    KEPT,
    MASKED,
    NONE,
    RANDOM,
    MaskedSequence,
    mask_tokens,
    weights,
)

#: Allowed deviation from a binomial mean, in standard deviations. With fixed seeds the
#: tests are deterministic; 4 s.d. is what a fresh seed would pass 99.99 % of the time.
TOLERANCE_SD = 4


def within_binomial(count: int, trials: int, probability: float) -> bool:
    sd = math.sqrt(trials * probability * (1 - probability))
    return abs(count - trials * probability) <= TOLERANCE_SD * sd


def random_bases(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=length).astype(np.uint8)


def test_mask_token_is_not_n():
    assert alphabet.MASK == 5 and alphabet.N == 4


def test_types_and_invariants():
    tokens = alphabet.encode("ACGTNNACGTACGTNACGT" * 20)
    masked = mask_tokens(tokens, 0.5, "80-10-10", np.random.default_rng(1))
    assert isinstance(masked, MaskedSequence) and len(masked) == tokens.size
    assert masked.inputs.dtype == np.uint8
    assert masked.targets.dtype == np.int64
    assert masked.corruption.dtype == np.uint8
    selected = masked.selected
    assert np.array_equal(selected, masked.corruption != NONE)
    assert np.array_equal(masked.targets[selected], tokens[selected])
    assert np.all(masked.targets[~selected] == IGNORE_INDEX)
    # Unselected positions, and kept ones, show the original token.
    unchanged = ~selected | (masked.corruption == KEPT)
    assert np.array_equal(masked.inputs[unchanged], tokens[unchanged])
    assert np.all(masked.inputs[masked.corruption == MASKED] == alphabet.MASK)
    assert np.all(masked.inputs[masked.corruption == RANDOM] < 4)
    # The input array is untouched.
    assert np.array_equal(tokens, alphabet.encode("ACGTNNACGTACGTNACGT" * 20))


def test_selection_rate_is_binomial():
    tokens = random_bases(200_000)
    masked = mask_tokens(tokens, 0.15, "80-10-10", np.random.default_rng(2))
    assert within_binomial(int(masked.selected.sum()), tokens.size, 0.15)


def test_80_10_10_proportions():
    tokens = random_bases(200_000)
    masked = mask_tokens(tokens, 0.3, "80-10-10", np.random.default_rng(3))
    n_selected = int(masked.selected.sum())
    for code, share in ((MASKED, 0.8), (RANDOM, 0.1), (KEPT, 0.1)):
        assert within_binomial(int((masked.corruption == code).sum()), n_selected, share)


def test_n_is_never_selected():
    tokens = alphabet.encode("NNNNACGTNNNNRYKM" * 500)  # IUPAC codes are N too
    is_n = tokens == alphabet.N
    masked = mask_tokens(tokens, 1.0, "80-10-10", np.random.default_rng(4))
    assert not masked.selected[is_n].any()
    assert masked.selected[~is_n].all()  # rate 1 selects every base
    assert np.all(masked.inputs[is_n] == alphabet.N)
    assert np.all(masked.targets[is_n] == IGNORE_INDEX)
    assert not np.any(masked.inputs[is_n] == alphabet.MASK)


def test_all_n_sequence_has_no_targets():
    masked = mask_tokens(np.full(100, alphabet.N, np.uint8), 1.0, "mask-only",
                         np.random.default_rng(5))
    assert not masked.selected.any()


def test_random_base_is_drawn_per_position():
    tokens = np.zeros(20_000, dtype=np.uint8)  # all A: any non-A input was replaced
    masked = mask_tokens(tokens, 0.5, "80-10-10", np.random.default_rng(6))
    replacements = masked.inputs[masked.corruption == RANDOM]
    n_random = replacements.size
    assert n_random > 500
    # One sequence, many random positions: all four bases occur, each about a quarter
    # (so a replacement equals the original base about a quarter of the time).
    counts = np.bincount(replacements, minlength=6)
    assert counts[4] == counts[5] == 0
    for base in range(4):
        assert within_binomial(int(counts[base]), n_random, 0.25)


def test_mask_only_masks_every_selected_position():
    tokens = random_bases(10_000)
    masked = mask_tokens(tokens, 0.3, "mask-only", np.random.default_rng(7))
    assert masked.selected.any()
    assert np.all(masked.corruption[masked.selected] == MASKED)
    assert np.all(masked.inputs[masked.selected] == alphabet.MASK)
    assert within_binomial(int(masked.selected.sum()), tokens.size, 0.3)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_extreme_rates(rate):
    tokens = random_bases(1000)
    masked = mask_tokens(tokens, rate, "80-10-10", np.random.default_rng(8))
    assert masked.selected.sum() == rate * tokens.size


def test_same_seed_same_masking():
    tokens = random_bases(5000)
    first = mask_tokens(tokens, 0.3, "80-10-10", np.random.default_rng(9))
    second = mask_tokens(tokens, 0.3, "80-10-10", np.random.default_rng(9))
    for name in ("inputs", "targets", "corruption"):
        assert np.array_equal(getattr(first, name), getattr(second, name))


def test_empty_sequence():
    masked = mask_tokens(np.empty(0, np.uint8), 0.3, "80-10-10", np.random.default_rng(0))
    assert len(masked) == 0


@pytest.mark.parametrize(
    "tokens, rate, scheme",
    [
        (np.zeros(4, np.uint8), -0.1, "80-10-10"),
        (np.zeros(4, np.uint8), 1.5, "80-10-10"),
        (np.zeros(4, np.uint8), 0.3, "90-5-5"),
        (np.array([0, 1, 5], np.uint8), 0.3, "80-10-10"),  # MASK cannot be masked again
    ],
)
def test_bad_arguments(tokens, rate, scheme):
    with pytest.raises(ValueError):
        mask_tokens(tokens, rate, scheme, np.random.default_rng(0))


def test_weights():
    flags = np.array([False, True, True, False])
    result = weights(flags, 0.25)
    assert result.dtype == np.float32
    assert result.tolist() == [1.0, 0.25, 0.25, 1.0]
    with pytest.raises(ValueError):
        weights(flags, -1.0)


@settings(max_examples=60, deadline=None)
@given(
    letters=st.text(alphabet="ACGTN", max_size=300),
    rate=st.floats(0, 1),
    scheme=st.sampled_from(["80-10-10", "mask-only"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants_hold_for_any_input(letters, rate, scheme, seed):
    tokens = alphabet.encode(letters)
    masked = mask_tokens(tokens, rate, scheme, np.random.default_rng(seed))
    selected = masked.selected
    assert not np.any(selected & (tokens == alphabet.N))
    assert np.array_equal(masked.targets[selected], tokens[selected])
    assert np.array_equal(masked.inputs[~selected], tokens[~selected])
    assert set(np.unique(masked.corruption[selected]).tolist()) <= {MASKED, RANDOM, KEPT}
    assert np.all((masked.inputs == alphabet.MASK) == (masked.corruption == MASKED))
