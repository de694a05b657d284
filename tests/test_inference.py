"""Inference: an input's output does not depend on the inputs that share its batch, to the
last bit (on the CPU, in float32), so that shards of a VCF or a FASTA join into one run."""
import numpy as np
import pytest
import torch

from cmx_cli.tasks.classification import predict_probabilities
from cmx_cli.tasks.masked_bases import ZeroShotScorer
from cmx_cli.tasks.variant import predict_variant_probabilities
from cmx_cli.variants.windows import AlleleWindow
from models import (
    ChordMixerConfig, ClassifierConfig, MaskedAutoencoder, MaskedAutoencoderConfig,
    SequenceClassifier, VariantClassifier, VariantClassifierConfig, cast_encoders_)

CPU = torch.device("cpu")
ENCODER = ChordMixerConfig(max_len=256, track_size=4, hidden_size=16, dropout=0.0)


def _windows(count: int, seed: int) -> list[AlleleWindow]:
    """SNV, insertion and deletion windows of 20-120 bp, alleles in the middle."""
    rng = np.random.default_rng(seed)
    windows = []
    for number in range(count):
        length = int(rng.integers(20, 120))
        ref = rng.integers(0, 4, length).astype(np.uint8)
        centre = length // 2
        kind = number % 3
        if kind == 0:
            alt = ref.copy()
            alt[centre] = (ref[centre] + 1) % 4
            spans = ((centre, centre + 1), (centre, centre + 1))
        elif kind == 1:
            alt = np.concatenate([ref[:centre + 1], [1, 2], ref[centre + 1:]]).astype(np.uint8)
            spans = ((centre, centre + 1), (centre, centre + 3))
        else:
            alt = np.concatenate([ref[:centre + 1], ref[centre + 3:]]).astype(np.uint8)
            spans = ((centre, centre + 3), (centre, centre + 1))
        windows.append(AlleleWindow(ref, alt, *spans))
    return windows


@pytest.mark.parametrize("average_strands", [False, True])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-encoder"])
def test_a_variant_scores_alike_alone_and_in_any_batch(average_strands, bf16):
    torch.manual_seed(0)
    model = VariantClassifier(VariantClassifierConfig(ENCODER, n_groups=2, head_hidden=16))
    if bf16:
        cast_encoders_(model, torch.bfloat16)  # how prediction runs in bf16
    windows = _windows(90, seed=1)
    groups = np.arange(90) % 2
    whole = predict_variant_probabilities(model, windows, groups, 4096, CPU, "fp32",
                                          average_strands)
    halves = np.concatenate([
        predict_variant_probabilities(model, windows[:37], groups[:37], 4096, CPU, "fp32",
                                      average_strands),
        predict_variant_probabilities(model, windows[37:], groups[37:], 700, CPU, "fp32",
                                      average_strands)])
    alone = [predict_variant_probabilities(model, [window], [group], 4096, CPU, "fp32",
                                           average_strands)[0]
             for window, group in zip(windows, groups)]
    assert np.array_equal(whole, halves) and np.array_equal(whole, alone)


def test_a_sequence_classifies_alike_alone_and_in_any_batch():
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(ENCODER, n_classes=3))
    rng = np.random.default_rng(2)
    sequences = [rng.integers(0, 5, int(rng.integers(5, 250))).astype(np.uint8)
                 for _ in range(60)]
    whole = predict_probabilities(model, sequences, 4096, CPU, "fp32", average_strands=True)
    alone = np.vstack([predict_probabilities(model, [sequence], 4096, CPU, "fp32",
                                             average_strands=True) for sequence in sequences])
    assert np.array_equal(whole, alone)


def test_a_zero_shot_score_is_alike_alone_and_in_any_batch():
    torch.manual_seed(0)
    model = MaskedAutoencoder(MaskedAutoencoderConfig.build(ENCODER, 2, 8))
    scorer = ZeroShotScorer(model, 4096, CPU, "fp32")
    windows = [window for window in _windows(60, seed=3)
               if len(window.ref_tokens) == len(window.alt_tokens)]
    whole = scorer(windows)
    alone = np.array([scorer([window])[0] for window in windows])
    assert np.array_equal(whole, alone)


def test_the_alleles_of_one_site_share_one_masked_pass_per_strand(monkeypatch):
    from cmx_cli.tasks import masked_bases

    torch.manual_seed(0)
    model = MaskedAutoencoder(MaskedAutoencoderConfig.build(ENCODER, 2, 8))
    scorer = ZeroShotScorer(model, 4096, CPU, "fp32")
    reference = np.random.default_rng(4).integers(0, 4, 41).astype(np.uint8)
    windows = []
    for alt in range(4):
        if alt != reference[20]:
            changed = reference.copy()
            changed[20] = alt
            windows.append(AlleleWindow(reference, changed, (20, 21), (20, 21)))
    alone = [scorer([window])[0] for window in windows]
    passes = []
    original = masked_bases.predict_log_probabilities
    monkeypatch.setattr(masked_bases, "predict_log_probabilities",
                        lambda model, inputs, *rest: passes.append(len(inputs))
                        or original(model, inputs, *rest))
    together = scorer(windows)
    assert passes == [2]  # both strands of the one site, for its three ALT alleles
    assert np.array_equal(together, alone)
