"""MLM baselines: unigram frequencies and the left-context Markov model, with exact numbers."""
from __future__ import annotations

import shutil
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from cmx_cli import alphabet
from cmx_cli.data.masking import MaskedSequence, mask_tokens
from cmx_cli.data.pretrain_sources import PretrainSequence, plan_sources
from cmx_cli.data.samplers import make_sampler
from cmx_cli.baselines.markov import MarkovModel, UnigramModel, evaluate_baseline

def tokens(letters: str) -> np.ndarray:
    """Letters to tokens; '?' stands for MASK."""
    return np.array(["ACGTN?".index(letter) for letter in letters], dtype=np.uint8)


def masked_inputs(letters: str) -> MaskedSequence:
    """A masked sequence whose inputs are the letters given ('?' = MASK)."""
    inputs = tokens(letters)
    targets = np.where(inputs < 4, inputs, -100).astype(np.int64)
    return MaskedSequence(inputs, targets, np.zeros(inputs.size, np.uint8))


def rows(*distributions: list[float]) -> np.ndarray:
    return np.array([np.array(row) / sum(row) for row in distributions])


def test_unigram_frequencies_are_laplace_smoothed():
    model = UnigramModel().fit([tokens("AACN"), tokens("GT")])  # N is not counted
    assert model.counts.tolist() == [2, 1, 1, 1]
    expected = np.array([3, 2, 2, 2]) / 9
    assert np.allclose(model.probabilities, expected, rtol=0, atol=1e-15)
    predicted = model.predict(masked_inputs("A?GT"))
    assert predicted.shape == (4, 4)
    assert np.allclose(predicted, np.tile(expected, (4, 1)), rtol=0, atol=1e-15)


def test_unigram_accepts_pretrain_sequences():
    sequence = PretrainSequence(tokens("CCCG"), np.zeros(4, bool), "test")
    assert UnigramModel().fit([sequence]).counts.tolist() == [0, 3, 1, 0]


def test_markov_order_1_exact_probabilities():
    # Training "AACAG": pairs AA AC CA AG; bases A3 C1 G1 T0.
    model = MarkovModel(order=1).fit([tokens("AACAG")])
    assert model.counts[0].tolist() == [[3, 1, 1, 0]]
    assert model.counts[1][alphabet.A].tolist() == [1, 1, 1, 0]
    assert model.counts[1][alphabet.C].tolist() == [1, 0, 0, 0]
    predicted = model.predict(masked_inputs("CAT?G"))
    expected = rows(
        [4, 2, 2, 1],  # position 0: no context, order 0
        [2, 1, 1, 1],  # after C: counts [1, 0, 0, 0] + 1
        [2, 2, 2, 1],  # after A: counts [1, 1, 1, 0] + 1
        [4, 2, 2, 1],  # after T: never seen in training, back off to order 0
        [4, 2, 2, 1],  # after MASK: back off to order 0
    )
    assert np.allclose(predicted, expected, rtol=0, atol=1e-15)


def test_markov_backs_off_when_the_context_holds_mask_or_n():
    # Training: order 2 contexts AC->G x3, CG->A, CG->T, GA->C; order 1 A->C x3, C->G x3,
    # G->A, G->T; bases A3 C3 G3 T1.
    model = MarkovModel(order=2).fit([tokens("ACGACG"), tokens("ACGT")])
    predicted = model.predict(masked_inputs("ACG?CA"))
    expected = rows(
        [4, 4, 4, 2],  # position 0: no context
        [1, 4, 1, 1],  # "A": order 1 (order 2 would start before the sequence)
        [1, 1, 4, 1],  # "AC": order 2
        [2, 1, 1, 2],  # "CG": order 2 (the MASK at this position itself is not context)
        [4, 4, 4, 2],  # "G?": MASK right before, back off to order 0
        [1, 1, 4, 1],  # "?C": MASK in the order-2 context, back off to order 1
    )
    assert np.allclose(predicted, expected, rtol=0, atol=1e-15)
    # N in the context behaves like MASK.
    with_n = model.predict(masked_inputs("ACGNCA"))
    assert np.allclose(with_n[4:], expected[4:], rtol=0, atol=1e-15)


def test_markov_reads_the_corrupted_inputs_not_the_targets():
    model = MarkovModel(order=1).fit([tokens("ACACACAC")])
    original = tokens("ACAC")
    masked = mask_tokens(original, 1.0, "mask-only", np.random.default_rng(0))
    predicted = model.predict(masked)  # every context is MASK: all rows are order 0
    assert np.allclose(predicted, predicted[0], rtol=0, atol=0)
    assert not np.allclose(model.predict(original)[1], predicted[1])


