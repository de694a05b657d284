"""Tests for cmx_cli.runtime: device and precision resolution, autocast."""
from __future__ import annotations

import pytest
import torch

from cmx_cli.errors import CmxError
from cmx_cli.runtime import autocast, resolve_device, resolve_precision

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour without CUDA")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_user_error(name):
    with pytest.raises(CmxError) as error:
        resolve_device(name)
    message = error.value.message
    assert f"--device {name}" in message
    assert "Hint:" in message
    assert "--device cpu" in message
    assert error.value.exit_code == 2  # a flag that cannot work here: a usage error


@no_cuda
def test_auto_is_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.gpu
def test_auto_is_cuda_with_cuda():
    assert resolve_device("auto").type == "cuda"


def test_cpu_is_always_available():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "name, device, expected",
    [
        ("auto", "cpu", "fp32"),
        ("auto", "cuda", "bf16"),
        ("auto", "cuda:1", "bf16"),
        ("fp32", "cpu", "fp32"),
        ("fp32", "cuda", "fp32"),
        ("bf16", "cpu", "bf16"),
        ("bf16", "cuda", "bf16"),
    ],
)
def test_resolve_precision(name, device, expected):
    assert resolve_precision(name, torch.device(device)) == expected


def test_autocast_fp32_is_a_no_op():
    layer = torch.nn.Linear(4, 2)
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_autocast_bf16_on_cpu():
    layer = torch.nn.Linear(4, 2)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_auto_precision_is_bf16_for_prediction_on_a_cpu_with_native_bf16(monkeypatch):
    from cmx_cli import runtime

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"  # training
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: native)
        assert resolve_precision("auto", cpu, inference=True) == ("bf16" if native else "fp32")
        assert resolve_precision("fp32", cpu, inference=True) == "fp32"


def test_bf16_prediction_casts_the_encoder_once_and_keeps_the_head_float32():
    from cmx_cli.runtime import ready_for_inference
    from cmx_cli.settings import Runtime
    from models import ChordMixerConfig, ClassifierConfig, SequenceClassifier

    model = SequenceClassifier(ClassifierConfig(ChordMixerConfig(max_len=64, track_size=2,
                                                                 hidden_size=8), 2))
    device, precision = ready_for_inference(model, Runtime(device="cpu", precision="bf16"))
    assert device == torch.device("cpu") and precision == "fp32"  # no autocast on top
    assert {p.dtype for p in model.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.classifier.parameters()} == {torch.float32}
    assert not model.training
