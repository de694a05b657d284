"""Variant classification: the task `cmx finetune` optimises and the scores `cmx predict` writes.

A variant is an :class:`~cmx_cli.variants.windows.AlleleWindow` (its REF and ALT windows and
the allele's span in each), a 0/1 label and a group index. A batch packs its B variants as
2B sequences, the REF windows first, for :class:`models.VariantClassifier`. The score of a
variant is the sigmoid of its group's output: the probability of label 1.

Both strands: the reverse strand of a variant is the reverse complement of both windows,
with the spans mirrored. Training flips a random half of each batch (``flip_strands``);
prediction can average the two strands.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmx_cli.alphabet import reverse_complement
from cmx_cli.data.batching import make_batches, pack
from cmx_cli.errors import CmxError
from cmx_cli.inference import batched_outputs, mean_over_strands
from cmx_cli.io.checkpoint import VARIANT_CLASSIFIER, Checkpoint, build_model
from cmx_cli.metrics.classification import binary_metrics
from cmx_cli.training.loop import LossTerms
from cmx_cli.variants.scoring import TrainingScope
from cmx_cli.variants.windows import AlleleWindow, group_index
from models import VariantClassifier, VariantClassifierConfig

KIND = VARIANT_CLASSIFIER
DESCRIPTION = "cmx variant classifier: probability of label 1"


def pair_length(window: AlleleWindow) -> int:
    """Tokens a variant takes in a batch: its REF and ALT windows."""
    return len(window.ref_tokens) + len(window.alt_tokens)


def _strand(tokens: np.ndarray, span: tuple[int, int], flip: bool):
    if not flip:
        return tokens, span
    return reverse_complement(tokens), (len(tokens) - span[1], len(tokens) - span[0])


def pack_pairs(windows: Sequence[AlleleWindow], flips: Sequence[bool]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack B variants as 2B sequences (REF windows, then ALT windows).

    Args:
        windows: The variants' windows.
        flips: Per variant, whether to read its reverse strand.

    Returns:
        tokens (T,) int64, offsets (2B+1,) int64 and spans (2B, 2) int64, on the CPU.
    """
    ref = [_strand(w.ref_tokens, w.ref_span, flip) for w, flip in zip(windows, flips)]
    alt = [_strand(w.alt_tokens, w.alt_span, flip) for w, flip in zip(windows, flips)]
    tokens, offsets = pack([sequence for sequence, _ in ref + alt])  # (T,), (2B+1,)
    spans = torch.tensor([span for _, span in ref + alt], dtype=torch.int64)  # (2B, 2)
    return tokens, offsets, spans


def probability(logits: torch.Tensor) -> np.ndarray:
    """The sigmoid of logits, in float64, each value computed alike whatever its neighbours
    (``torch.sigmoid`` takes a vectorised path for most elements and a scalar one for the
    rest, which round differently, so a variant's score would depend on its batch)."""
    return 1.0 / (1.0 + np.exp(-logits.double().numpy()))


