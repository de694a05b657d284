"""The ChordMixer trunk and classifier keep the promises of DESIGN.md."""
import numpy as np
import pytest
import torch

from models import (
    ChordMixer,
    ChordMixerConfig,
    ClassifierConfig,
    RotationPlan,
    SequenceClassifier,
    blocks_for_length,
    ceil_log2,
    mean_pool,
)


def _offsets(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int64)


@pytest.mark.parametrize(
    "n, expected", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (1024, 10), (1025, 11), (10**6, 20)]
)
def test_ceil_log2(n, expected):
    assert ceil_log2(n) == expected


@pytest.mark.parametrize("length, blocks", [(1, 1), (2, 1), (3, 2), (64, 6), (65, 7)])
def test_blocks_for_length(length, blocks):
    assert blocks_for_length(length) == blocks


def test_config_shape_follows_design():
    config = ChordMixerConfig(max_len=1000, track_size=16)
    assert config.n_tracks == 11  # ⌈log2 1000⌉ + 1
    assert config.d_model == 176
    assert config.n_blocks == 10
    assert ChordMixerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        ChordMixerConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        ChordMixerConfig().max_len = 3


@pytest.mark.parametrize("norm", [True, False])
def test_output_does_not_depend_on_batch_companions(norm, device):
    torch.manual_seed(0)
    config = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.0, norm=norm)
    model = ChordMixer(config).to(device).eval()
    lengths = [2, 300, 1, 37, 5]  # 1, 9, 1, 6 and 3 blocks
    tokens = torch.randint(0, 5, (sum(lengths),), device=device)
    offsets = _offsets(lengths).to(device)
    with torch.no_grad():
        packed = model(tokens, offsets)
        for b, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
            alone = model(tokens[start:end], _offsets([end - start]).to(device))
            torch.testing.assert_close(packed[start:end], alone, rtol=1e-5, atol=1e-5)


def test_sequence_passes_exactly_its_blocks():
    # A length-3 sequence passes 2 blocks; zeroing block 3's weights must not change it,
    # and zeroing block 2's must.
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=64, track_size=2, hidden_size=8, dropout=0.0))
    model.eval()
    tokens, offsets = torch.tensor([0, 1, 2]), _offsets([3])
    with torch.no_grad():
        before = model(tokens, offsets)
        for parameter in model.blocks[2].parameters():
            parameter.zero_()
        assert torch.equal(model(tokens, offsets), before)
        for parameter in model.blocks[1].parameters():
            parameter.zero_()
        assert not torch.allclose(model(tokens, offsets), before)


def _input_gradient(model: ChordMixer, length: int, n_blocks: int, position: int) -> torch.Tensor:
    """Gradient of one output position w.r.t. every input position after n_blocks blocks."""
    offsets = _offsets([length])
    plan = RotationPlan.build(offsets, model.config.n_tracks)
    x = torch.randn(length, model.config.d_model, requires_grad=True)
    h = x
    for block in model.blocks[:n_blocks]:
        h = h + block(h, plan)
    h[position].sum().backward()
    return x.grad.abs().sum(dim=1)  # (L,)


# Powers of two: with L = 2^n, offset L-1 needs n hops (all bits set) and wrapping around
# cannot shorten it, so n - 1 blocks must leave some position out.
@pytest.mark.parametrize("length", [64, 256])
def test_full_receptive_field_after_log2_blocks(length):
    torch.manual_seed(0)
    config = ChordMixerConfig(max_len=length, track_size=2, hidden_size=16, dropout=0.0)
    model = ChordMixer(config)
    needed = blocks_for_length(length)
    full = _input_gradient(model, length, needed, position=0)
    assert bool((full > 0).all()), "some input position does not reach output 0"
    partial = _input_gradient(model, length, needed - 1, position=0)
    assert bool((partial == 0).any()), "receptive field already full with fewer blocks"


