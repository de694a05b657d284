"""models.dropout: the CPU fast path must behave as inverted dropout."""
import math

import pytest
import torch

from models.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_drops_the_asked_share_and_keeps_the_mean(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4
    out = dropout(torch.ones(n), p, training=True)
    dropped = float((out == 0).float().mean())
    tolerance = 6 * math.sqrt(p * (1 - p) / n)  # six binomial standard deviations
    assert abs(dropped - p) < tolerance
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - round(p * 65536) / 65536)))
    assert abs(float(out.mean()) - 1.0) < tolerance / (1 - p)


def test_every_element_is_drawn_independently():
    """Neighbouring elements (lanes of one 64-bit draw) are not correlated."""
    torch.manual_seed(1)
    keep, _ = keep_mask(torch.Size([400_000]), 0.5)
    lanes = keep.view(-1, 4).float()
    correlation = torch.corrcoef(lanes.T)
    off_diagonal = correlation[~torch.eye(4, dtype=torch.bool)]
    assert float(off_diagonal.abs().max()) < 0.02


def test_backward_applies_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(37, 11, requires_grad=True)
    out = dropout(x, 0.3, training=True)
    weights = torch.randn(37, 11)
    (out * weights).sum().backward()
    kept = out.detach() != 0
    scale = 1 / (1 - round(0.3 * 65536) / 65536)
    assert torch.allclose(out.detach(), x.detach() * kept * scale)
    assert torch.allclose(x.grad, weights * kept * scale)


def test_eval_mode_zero_rate_and_full_rate():
    x = torch.randn(5, 7)
    layer = Dropout(0.4).eval()
    assert layer(x) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_same_seed_same_mask():
    x = torch.randn(100, 9)
    torch.manual_seed(3)
    first = dropout(x, 0.2, training=True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.2, training=True), first)


def test_bf16_input_keeps_its_dtype():
    out = dropout(torch.ones(64, 8, dtype=torch.bfloat16), 0.25, training=True)
    assert out.dtype == torch.bfloat16


def test_rejects_a_rate_outside_zero_one():
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_torch_dropout():
    torch.manual_seed(4)
    out = dropout(torch.ones(100_000, device="cuda"), 0.1, training=True)
    assert out.device.type == "cuda"
    assert abs(float((out == 0).float().mean()) - 0.1) < 0.01
