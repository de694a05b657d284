"""The attention baseline: packed batches, batch independence, configs in checkpoints."""
import numpy as np
import pytest
import torch

from models import (
    ChordMixerConfig, ClassifierConfig, SequenceClassifier, Transformer, TransformerConfig,
    cast_encoders_)

CONFIG = TransformerConfig(d_model=32, n_layers=2, n_heads=2, hidden_size=32, dropout=0.0)


def _batch(lengths, seed=0):
    offsets = torch.tensor([0, *np.cumsum(lengths)])
    tokens = torch.randint(0, 4, (int(offsets[-1]),), generator=torch.Generator().manual_seed(seed))
    return tokens, offsets


def test_a_sequence_gets_the_same_features_whatever_shares_its_batch():
    torch.manual_seed(0)
    network = Transformer(CONFIG).eval()
    lengths = [7, 1, 30, 12]
    tokens, offsets = _batch(lengths)
    together = network(tokens, offsets)
    for index in range(len(lengths)):
        start, end = int(offsets[index]), int(offsets[index + 1])
        alone = network(tokens[start:end], torch.tensor([0, end - start]))
        assert torch.allclose(together[start:end], alone, atol=1e-5)


def test_attention_sees_the_whole_sequence():
    torch.manual_seed(0)
    network = Transformer(CONFIG).eval()
    tokens, offsets = _batch([40])
    changed = tokens.clone()
    changed[-1] = (changed[-1] + 1) % 4
    assert not torch.allclose(network(tokens, offsets)[0], network(changed, offsets)[0])


def test_matching_config_has_the_chordmixer_width_and_depth():
    chordmixer = ChordMixerConfig(max_len=1000, track_size=16, hidden_size=64, dropout=0.2)
    matched = TransformerConfig.matching(chordmixer)
    assert (matched.d_model, matched.n_layers) == (chordmixer.d_model, chordmixer.n_blocks)
    assert matched.d_model % matched.n_heads == 0 and matched.hidden_size == 64
    assert TransformerConfig.from_dict(matched.to_dict()) == matched


def test_classifier_configs_name_their_architecture():
    transformer = ClassifierConfig(CONFIG, n_classes=3)
    assert transformer.to_dict()["arch"] == "transformer"
    assert ClassifierConfig.from_dict(transformer.to_dict()) == transformer
    assert isinstance(SequenceClassifier(transformer).encoder, Transformer)
    old = ClassifierConfig(ChordMixerConfig(max_len=64), n_classes=2).to_dict()
    del old["arch"]  # checkpoints written before the baseline existed
    assert ClassifierConfig.from_dict(old).encoder == ChordMixerConfig(max_len=64)
    with pytest.raises(ValueError):
        ClassifierConfig.from_dict({**old, "arch": "lstm"})


def test_attention_dropout_is_off_by_default_and_old_configs_load():
    matched = TransformerConfig.matching(ChordMixerConfig(max_len=1000, dropout=0.2))
    assert matched.attention_dropout == 0.0 and matched.dropout == 0.2
    old = {key: value for key, value in matched.to_dict().items() if key != "attention_dropout"}
    assert TransformerConfig.from_dict(old) == matched


def test_a_batch_of_one_length_runs_without_a_mask_as_with_one():
    torch.manual_seed(0)
    network = Transformer(CONFIG).eval()
    tokens, offsets = _batch([25, 25, 25])
    unmasked = network(tokens, offsets)  # every sequence as long as the longest: no mask
    tokens_short, offsets_short = _batch([25, 25, 25, 3])
    masked = network(tokens_short, offsets_short)[:75]
    assert torch.allclose(unmasked, masked, atol=1e-5)


def test_a_classifier_cast_to_bf16_runs_its_attention_in_bf16_and_its_head_in_fp32():
    # How prediction runs in bf16: the encoder cast once, the head left in float32.
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(CONFIG, n_classes=3)).eval()
    tokens, offsets = _batch([40, 9, 23])
    added = torch.randn(int(offsets[-1]), CONFIG.d_model)
    with torch.no_grad():
        exact = model(tokens, offsets)
        cast_encoders_(model, torch.bfloat16)
        assert model.encoder.embedding.weight.dtype == torch.bfloat16
        assert all(p.dtype == torch.float32 for name, p in model.named_parameters()
                   if not name.startswith("encoder."))
        approximate = model(tokens, offsets)
        features = model.encoder(tokens, offsets, added)
    assert approximate.dtype == torch.float32 and features.dtype == torch.bfloat16
    torch.testing.assert_close(approximate, exact, atol=0.05, rtol=0.05)