def test_full_model_gradient_reaches_every_position():
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=128, track_size=2, hidden_size=8, dropout=0.0))
    tokens, offsets = torch.randint(0, 4, (77,)), _offsets([77])
    embedded = []

    def keep_embedding(module, args, out):
        out.retain_grad()
        embedded.append(out)

    handle = model.embedding.register_forward_hook(keep_embedding)
    # A projection that LayerNorm does not cancel (its outputs sum to a constant).
    projection = torch.linspace(-1.0, 1.0, model.config.d_model)
    (model(tokens, offsets)[5] * projection).sum().backward()
    handle.remove()
    assert bool((embedded[0].grad.abs().sum(dim=1) > 0).all())


def test_mean_pool_is_per_sequence():
    features = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    pooled = mean_pool(features, _offsets([1, 2, 3]))
    expected = torch.tensor([[0.0, 1.0], [3.0, 4.0], [8.0, 9.0]])
    assert torch.equal(pooled, expected)


def test_tiny_classifier_overfits_tiny_batch(device):
    torch.manual_seed(0)
    trunk = ChordMixerConfig(max_len=64, track_size=4, hidden_size=32, dropout=0.0)
    model = SequenceClassifier(ClassifierConfig(trunk, n_classes=2)).to(device)
    lengths = [5, 9, 17, 33, 12, 40, 3, 64]
    tokens = torch.randint(0, 4, (sum(lengths),), device=device)
    offsets = _offsets(lengths).to(device)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens, offsets), labels)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert torch.equal(model(tokens, offsets).argmax(dim=1), labels)


def test_classifier_config_round_trip():
    config = ClassifierConfig(ChordMixerConfig(max_len=10), n_classes=3)
    assert ClassifierConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        ClassifierConfig(ChordMixerConfig(), n_classes=1)


def test_masked_autoencoder_predicts_bases_per_position():
    from models import MaskedAutoencoder, MaskedAutoencoderConfig

    torch.manual_seed(0)
    encoder = ChordMixerConfig(max_len=128, track_size=4, hidden_size=16, dropout=0.0)
    config = MaskedAutoencoderConfig.build(encoder, decoder_track_size=2, decoder_hidden_size=8)
    assert MaskedAutoencoderConfig.from_dict(config.to_dict()) == config
    model = MaskedAutoencoder(config).eval()
    lengths = [1, 50, 128]
    tokens = torch.randint(0, 6, (sum(lengths),))
    offsets = _offsets(lengths)
    with torch.no_grad():
        logits = model(tokens, offsets)
        alone = model(tokens[1:51], _offsets([50]))
    assert logits.shape == (179, 4)
    torch.testing.assert_close(logits[1:51], alone, rtol=1e-5, atol=1e-5)
    # The encoder is a plain trunk: a classifier can take its weights as they are.
    classifier = SequenceClassifier(ClassifierConfig(encoder, n_classes=2))
    classifier.encoder.load_state_dict(model.encoder.state_dict())


def test_decoder_config_must_take_features():
    from models import MaskedAutoencoderConfig

    with pytest.raises(ValueError):
        MaskedAutoencoderConfig(ChordMixerConfig(max_len=8), ChordMixerConfig(max_len=8))


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    from models import set_checkpointing
    config = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.2)
    lengths = [3, 40, 300, 17]  # mixed depths
    offsets = torch.tensor([0, *np.cumsum(lengths)])
    tokens = torch.randint(0, 4, (int(offsets[-1]),), generator=torch.Generator().manual_seed(1))
    results = []
    for enabled in (False, True):
        torch.manual_seed(0)
        network = ChordMixer(config)
        set_checkpointing(network, enabled)
        assert network.checkpointing is enabled
        torch.manual_seed(5)  # the same dropout masks, recomputation included
        output = network(tokens, offsets)
        output.square().mean().backward()
        results.append((output.detach(), [p.grad.clone() for p in network.parameters()]))
    (plain, plain_grads), (recomputed, recomputed_grads) = results
    assert torch.allclose(plain, recomputed, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, recomputed_grads))


