"""The masked-base loss: selected positions only, lowercase bases weighted."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmx_cli.data.masking import MaskedSequence
from cmx_cli.data.pretrain_sources import PretrainSequence
from cmx_cli.tasks.masked_bases import MaskedBaseTask, MaskingSettings
from models import ChordMixerConfig, MaskedAutoencoder, MaskedAutoencoderConfig


def _task(settings):
    return MaskedBaseTask(lambda rng: [], [], settings, 4096, torch.device("cpu"), "fp32", seed=0)


@pytest.mark.parametrize("lowercase_weight", [0.0, 0.25, 1.0])
def test_loss_covers_selected_positions_with_lowercase_weights(lowercase_weight):
    torch.manual_seed(0)
    model = MaskedAutoencoder(MaskedAutoencoderConfig.build(
        ChordMixerConfig(max_len=16, track_size=2, hidden_size=8, dropout=0.0), 2, 4))
    tokens = np.array([0, 1, 2, 3, 0, 1, 2, 3, 4, 0], dtype=np.uint8)
    lowercase = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    targets = np.full(10, -100, dtype=np.int64)
    selected = [1, 2, 6, 9]
    targets[selected] = tokens[selected]
    inputs = tokens.copy()
    inputs[selected] = 5
    corruption = np.zeros(10, dtype=np.uint8)
    corruption[selected] = 1
    sequence = PretrainSequence(tokens, lowercase, "test")
    settings = MaskingSettings(rate=0.3, lowercase_weight=lowercase_weight)
    terms = _task(settings).loss(model, [(sequence, MaskedSequence(inputs, targets, corruption))],
                                 torch.device("cpu"))
    loss = terms.total / terms.weight

    with torch.no_grad():
        logits = model(torch.from_numpy(inputs.astype(np.int64)), torch.tensor([0, 10]))
    per_position = F.cross_entropy(logits[selected], torch.from_numpy(tokens[selected].astype(np.int64)),
                                   reduction="none")
    weights = torch.tensor([1.0 if not lowercase[i] else lowercase_weight for i in selected])
    expected = (per_position * weights).sum() / weights.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
