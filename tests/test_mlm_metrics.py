"""MLM metrics: bits per base, perplexity, accuracy, and the splits by corruption and case."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console

from cmx_cli.data.masking import KEPT, MASKED, NONE, RANDOM, MaskedSequence, mask_tokens
from cmx_cli.metrics.masked_bases import GROUPS, MlmMetrics
from cmx_cli.metrics.tables import mlm_table

KEYS = {"n", "bits_per_base", "perplexity", "accuracy"}


def random_masked(length: int, seed: int, rate: float = 0.5) -> MaskedSequence:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 5, size=length).astype(np.uint8)
    return mask_tokens(tokens, rate, "80-10-10", rng)


def perfect_log_probs(masked: MaskedSequence) -> np.ndarray:
    log_probs = np.full((len(masked), 4), -np.inf)
    log_probs[np.arange(len(masked)), np.maximum(masked.targets, 0)] = 0.0
    return log_probs


def test_uniform_predictor_scores_exactly_two_bits():
    masked = random_masked(5000, seed=0)
    metrics = MlmMetrics()
    metrics.update(np.full((5000, 4), np.log(0.25)), masked)
    result = metrics.result()
    assert result["bits_per_base"] == 2.0
    assert result["perplexity"] == 4.0
    for group in (result["all_selected"], *result["by_corruption"].values()):
        assert group["bits_per_base"] == 2.0


def test_perfect_predictor_scores_zero_bits():
    masked = random_masked(5000, seed=1)
    metrics = MlmMetrics()
    metrics.update(perfect_log_probs(masked), masked)
    result = metrics.result()
    assert result["bits_per_base"] == 0.0 and math.copysign(1, result["bits_per_base"]) == 1
    assert result["perplexity"] == 1.0 and result["accuracy"] == 1.0
    assert result["all_selected"]["accuracy"] == 1.0


def test_counts_by_corruption_and_case():
    masked = random_masked(4000, seed=2)
    lowercase = np.random.default_rng(3).random(4000) < 0.3
    metrics = MlmMetrics()
    metrics.update(np.full((4000, 4), np.log(0.25)), masked, lowercase)
    result = metrics.result()
    corruption = masked.corruption
    assert set(result) == KEYS | {"by_corruption", "by_case", "by_position", "all_selected"}
    assert result["n"] == np.count_nonzero(corruption == MASKED)
    by_corruption = result["by_corruption"]
    assert by_corruption["mask"]["n"] == np.count_nonzero(corruption == MASKED)
    assert by_corruption["random"]["n"] == np.count_nonzero(corruption == RANDOM)
    assert by_corruption["kept"]["n"] == np.count_nonzero(corruption == KEPT)
    assert result["all_selected"]["n"] == np.count_nonzero(corruption != NONE)
    by_case = result["by_case"]
    assert by_case["lowercase"]["n"] == np.count_nonzero((corruption == MASKED) & lowercase)
    assert by_case["uppercase"]["n"] + by_case["lowercase"]["n"] == result["n"]
    assert all(set(group) == KEYS for group in (*by_corruption.values(), *by_case.values()))


def test_mask_positions_by_tenth_of_their_sequence():
    # 20 MASK positions; the predictor is right (0 bits) in the first half, uniform (2 bits)
    # in the second.
    masked = MaskedSequence(inputs=np.full(20, 5, np.uint8), targets=np.zeros(20, np.int64),
                            corruption=np.full(20, MASKED, np.uint8))
    log_probs = np.full((20, 4), np.log(0.25))
    log_probs[:10] = perfect_log_probs(masked)[:10]
    metrics = MlmMetrics()
    metrics.update(log_probs, masked)
    by_position = metrics.result()["by_position"]
    assert list(by_position) == [f"{10 * i}-{10 * (i + 1)}%" for i in range(10)]
    assert [group["n"] for group in by_position.values()] == [2] * 10
    assert [group["bits_per_base"] for group in by_position.values()] == [0.0] * 5 + [2.0] * 5


def test_known_mixture_of_right_and_wrong():
    # Four MASK positions, true base A: p(A) = 1/2, 1/2, 1/4, 1/8 -> 1, 1, 2, 3 bits.
    masked = MaskedSequence(
        inputs=np.full(4, 5, np.uint8),
        targets=np.zeros(4, np.int64),
        corruption=np.full(4, MASKED, np.uint8),
    )
    probabilities = np.array([
        [1 / 2, 1 / 6, 1 / 6, 1 / 6],
        [1 / 2, 1 / 2, 0.0, 0.0],  # a tie: the first base (A) is the arg-max
        [1 / 4, 1 / 2, 1 / 8, 1 / 8],
        [1 / 8, 1 / 8, 1 / 4, 1 / 2],
    ])
    metrics = MlmMetrics()
    with np.errstate(divide="ignore"):
        metrics.update(np.log(probabilities), masked)
    result = metrics.result()
    assert result["bits_per_base"] == pytest.approx(7 / 4, abs=1e-12)
    assert result["perplexity"] == pytest.approx(2 ** (7 / 4), abs=1e-12)
    assert result["accuracy"] == 0.5


def test_updates_accumulate():
    first, second = random_masked(300, seed=4), random_masked(700, seed=5)
    rng = np.random.default_rng(6)
    logs = [np.log(rng.dirichlet(np.ones(4), size=len(m))) for m in (first, second)]
    separate, joined = MlmMetrics(), MlmMetrics()
    separate.update(logs[0], first)
    separate.update(logs[1], second)
    concatenated = MaskedSequence(
        *(np.concatenate([getattr(first, name), getattr(second, name)])
          for name in ("inputs", "targets", "corruption"))
    )
    joined.update(np.concatenate(logs), concatenated)
    # Every group but the places in a sequence, which joining two sequences moves.
    pooled = GROUPS.index("position_0")
    assert np.allclose(separate.totals[:pooled], joined.totals[:pooled], rtol=1e-12)


def test_undefined_metrics_are_none():
    result = MlmMetrics().result()
    assert result["n"] == 0
    assert result["bits_per_base"] is None and result["perplexity"] is None
    assert result["accuracy"] is None
    assert result["by_case"]["lowercase"] == {
        "n": 0, "bits_per_base": None, "perplexity": None, "accuracy": None,
    }


def test_float32_log_probs_are_accepted():
    masked = random_masked(100, seed=7)
    metrics = MlmMetrics()
    metrics.update(np.full((100, 4), np.log(0.25), dtype=np.float32), masked)
    assert metrics.result()["bits_per_base"] == pytest.approx(2.0, abs=1e-6)


def test_shape_mismatch_is_a_programming_error():
    masked = random_masked(10, seed=8)
    with pytest.raises(ValueError):
        MlmMetrics().update(np.zeros((9, 4)), masked)
    with pytest.raises(ValueError):
        MlmMetrics().update(np.zeros((10, 4)), masked, np.zeros(3, bool))


def test_table_has_one_row_per_model():
    masked = random_masked(1000, seed=9)
    uniform = MlmMetrics()
    uniform.update(np.full((1000, 4), np.log(0.25)), masked)
    table = mlm_table("validation", {"cmx": MlmMetrics().result(), "unigram": uniform.result()})
    console = Console(width=100, record=True, file=None, force_terminal=False)
    with console.capture() as capture:
        console.print(table)
    text = capture.get()
    assert [column.header for column in table.columns] == [
        "model", "n", "bits/base", "perplexity", "accuracy",
    ]
    assert "unigram" in text and "2.000" in text and "4.000" in text
    assert "cmx" in text and "–" in text  # undefined metrics show a dash


@pytest.mark.parametrize("model_bits, words", [
    (1.80, "0.150 bits/base below the order-5 Markov model: it learnt more than local"),
    (1.93, "only 0.020 bits/base below the order-5 Markov model: it learnt little beyond"),
    (1.99, "0.040 bits/base above the order-5 Markov model: it learnt no more than"),
])
def test_the_verdict_compares_the_model_with_the_markov_baseline(model_bits, words):
    from cmx_cli.metrics.masked_bases import beyond_local_statistics

    verdict = beyond_local_statistics({"bits_per_base": model_bits}, {"bits_per_base": 1.95}, 5)
    assert verdict.startswith(words), verdict