def naive_markov(train: list[np.ndarray], inputs: np.ndarray, order: int) -> np.ndarray:
    """A slow reference: count every context explicitly, then take the longest seen one."""
    counts = {}
    for sequence in train:
        for i in range(len(sequence)):
            for j in range(order + 1):
                window = sequence[i - j : i + 1] if i >= j else None
                if window is not None and np.all(window < 4):
                    key = tuple(window[:-1].tolist())
                    counts.setdefault(key, np.zeros(4))[window[-1]] += 1
    result = []
    for i in range(len(inputs)):
        for j in range(min(order, i), -1, -1):
            context = inputs[i - j : i]
            if np.all(context < 4) and tuple(context.tolist()) in counts:
                row = counts[tuple(context.tolist())] + 1.0
                result.append(row / row.sum())
                break
        else:
            result.append(np.full(4, 0.25))
    return np.array(result)


@pytest.mark.parametrize("order, seed", [(0, 0), (1, 1), (3, 2), (4, 3)])
def test_markov_matches_a_naive_implementation(order, seed):
    rng = np.random.default_rng(seed)
    # Skewed base use and some N, so that contexts are unevenly seen.
    train = [rng.choice(5, size=rng.integers(1, 200), p=[0.4, 0.3, 0.15, 0.1, 0.05])
             .astype(np.uint8) for _ in range(6)]
    inputs = rng.choice(6, size=300, p=[0.25, 0.25, 0.2, 0.15, 0.05, 0.1]).astype(np.uint8)
    model = MarkovModel(order=order).fit(iter(train))  # a one-pass generator is enough
    assert np.allclose(model.predict(inputs), naive_markov(train, inputs, order),
                       rtol=0, atol=1e-12)


def test_markov_fit_streams_and_restarts():
    rng = np.random.default_rng(4)
    pieces = [rng.integers(0, 5, size=500).astype(np.uint8) for _ in range(5)]
    streamed = MarkovModel(order=3).fit(piece for piece in pieces)
    updated = MarkovModel(order=3)
    for piece in pieces:
        updated.update(piece)
    for a, b in zip(streamed.counts, updated.counts):
        assert np.array_equal(a, b)
    # Memory is bounded by the tables: sum of 4**(j+1) counts, whatever the data size.
    assert sum(table.size for table in streamed.counts) == sum(4 ** (j + 1) for j in range(4))
    refitted = streamed.fit([pieces[0]])  # fit starts from zero again
    assert refitted.counts[0].sum() == np.count_nonzero(pieces[0] < 4)
    assert np.allclose(refitted.predict(pieces[1]).sum(axis=1), 1.0)


def test_markov_rows_are_distributions_for_every_context_kind():
    model = MarkovModel(order=2).fit([tokens("ACGTTGCA")])
    inputs = tokens("".join(a + b + c for a, b, c in product("ACGTN?", repeat=3)))
    predicted = model.predict(inputs)
    assert predicted.shape == (inputs.size, 4)
    assert np.allclose(predicted.sum(axis=1), 1.0) and np.all(predicted > 0)


@pytest.mark.parametrize("order", [-1, 11])
def test_markov_rejects_a_bad_order(order):
    with pytest.raises(ValueError):
        MarkovModel(order=order)


def test_unfitted_models_predict_uniform():
    assert np.allclose(MarkovModel(order=2).predict(tokens("ACGT")), 0.25)
    assert np.allclose(UnigramModel().predict(tokens("ACGT")), 0.25)


def test_markov_learns_a_periodic_sequence():
    model = MarkovModel(order=3).fit([tokens("ACGT" * 500)])
    masked = mask_tokens(tokens("ACGT" * 100), 0.15, "mask-only", np.random.default_rng(5))
    result = evaluate_baseline(model, [masked]).result()
    unigram = evaluate_baseline(UnigramModel().fit([tokens("ACGT" * 500)]), [masked]).result()
    assert result["accuracy"] > 0.9 and result["bits_per_base"] < 0.5
    assert unigram["bits_per_base"] == pytest.approx(2.0)


def test_baselines_on_lambda_segments(tmp_path):
    path = tmp_path / "pretrain_lambda.fa"
    shutil.copyfile(Path(__file__).parent / "data" / path.name, path)
    plan = plan_sources([path], val_fraction=0.1, max_length=1024)
    with make_sampler(plan, "train", min_length=128) as sampler:
        train = list(sampler.epoch(50_000, np.random.default_rng(6)))
    with make_sampler(plan, "validation", min_length=128) as sampler:
        validation = sampler.validation_set(4000, seed=0)
    rng = np.random.default_rng(7)
    masked = [mask_tokens(s.tokens, 0.3, "80-10-10", rng) for s in validation]
    flags = [s.lowercase for s in validation]
    for model in (UnigramModel().fit(train), MarkovModel(order=2).fit(train)):
        result = evaluate_baseline(model, masked, flags).result()
        assert result["n"] == sum(int((m.corruption == 1).sum()) for m in masked)
        assert 1.8 < result["bits_per_base"] < 2.1  # DNA is close to 2 bits per base
