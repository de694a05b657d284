"""Masked-base modelling: the task `cmx pretrain` optimises and the scoring `cmx evaluate`
runs (paper Appendix J).

The loss covers only the selected positions; N is never a target. Soft-masked (lowercase)
bases can carry a lower weight. Validation masks a fixed set of sequences with a fixed seed,
so every epoch is scored on the same positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmx_cli.data.batching import make_batches, pack
from cmx_cli.data.masking import MaskedSequence, mask_tokens, weights
from cmx_cli.data.segments import PretrainSequence
from cmx_cli.mlm_metrics import MlmMetrics
from cmx_cli.training.checkpoint import build_model
from cmx_cli.training.inference import batched_outputs
from cmx_cli.training.loop import LossTerms
from models import MaskedAutoencoder, MaskedAutoencoderConfig

KIND = "mlm"
IGNORE = -100


@dataclass(frozen=True)
class MaskingSettings:
    """How bases are hidden (saved in the checkpoint)."""

    rate: float = 0.3
    scheme: str = "80-10-10"
    lowercase_weight: float = 1.0


@dataclass
class MaskedBatch:
    """One packed batch of corrupted sequences with their targets."""

    inputs: torch.Tensor  # (T,) int64 corrupted tokens
    offsets: torch.Tensor  # (B+1,) int64
    targets: torch.Tensor  # (T,) int64 base 0-3 at selected positions, IGNORE elsewhere
    weights: torch.Tensor  # (T,) float32 loss weight (lowercase weighting)


def mask_all(
    sequences: Sequence[PretrainSequence], settings: MaskingSettings, rng: np.random.Generator
) -> list[MaskedSequence]:
    """Mask every sequence independently."""
    return [mask_tokens(s.tokens, settings.rate, settings.scheme, rng) for s in sequences]


def pack_masked(
    sequences: Sequence[PretrainSequence], masked: Sequence[MaskedSequence],
    settings: MaskingSettings, batch: Sequence[int],
) -> MaskedBatch:
    """Pack the members ``batch`` of a masked set into one batch."""
    inputs, offsets = pack([masked[i].inputs for i in batch])
    targets = torch.from_numpy(np.concatenate([masked[i].targets for i in batch]))
    loss_weights = torch.from_numpy(np.concatenate(
        [weights(sequences[i].lowercase, settings.lowercase_weight) for i in batch]))
    return MaskedBatch(inputs, offsets, targets.to(torch.int64), loss_weights.to(torch.float32))


class MaskedBaseTask:
    """Cross-entropy on the selected positions of freshly masked sequences each epoch.

    Args:
        draw_training: Returns the training sequences of one epoch, given its generator.
        validation: The fixed validation sequences.
        settings: Masking settings.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        seed: Seed of the fixed validation masks.
    """

    score_name = "bits/base"
    higher_is_better = False

    def __init__(
        self,
        draw_training: Callable[[np.random.Generator], list[PretrainSequence]],
        validation: Sequence[PretrainSequence],
        settings: MaskingSettings,
        max_tokens: int,
        device: torch.device,
        precision: str,
        seed: int,
    ) -> None:
        self.draw_training = draw_training
        self.validation = list(validation)
        self.validation_masks = mask_all(self.validation, settings, np.random.default_rng([seed, 7]))
        self.settings = settings
        self.max_tokens = max_tokens
        self.device = device
        self.precision = precision

    def epoch_batches(self, rng: np.random.Generator, processes: int = 1
                      ) -> list[list[tuple[PretrainSequence, MaskedSequence]]]:
        """Draw and mask one epoch of training sequences, in batches of ``processes`` token
        budgets; a member is a sequence and its masking."""
        sequences = self.draw_training(rng)
        masked = mask_all(sequences, self.settings, rng)
        batches = make_batches([len(s.tokens) for s in sequences], self.max_tokens * processes,
                               True, rng)
        return [[(sequences[i], masked[i]) for i in batch] for batch in batches]

    def member_tokens(self, member: tuple[PretrainSequence, MaskedSequence]) -> int:
        """Tokens of a training sequence."""
        return len(member[0].tokens)

    def loss(self, model: nn.Module, batch: list[tuple[PretrainSequence, MaskedSequence]],
             device: torch.device) -> LossTerms:
        """Cross-entropy over the selected positions (nats), summed with their weights."""
        sequences, masked = zip(*batch)
        packed = pack_masked(sequences, masked, self.settings, range(len(batch)))
        logits = model(packed.inputs.to(device), packed.offsets.to(device))  # (T, 4)
        targets = packed.targets.to(device)
        selected = targets != IGNORE
        losses = F.cross_entropy(logits[selected].float(), targets[selected], reduction="none")
        weight = packed.weights.to(device)[selected]
        return LossTerms((losses * weight).sum(), weight.sum())

    def validate(self, model: nn.Module) -> Optional[dict]:
        """Bits per base, perplexity and accuracy on the MASK-token positions."""
        if not self.validation:
            return None
        result = evaluate_masked(model, self.validation, self.validation_masks, self.max_tokens,
                                 self.device, self.precision)
        return {"score": result["bits_per_base"], "bits_per_base": result["bits_per_base"],
                "accuracy": result["accuracy"]}


def predict_log_probabilities(
    model: nn.Module, inputs: Sequence[np.ndarray], max_tokens: int, device: torch.device,
    precision: str,
) -> list[np.ndarray]:
    """Natural-log base probabilities (L, 4) for each corrupted input, in input order."""
    output: list[Optional[np.ndarray]] = [None] * len(inputs)
    for batch, bounds, logits in batched_outputs(model, inputs, max_tokens, device, precision):
        log_probabilities = torch.log_softmax(logits, dim=1).numpy()
        for member, start, end in zip(batch, bounds[:-1], bounds[1:]):
            output[member] = log_probabilities[start:end]
    return output  # type: ignore[return-value]


def build_autoencoder(checkpoint) -> MaskedAutoencoder:
    """Rebuild a pretrained encoder-decoder from its checkpoint (CmxError if it does not fit)."""
    return build_model(checkpoint, MaskedAutoencoderConfig, MaskedAutoencoder)


def evaluate_masked(
    model: nn.Module, sequences: Sequence[PretrainSequence], masked: Sequence[MaskedSequence],
    max_tokens: int, device: torch.device, precision: str,
) -> dict:
    """MLM metrics of ``model`` on already-masked sequences."""
    metrics = MlmMetrics()
    log_probabilities = predict_log_probabilities(
        model, [m.inputs for m in masked], max_tokens, device, precision)
    for sequence, mask, predicted in zip(sequences, masked, log_probabilities):
        metrics.update(predicted, mask, sequence.lowercase)
    return metrics.result()
