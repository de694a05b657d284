"""The siamese variant classifier: spans, pooling, batch independence, marker, strands."""
import numpy as np
import pytest
import torch

from cmx_cli.alphabet import reverse_complement
from cmx_cli.io.checkpoint import Checkpoint
from cmx_cli.tasks.variant import (
    VariantScorer, group_logits, pack_pairs, predict_variant_probabilities)
from cmx_cli.variants.windows import AlleleWindow
from models import ChordMixerConfig, VariantClassifier, VariantClassifierConfig
from models.variant import span_mask, span_mean

TRUNK = ChordMixerConfig(max_len=64, track_size=4, hidden_size=16, dropout=0.0)


def snv_window(rng, length=41, centre=20, alt_base=None) -> AlleleWindow:
    ref = rng.integers(0, 4, length).astype(np.uint8)
    alt = ref.copy()
    alt[centre] = (ref[centre] + 1) % 4 if alt_base is None else alt_base
    return AlleleWindow(ref, alt, (centre, centre + 1), (centre, centre + 1))


def deletion_window(rng) -> AlleleWindow:
    ref = rng.integers(0, 4, 30).astype(np.uint8)
    alt = np.concatenate([ref[:13], ref[15:]])  # REF ref[12:15] -> ALT ref[12]
    return AlleleWindow(ref, alt, (12, 15), (12, 13))


def model(**changes) -> VariantClassifier:
    torch.manual_seed(0)
    network = VariantClassifier(VariantClassifierConfig(TRUNK, **changes))
    if network.marker is not None:
        torch.nn.init.normal_(network.marker)  # a trained marker is not zero
    return network.eval()


def test_span_mask_marks_each_sequence_span():
    offsets = torch.tensor([0, 5, 8, 15])
    spans = torch.tensor([[1, 3], [0, 1], [6, 7]])
    mask = span_mask(offsets, spans, 15)
    assert torch.nonzero(mask).flatten().tolist() == [1, 2, 5, 14]


def test_span_mean_averages_the_marked_rows_only():
    features = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    offsets = torch.tensor([0, 4, 6])
    spans = torch.tensor([[1, 3], [1, 2]])
    inside = span_mask(offsets, spans, 6)
    assert inside.tolist() == [False, True, True, False, False, True]
    means = span_mean(features, inside, spans)
    assert torch.allclose(means, torch.tensor([[3.0, 4.0], [10.0, 11.0]]))


def test_pack_pairs_puts_ref_windows_first_and_mirrors_spans_on_the_reverse_strand():
    rng = np.random.default_rng(0)
    first, second = snv_window(rng, 11, 3), deletion_window(rng)
    tokens, offsets, spans = pack_pairs([first, second], [False, True])
    assert offsets.tolist() == [0, 11, 41, 52, 80]
    assert tokens[:11].tolist() == first.ref_tokens.tolist()
    assert tokens[11:41].tolist() == reverse_complement(second.ref_tokens).tolist()
    assert tokens[52:80].tolist() == reverse_complement(second.alt_tokens).tolist()
    assert spans.tolist() == [[3, 4], [30 - 15, 30 - 12], [3, 4], [28 - 13, 28 - 12]]


def test_a_variant_scores_the_same_whatever_shares_its_batch():
    rng = np.random.default_rng(1)
    windows = [snv_window(rng), deletion_window(rng), snv_window(rng, 60, 7)]
    network = model()
    with torch.no_grad():
        together = network(*pack_pairs(windows, [False] * 3))
        alone = torch.cat([network(*pack_pairs([w], [False])) for w in windows])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("changes", [{}, {"marker": False}, {"site_features": False},
                                     {"site_features": False, "marker": False}])
def test_identical_windows_give_identical_scores_and_the_allele_changes_them(changes):
    rng = np.random.default_rng(2)
    window = snv_window(rng)
    other_alt = AlleleWindow(window.ref_tokens, window.alt_tokens.copy(), window.ref_span,
                             window.alt_span)
    other_alt.alt_tokens[20] = (window.alt_tokens[20] + 1) % 4
    network = model(**changes)
    with torch.no_grad():
        scores = network(*pack_pairs([window, window, other_alt], [False] * 3))
    assert torch.allclose(scores[0], scores[1], atol=1e-6)
    assert not torch.allclose(scores[0], scores[2])


def test_the_marker_tells_the_encoder_where_the_variant_is():
    rng = np.random.default_rng(3)
    window = snv_window(rng)
    moved = AlleleWindow(window.ref_tokens, window.alt_tokens, (5, 6), (5, 6))
    with torch.no_grad():
        marked = model(site_features=False)
        unmarked = model(site_features=False, marker=False)
        assert not torch.allclose(marked(*pack_pairs([window], [False])),
                                  marked(*pack_pairs([moved], [False])))
        # Without marker or site features the span is invisible.
        assert torch.allclose(unmarked(*pack_pairs([window], [False])),
                              unmarked(*pack_pairs([moved], [False])))


def test_group_logits_reads_each_variants_group():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    assert group_logits(logits, torch.tensor([2, 0])).tolist() == [2.0, 3.0]


def test_strand_average_is_the_mean_of_both_strands_and_symmetric():
    rng = np.random.default_rng(4)
    windows = [snv_window(rng) for _ in range(5)] + [deletion_window(rng)]
    flipped = [AlleleWindow(reverse_complement(w.ref_tokens), reverse_complement(w.alt_tokens),
                            (len(w.ref_tokens) - w.ref_span[1], len(w.ref_tokens) - w.ref_span[0]),
                            (len(w.alt_tokens) - w.alt_span[1], len(w.alt_tokens) - w.alt_span[0]))
               for w in windows]
    network = model(n_groups=2)
    groups = [0, 1, 0, 1, 0, 1]
    cpu = torch.device("cpu")
    forward = predict_variant_probabilities(network, windows, groups, 200, cpu, "fp32")
    backward = predict_variant_probabilities(network, flipped, groups, 200, cpu, "fp32")
    both = predict_variant_probabilities(network, windows, groups, 200, cpu, "fp32",
                                         average_strands=True)
    assert np.allclose(both, (forward + backward) / 2, atol=1e-6)
    assert not np.allclose(forward, backward)
    both_flipped = predict_variant_probabilities(network, flipped, groups, 200, cpu, "fp32",
                                                 average_strands=True)
    assert np.allclose(both, both_flipped, atol=1e-6)


def test_scorer_reads_the_group_from_each_windows_context():
    rng = np.random.default_rng(5)
    window = snv_window(rng)
    network = model(n_groups=3)
    checkpoint = Checkpoint(kind="variant-classifier", model_config=network.config.to_dict(),
                            state_dict={}, extra={"label_field": "LABEL"})
    scorer = VariantScorer(checkpoint, network, 1000, torch.device("cpu"), "fp32")
    assert "INFO/LABEL" in scorer.description
    with torch.no_grad():
        logits = network(*pack_pairs([window], [False]))[0]
    from dataclasses import replace
    scores = scorer([replace(window, context=g) for g in (0, 1, 2)] + [window])
    assert np.allclose(scores[:3], torch.sigmoid(logits).numpy(), atol=1e-6)
    assert scores[3] == pytest.approx(scores[0])  # no context: the only/first group


def test_config_round_trips_and_rejects_a_feature_encoder():
    config = VariantClassifierConfig(TRUNK, n_groups=2, site_features=False, marker=True)
    assert VariantClassifierConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        VariantClassifierConfig(ChordMixerConfig(vocab_size=0, max_len=64))
