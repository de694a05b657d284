"""Masked-base modelling: the task `cmx pretrain` optimises, the scoring `cmx evaluate` runs,
and the zero-shot variant scores `cmx predict` writes with a pretrained model (paper
Appendix J).

The loss covers only the selected positions; N is never a target. Soft-masked (lowercase)
bases can carry a lower weight. Validation masks a fixed set of sequences with a fixed seed,
so every epoch is scored on the same positions.

Zero-shot: for an SNV the score is the log-likelihood ratio log P(alt) - log P(ref) at the
variant position, with that position masked in its reference window, averaged over both
strands. The reverse strand reads the reverse-complemented window, with the mirrored
position masked and the complemented alleles. Indels have no single masked position to
read: they get no zero-shot score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmx_cli.alphabet import COMPLEMENT, MASK, N, reverse_complement
from cmx_cli.data.batching import make_batches, pack
from cmx_cli.data.masking import IGNORE_INDEX, MaskedSequence, mask_tokens, weights
from cmx_cli.data.pretrain_sources import PretrainSequence
from cmx_cli.errors import CmxError
from cmx_cli.inference import batched_outputs, mean_over_strands
from cmx_cli.io.checkpoint import MASKED_BASES, Checkpoint, build_model, load_checkpoint
from cmx_cli.metrics.masked_bases import MlmMetrics
from cmx_cli.training.loop import LossTerms
from cmx_cli.variants.alleles import is_snv
from cmx_cli.variants.scoring import TrainingScope
from cmx_cli.variants.windows import AlleleWindow
from models import ChordMixerConfig, MaskedAutoencoder, MaskedAutoencoderConfig

KIND = MASKED_BASES
ZERO_SHOT_DESCRIPTION = (
    "cmx zero-shot score: log P(alt) - log P(ref) in nats at the masked variant position, "
    "averaged over both strands; SNVs only")
ENCODER_PREFIX = "encoder."


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
        selected = targets != IGNORE_INDEX
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
    lengths = [len(tokens) for tokens in inputs]
    for batch, (_, offsets), logits in batched_outputs(
            model, lengths, lambda batch: pack([inputs[i] for i in batch]), max_tokens, device,
            precision):
        log_probabilities = torch.log_softmax(logits, dim=1).numpy()
        bounds = offsets.tolist()
        for member, start, end in zip(batch, bounds[:-1], bounds[1:]):
            output[member] = log_probabilities[start:end]
    return output  # type: ignore[return-value]


def build_autoencoder(checkpoint: Checkpoint) -> MaskedAutoencoder:
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


def load_encoder(path) -> tuple[ChordMixerConfig, dict]:
    """Read the encoder of a `cmx pretrain` run (``--init``).

    Args:
        path: The pretraining run directory or its model.pt.

    Returns:
        The encoder's config and its state dict (keys without the ``encoder.`` prefix).

    Raises:
        CmxError: When the checkpoint is not a pretrained model.
    """
    checkpoint = load_checkpoint(path, KIND)
    config = MaskedAutoencoderConfig.from_dict(checkpoint.model_config).encoder
    state = {key[len(ENCODER_PREFIX):]: value for key, value in checkpoint.state_dict.items()
             if key.startswith(ENCODER_PREFIX)}
    if not state:
        raise CmxError(f"{checkpoint.path}: holds no encoder weights",
                       "pass the run directory of `cmx pretrain`.")
    return config, state


class ZeroShotScorer:
    """Scores SNVs with a pretrained masked-base model, without labels
    (:class:`~cmx_cli.variants.scoring.AlleleScorer`; module docstring).

    Args:
        model: A :class:`models.MaskedAutoencoder`, on ``device``.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
    """

    description = ZERO_SHOT_DESCRIPTION

    def __init__(self, model: nn.Module, max_tokens: int, device: torch.device, precision: str):
        self.model, self.max_tokens = model, max_tokens
        self.device, self.precision = device, precision
        encoder = model.config.encoder
        self.scope = TrainingScope(encoder.max_len, encoder.reach)

    @staticmethod
    def veto(window: AlleleWindow, ref: str, alt: str) -> Optional[str]:
        """Zero-shot scores exist for SNVs on a known reference base only."""
        if not is_snv(ref, alt):
            return "indel"
        if window.ref_tokens[window.ref_span[0]] == N or alt.upper() == "N":
            return "n_base"  # P(N) is not modelled: there is no ratio to take
        return None

    @staticmethod
    def record_context(record) -> tuple[None, None]:
        """Every record is scored the same way."""
        return None, None

    def __call__(self, windows: Sequence[AlleleWindow]) -> np.ndarray:
        """Score SNV windows.

        One masked pass per strand and site gives log P of all four bases there, so the ALT
        alleles of one site (a multi-allelic record, or records at one position) share it.

        Returns:
            (len(windows),) float64 log-likelihood ratios in nats, averaged over both
            strands; NaN where the reference base is N (no reference base to compare with).
        """
        sites: dict[tuple, int] = {}  # (centre, REF window) -> site number
        site_of = [sites.setdefault((window.ref_span[0], window.ref_tokens.tobytes()), len(sites))
                   for window in windows]
        first = {site: index for index, site in reversed(list(enumerate(site_of)))}
        site_windows = [windows[first[site]] for site in range(len(sites))]

        def log_probabilities(members: Sequence[tuple[int, bool]]) -> np.ndarray:
            """(members, 4) log P of A C G T at each site's masked position, the reverse
            strand's columns complemented back to the forward strand's bases."""
            inputs, positions = [], []
            for site, reverse in members:
                tokens = site_windows[site].ref_tokens.copy()
                centre = site_windows[site].ref_span[0]
                if reverse:
                    tokens, centre = reverse_complement(tokens), len(tokens) - 1 - centre
                tokens[centre] = MASK
                inputs.append(tokens)
                positions.append(centre)
            predicted = predict_log_probabilities(self.model, inputs, self.max_tokens,
                                                  self.device, self.precision)
            rows = np.stack([values[position] for values, position in zip(predicted, positions)])
            reverse = np.array([flipped for _, flipped in members])
            rows[reverse] = rows[reverse][:, COMPLEMENT[:N]]  # column b: log P(b) forward
            return rows.astype(np.float64)

        averaged = mean_over_strands(log_probabilities, len(site_windows), both_strands=True)
        ratios = np.full(len(windows), np.nan)
        for index, (window, site) in enumerate(zip(windows, site_of)):
            ref_base = int(window.ref_tokens[window.ref_span[0]])
            alt_base = int(window.alt_tokens[window.alt_span[0]])
            if ref_base < N and alt_base < N:
                ratios[index] = averaged[site, alt_base] - averaged[site, ref_base]
        return ratios
