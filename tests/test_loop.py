"""Tests for cmx_cli.training.loop: the learning-rate schedule and the optimizer groups."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cmx_cli.settings import TrainingSettings
from cmx_cli.training.loop import build_optimizer, steps_within, warmup_cosine
from models import ChordMixerConfig, ClassifierConfig, SequenceClassifier

# total steps, warmup fraction, warmup steps (round(total·fraction), at least 1)
SCHEDULES = [
    pytest.param(100, 0.1, 10, id="100-steps-10-warmup"),
    pytest.param(1000, 0.05, 50, id="1000-steps-5pc"),
    pytest.param(40, 0.25, 10, id="40-steps-quarter"),
    pytest.param(20, 0.0, 1, id="no-warmup-still-one-step"),
    pytest.param(7, 0.01, 1, id="warmup-rounds-to-zero"),
]


@pytest.mark.parametrize("total, fraction, warmup", SCHEDULES)
def test_warmup_is_linear_and_peaks_at_one(total, fraction, warmup):
    factor = warmup_cosine(total, fraction)
    rising = [factor(step) for step in range(warmup)]
    assert rising[-1] == pytest.approx(1.0)
    assert rising[0] == pytest.approx(1.0 / warmup)
    steps = [b - a for a, b in zip(rising, rising[1:])]
    assert steps == pytest.approx([1.0 / warmup] * (warmup - 1))  # equal increments
    assert max(factor(step) for step in range(total + 5)) == pytest.approx(1.0)


@pytest.mark.parametrize("total, fraction, warmup", SCHEDULES)
def test_cosine_decays_to_one_percent(total, fraction, warmup):
    factor = warmup_cosine(total, fraction)
    decay = [factor(step) for step in range(warmup, total + 1)]
    assert decay[0] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(decay, decay[1:])), "not strictly decreasing"
    assert factor(total) == pytest.approx(0.01)
    assert all(factor(step) == pytest.approx(0.01) for step in (total + 1, total + 10, 10 * total))
    assert min(factor(step) for step in range(3 * total)) == pytest.approx(0.01)
    assert all(factor(step) > 0 for step in range(3 * total))


def test_cosine_shape_midpoint_and_quarter():
    """Half-way through the decay the factor is half-way between 1 and 0.01 (cosine)."""
    factor = warmup_cosine(110, 10 / 110)  # warmup 10, decay over 100 steps
    assert factor(60) == pytest.approx((1.0 + 0.01) / 2)
    assert factor(35) == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi / 4)) / 2)
    assert factor(85) == pytest.approx(0.01 + 0.99 * (1 + math.cos(3 * math.pi / 4)) / 2)


def test_schedule_drives_lambda_lr():
    parameter = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([parameter], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(20, 0.25))
    rates = []
    for _ in range(25):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.5 / 5)
    assert rates[4] == pytest.approx(0.5)
    assert rates[20] == pytest.approx(0.5 * 0.01)


def tiny_classifier() -> SequenceClassifier:
    config = ClassifierConfig(
        ChordMixerConfig(max_len=8, track_size=2, hidden_size=4, dropout=0.0), n_classes=3
    )
    return SequenceClassifier(config)


def names_in(group: dict, model: nn.Module) -> set[str]:
    by_id = {id(parameter): name for name, parameter in model.named_parameters()}
    return {by_id[id(parameter)] for parameter in group["params"]}


def test_build_optimizer_groups():
    model = tiny_classifier()
    settings = TrainingSettings(learning_rate=3e-4, weight_decay=0.05)
    optimizer = build_optimizer(model, settings)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = sorted(optimizer.param_groups, key=lambda group: -group["weight_decay"])
    assert [group["weight_decay"] for group in groups] == [0.05, 0.0]
    assert all(group["lr"] == 3e-4 for group in groups)
    decayed, kept = names_in(groups[0], model), names_in(groups[1], model)
    n_blocks = model.config.encoder.n_blocks
    assert decayed == (
        {"encoder.embedding.weight", "classifier.weight"}
        | {f"encoder.blocks.{i}.mix.{j}.weight" for i in range(n_blocks) for j in (0, 3)}
    )
    assert kept == (
        {"encoder.final_norm.weight", "encoder.final_norm.bias", "classifier.bias"}
        | {f"encoder.blocks.{i}.norm.{kind}" for i in range(n_blocks) for kind in ("weight", "bias")}
        | {f"encoder.blocks.{i}.mix.{j}.bias" for i in range(n_blocks) for j in (0, 3)}
    )
    assert decayed.isdisjoint(kept)
    assert decayed | kept == {name for name, _ in model.named_parameters()}


def test_build_optimizer_skips_frozen_parameters():
    model = tiny_classifier()
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)
    optimizer = build_optimizer(model, TrainingSettings())
    in_groups = set().union(*(names_in(group, model) for group in optimizer.param_groups))
    assert in_groups == {"classifier.weight", "classifier.bias"}


def test_a_pretrained_encoder_learns_at_its_share_of_the_learning_rate():
    model = tiny_classifier()
    settings = TrainingSettings(learning_rate=1e-3, weight_decay=0.01)
    optimizer = build_optimizer(model, settings, encoder_lr_scale=0.1)
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups
             for p in group["params"]}
    for name, parameter in model.named_parameters():
        expected = 1e-4 if name.startswith("encoder.") else 1e-3
        assert rate[id(parameter)] == pytest.approx(expected), name
        assert decay[id(parameter)] == (0.01 if parameter.dim() >= 2 else 0.0), name
    assert len(rate) == sum(1 for _ in model.parameters())


def test_a_time_budget_revises_the_schedule_to_end_with_it():
    # 100 steps in 60 s, 120 s left: 200 more at that pace.
    assert steps_within(100, 100, 60.0, 120.0, planned=10_000) == 300
    assert steps_within(100, 100, 60.0, 120.0, planned=250) == 250  # epochs allow fewer
    assert steps_within(100, 40, 60.0, 0.0, planned=10_000) == 101  # the budget is spent
    schedule = warmup_cosine(10_000, 0.05)
    schedule.total_steps = 300
    assert schedule(300) == pytest.approx(0.01)  # fully decayed when the budget ends