def group_logits(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each variant's logit from its group's output: (B, G), (B,) -> (B,)."""
    return logits.gather(1, groups.to(logits.device)[:, None]).squeeze(1)


class VariantTask:
    """Binary cross-entropy on labelled variants; validation by ROC-AUC.

    Args:
        train_windows, train_labels, train_groups: The training variants, their 0/1 labels
            and group indices.
        val_windows, val_labels, val_groups: The validation variants (may be empty).
        max_tokens: Token budget per batch (both windows of a variant count).
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        flip_strands: Read a random half of each training batch on the reverse strand.
    """

    score_name = "ROC-AUC"
    higher_is_better = True

    def __init__(
        self, train_windows: Sequence[AlleleWindow], train_labels: np.ndarray,
        train_groups: np.ndarray, val_windows: Sequence[AlleleWindow], val_labels: np.ndarray,
        val_groups: np.ndarray, max_tokens: int, device: torch.device, precision: str,
        flip_strands: bool = True,
    ) -> None:
        self.train_windows = train_windows
        self.train_labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.float32)
        self.train_groups = torch.as_tensor(np.asarray(train_groups), dtype=torch.int64)
        self.train_lengths = [pair_length(window) for window in train_windows]
        self.val_windows, self.val_labels = val_windows, np.asarray(val_labels)
        self.val_groups = np.asarray(val_groups)
        self.max_tokens, self.device, self.precision = max_tokens, device, precision
        self.flip_strands = flip_strands

    def epoch_batches(self, rng: np.random.Generator, processes: int = 1) -> list[list[int]]:
        """Shuffled batches of training indices, ``processes`` token budgets each."""
        return make_batches(self.train_lengths, self.max_tokens * processes, shuffle=True, rng=rng)

    def member_tokens(self, member: int) -> int:
        """Tokens of a training variant (both windows)."""
        return self.train_lengths[member]

    def loss(self, model: nn.Module, batch: list[int], device: torch.device) -> LossTerms:
        """Binary cross-entropy summed over the batch's variants."""
        # The loop seeds torch per step, so the strand draws replay exactly on --resume.
        flips = ((torch.rand(len(batch)) < 0.5).tolist() if self.flip_strands
                 else [False] * len(batch))
        tokens, offsets, spans = pack_pairs([self.train_windows[i] for i in batch], flips)
        logits = model(tokens.to(device, non_blocking=True),
                       offsets.to(device, non_blocking=True), spans.to(device))
        chosen = group_logits(logits, self.train_groups[batch])
        total = F.binary_cross_entropy_with_logits(
            chosen.float(), self.train_labels[batch].to(device), reduction="sum")
        return LossTerms(total, torch.tensor(float(len(batch)), device=device))

    def validate(self, model: nn.Module) -> Optional[dict]:
        """Validation loss, ROC-AUC and PR-AUC; the score is ROC-AUC (minus loss if undefined)."""
        if len(self.val_windows) == 0:
            return None
        probabilities = predict_variant_probabilities(
            model, self.val_windows, self.val_groups, self.max_tokens, self.device, self.precision)
        metrics = binary_metrics(self.val_labels, probabilities)
        clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
        loss = float(-np.mean(self.val_labels * np.log(clipped)
                              + (1 - self.val_labels) * np.log(1 - clipped)))
        score = metrics["roc_auc"] if metrics["roc_auc"] is not None else -loss
        return {"score": score, "loss": loss, "roc_auc": metrics["roc_auc"],
                "pr_auc": metrics["pr_auc"]}


def predict_variant_probabilities(
    model: nn.Module, windows: Sequence[AlleleWindow], groups: Sequence[int], max_tokens: int,
    device: torch.device, precision: str, average_strands: bool = False,
) -> np.ndarray:
    """P(label 1) of each variant, in input order.

    Args:
        model: A :class:`models.VariantClassifier` on ``device``.
        windows: The variants.
        groups: The group index of each.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        average_strands: Average the probabilities of both strands.

    Returns:
        (N,) float64 probabilities.
    """
    groups = np.asarray(groups, dtype=np.int64)

    def score(members: Sequence[tuple[int, bool]]) -> np.ndarray:
        lengths = [pair_length(windows[index]) for index, _ in members]
        member_groups = torch.as_tensor(groups[[index for index, _ in members]])

        def pack_batch(batch: list[int]) -> tuple[torch.Tensor, ...]:
            return pack_pairs([windows[members[i][0]] for i in batch],
                              [members[i][1] for i in batch])

        output = np.zeros(len(members), dtype=np.float64)
        for batch, _, logits in batched_outputs(model, lengths, pack_batch, max_tokens, device,
                                                precision):
            output[batch] = probability(group_logits(logits, member_groups[batch]))
        return output

    return mean_over_strands(score, len(windows), average_strands)


def label_meaning(extra: dict) -> str:
    """What label 1 meant in training, from a checkpoint's ``extra``, for people."""
    if extra.get("label_field"):
        return f"INFO/{extra['label_field']} = 1, true, yes or set, in the training VCF"
    if extra.get("labels_table"):
        return f"label 1 in the training table {extra['labels_table']}"
    return "label 1 in training"


class VariantScorer:
    """Scores VCF alleles with a variant classifier: P(label 1) per allele
    (:class:`~cmx_cli.variants.scoring.AlleleScorer`).

    Args:
        checkpoint: The model's checkpoint (what label 1 meant, what it was trained on).
        model: Its :class:`models.VariantClassifier`, on ``device``.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        average_strands: Average the probabilities of both strands.
        group_of: ``record -> (group index, None)``, or ``(None, reason)`` for a record
            without a known group; None for a model without groups (every record group 0).
    """

    def __init__(self, checkpoint: Checkpoint, model: nn.Module, max_tokens: int,
                 device: torch.device, precision: str, average_strands: bool = False,
                 group_of: Optional[Callable[[Any], tuple[Any, Optional[str]]]] = None) -> None:
        self.model, self.max_tokens, self.device = model, max_tokens, device
        self.precision, self.average_strands = precision, average_strands
        self.group_of = group_of
        self.description = (f"{DESCRIPTION} ({label_meaning(checkpoint.extra)})"
                            + (", averaged over both strands" if average_strands else ""))
        trained_on = checkpoint.extra.get("trained_on", {})
        encoder = model.config.encoder
        self.scope = TrainingScope(encoder.max_len, encoder.reach, trained_on.get("alleles"))

    def veto(self, window: AlleleWindow, ref: str, alt: str) -> Optional[str]:
        """A classifier scores every allele that passed the checks."""
        return None

    def record_context(self, record: Any) -> tuple[Any, Optional[str]]:
        """The record's group index (stored in its windows' ``context``), or a reason."""
        return (None, None) if self.group_of is None else self.group_of(record)

    def __call__(self, windows: Sequence[AlleleWindow]) -> np.ndarray:
        """Scores of a chunk of windows."""
        groups = [group_index(window) for window in windows]
        return predict_variant_probabilities(self.model, windows, groups, self.max_tokens,
                                             self.device, self.precision, self.average_strands)


def build_variant_classifier(checkpoint: Checkpoint) -> VariantClassifier:
    """Rebuild a variant classifier from its checkpoint and check its group names.

    Raises:
        CmxError: When the config or weights do not fit, or the groups do not match the outputs.
    """
    model = build_model(checkpoint, VariantClassifierConfig, VariantClassifier)
    groups = checkpoint.extra.get("groups", [])
    if len(groups) != model.config.n_groups:
        raise CmxError(
            f"{checkpoint.path}: {len(groups)} group names for {model.config.n_groups} outputs",
            "the checkpoint is damaged; retrain or use another run.")
    return model
