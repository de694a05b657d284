"""The optional local stem (models.local_context): what each position sees."""
import pytest
import torch

from models import ChordMixer, ChordMixerConfig, MaskedAutoencoderConfig
from models.local_context import LocalContext


def _stem(radius=2, vocab=6, d=8):
    torch.manual_seed(0)
    return LocalContext(vocab, d, radius)


def test_each_position_sums_its_neighbours_vectors_and_stops_at_its_sequence_ends():
    stem = _stem(radius=2)
    tokens = torch.tensor([0, 1, 2, 3, 0, 1, 5])
    offsets = torch.tensor([0, 4, 7])  # two sequences: ACGT and AC+MASK
    table = stem.table()  # (offsets -2, -1, +1, +2; vocab; d)
    assert stem.offsets == (-2, -1, 1, 2)
    out = stem(tokens, offsets)
    sequences = [[0, 1, 2, 3], [0, 1, 5]]
    for b, sequence in enumerate(sequences):
        for i in range(len(sequence)):
            expected = torch.zeros(8)
            for k, offset in enumerate(stem.offsets):
                if 0 <= i + offset < len(sequence):
                    expected += table[k, sequence[i + offset]]
            row = int(offsets[b]) + i
            torch.testing.assert_close(out[row], expected)


def test_a_base_beyond_the_radius_changes_nothing_and_one_within_it_does():
    stem = _stem(radius=3)
    tokens = torch.randint(0, 4, (40,))
    offsets = torch.tensor([0, 40])
    before = stem(tokens, offsets)
    changed = tokens.clone()
    changed[20] = (changed[20] + 1) % 4
    after = stem(changed, offsets)
    moved = (after - before).abs().sum(1) > 0
    assert moved.nonzero().flatten().tolist() == [17, 18, 19, 21, 22, 23]


def test_the_encoder_with_a_stem_gives_each_sequence_what_it_gets_alone():
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=64, track_size=4, hidden_size=8,
                                        dropout=0.0, local_radius=4)).eval()
    a, b = torch.randint(0, 4, (50,)), torch.randint(0, 4, (9,))
    with torch.no_grad():
        together = model(torch.cat([a, b]), torch.tensor([0, 50, 59]))
        torch.testing.assert_close(together[:50], model(a, torch.tensor([0, 50])))
        torch.testing.assert_close(together[50:], model(b, torch.tensor([0, 9])))


def test_the_stem_trains_and_the_paper_network_has_none():
    config = ChordMixerConfig(max_len=16, track_size=2, hidden_size=4, local_radius=2)
    model = ChordMixer(config)
    model(torch.randint(0, 4, (12,)), torch.tensor([0, 12])).sum().backward()
    assert model.local_context.weight.grad.abs().sum() > 0
    assert ChordMixer(ChordMixerConfig(max_len=16, track_size=2)).local_context is None


def test_configs_reject_a_stem_without_tokens_and_decoders_get_none():
    with pytest.raises(ValueError, match="local_radius"):
        ChordMixerConfig(vocab_size=0, local_radius=2)
    encoder = ChordMixerConfig(max_len=64, local_radius=4)
    autoencoder = MaskedAutoencoderConfig.build(encoder, 8, 32)
    assert autoencoder.decoder.local_radius == 0
    # A config saved before the stem existed still loads, as the paper's network.
    saved = encoder.to_dict()
    del saved["local_radius"]
    assert ChordMixerConfig.from_dict(saved).local_radius == 0
