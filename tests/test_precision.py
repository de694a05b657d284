"""The bf16 autocast path (the CUDA default) and the CUDA path itself.

bf16 autocast also exists on the CPU, so the mixed-precision code runs here; the GPU tests
are marked and skip without CUDA.
"""
import numpy as np
import pytest
import torch

from cmx_cli.data.batching import pack
from cmx_cli.tasks.classification import predict_probabilities
from models import (
    ChordMixerConfig, ClassifierConfig, MaskedAutoencoder, MaskedAutoencoderConfig,
    SequenceClassifier)


def _model_and_data():
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(
        ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.0), n_classes=3))
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 5, size=length).astype(np.uint8) for length in (1, 7, 64, 300)]
    return model, sequences


def test_bf16_probabilities_are_close_to_fp32():
    model, sequences = _model_and_data()
    cpu = torch.device("cpu")
    full = predict_probabilities(model, sequences, 4096, cpu, "fp32")
    half = predict_probabilities(model, sequences, 4096, cpu, "bf16")
    assert half.dtype == np.float64
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(half, full, atol=0.05)


def test_the_masked_base_decoder_reads_float32_features_under_bf16():
    model = MaskedAutoencoder(MaskedAutoencoderConfig.build(
        ChordMixerConfig(max_len=64, track_size=4, hidden_size=16, dropout=0.0), 2, 8))
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].dtype))
    tokens, offsets = pack([np.arange(40, dtype=np.uint8) % 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(tokens, offsets)
    assert seen == [torch.float32]


def test_bf16_training_step_gives_finite_gradients():
    model, sequences = _model_and_data()
    tokens, offsets = pack(sequences)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(tokens, offsets)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert logits.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    model, sequences = _model_and_data()
    cpu_probabilities = predict_probabilities(model, sequences, 4096, torch.device("cpu"), "fp32")
    model.to("cuda")
    cuda_probabilities = predict_probabilities(model, sequences, 4096, torch.device("cuda"), "fp32")
    np.testing.assert_allclose(cuda_probabilities, cpu_probabilities, atol=1e-4)


@pytest.mark.gpu
def test_cuda_bf16_training_step():
    model, sequences = _model_and_data()
    model.to("cuda")
    tokens, offsets = pack(sequences)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        logits = model(tokens.cuda(), offsets.cuda())
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0], device="cuda")).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