def test_checkpointing_with_a_frozen_embedding_still_trains_the_blocks():
    """When the blocks' input needs no gradient, checkpointing falls back to one level."""
    from models import set_checkpointing
    config = ChordMixerConfig(max_len=64, track_size=2, hidden_size=8, dropout=0.0)
    offsets = torch.tensor([0, 64, 80])
    tokens = torch.randint(0, 4, (80,), generator=torch.Generator().manual_seed(3))
    gradients = []
    for enabled in (False, True):
        torch.manual_seed(0)
        network = ChordMixer(config)
        network.embedding.weight.requires_grad_(False)
        set_checkpointing(network, enabled)
        network(tokens, offsets).square().mean().backward()
        gradients.append([p.grad.clone() for p in network.blocks.parameters()])
    assert all(g is not None for g in gradients[1])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*gradients))


def test_the_reference_rotation_network_gives_identical_outputs_and_gradients():
    from models import ReferenceRotationPlan
    config = ChordMixerConfig(max_len=200, track_size=4, hidden_size=16, dropout=0.0)
    lengths = [1, 5, 200, 64, 33]
    offsets = torch.tensor([0, *np.cumsum(lengths)])
    tokens = torch.randint(0, 4, (int(offsets[-1]),), generator=torch.Generator().manual_seed(2))
    results = []
    for plan_type in (None, ReferenceRotationPlan):
        torch.manual_seed(0)
        network = ChordMixer(config)
        if plan_type is not None:
            network.plan_type = plan_type
        output = network(tokens, offsets)
        output.square().mean().backward()
        results.append((output.detach(), [p.grad.clone() for p in network.parameters()]))
    (packed, packed_grads), (reference, reference_grads) = results
    assert torch.equal(packed, reference)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(packed_grads, reference_grads))


@pytest.mark.parametrize("reversible", [False, True])
def test_inference_updates_the_activations_in_place(reversible):
    """Without gradients no block makes new activations (memory at 1M bases)."""
    import weakref
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=64, track_size=2, hidden_size=8,
                                        reversible=reversible)).eval()
    embedded, normalized = [], []
    model.embedding.register_forward_hook(
        lambda module, args, out: embedded.append((weakref.ref(out), out.data_ptr())))
    model.final_norm.register_forward_pre_hook(
        lambda module, args: normalized.append(args[0].data_ptr()))
    with torch.no_grad():
        model(torch.randint(0, 4, (64,)), _offsets([64]))
    (alive, address), = embedded
    if reversible:  # the two halves are copies, updated in place; the input is gone
        assert alive() is None
    else:  # every block added its update to the embedding's output
        assert normalized == [address]


@pytest.mark.parametrize("reversible", [False, True])
def test_inference_in_slices_equals_the_training_path(reversible, monkeypatch):
    from models import packed
    monkeypatch.setattr(packed, "SLICE_ROWS", 7)  # many slices, one of them short
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(max_len=300, track_size=4, hidden_size=16,
                                        reversible=reversible)).eval()
    lengths = [2, 300, 1, 37, 5]
    tokens, offsets = torch.randint(0, 4, (sum(lengths),)), _offsets(lengths)
    with torch.no_grad():
        in_place = model(tokens, offsets)
    with torch.enable_grad():
        out_of_place = model(tokens, offsets)
    torch.testing.assert_close(in_place, out_of_place.detach(), rtol=1e-5, atol=1e-5)


def test_inference_leaves_features_passed_in_as_they_were():
    torch.manual_seed(0)
    model = ChordMixer(ChordMixerConfig(vocab_size=0, max_len=64, track_size=2, hidden_size=8))
    features = torch.randn(40, model.config.d_model)
    before = features.clone()
    with torch.no_grad():
        model.eval()(features, _offsets([40]))
    assert torch.equal(features, before)
