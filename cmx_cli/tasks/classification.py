"""Sequence classification: the task `cmx train` optimises and the inference `cmx predict` runs."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmx_cli.alphabet import reverse_complement
from cmx_cli.data.batching import make_batches, pack
from cmx_cli.errors import CmxError
from cmx_cli.inference import batched_outputs, mean_over_strands
from cmx_cli.io.checkpoint import CLASSIFIER, Checkpoint, build_model
from cmx_cli.metrics.classification import classification_metrics
from cmx_cli.training.loop import LossTerms
from models import ClassifierConfig, SequenceClassifier

KIND = CLASSIFIER


class ClassificationTask:
    """Cross-entropy on labelled sequences; validation by ROC-AUC from probabilities.

    Args:
        train_sequences: Token arrays of the training set.
        train_labels: Class index of each.
        val_sequences: Token arrays of the validation set (may be empty).
        val_labels: Class index of each.
        n_classes: Number of classes.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        class_weights: (C,) loss weight per class, or None.
    """

    score_name = "ROC-AUC"
    higher_is_better = True

    def __init__(
        self,
        train_sequences: Sequence[np.ndarray],
        train_labels: np.ndarray,
        val_sequences: Sequence[np.ndarray],
        val_labels: np.ndarray,
        n_classes: int,
        max_tokens: int,
        device: torch.device,
        precision: str,
        class_weights: Optional[torch.Tensor] = None,
    ) -> None:
        self.train_sequences = train_sequences
        self.train_labels = torch.as_tensor(train_labels, dtype=torch.int64)
        self.train_lengths = [len(sequence) for sequence in train_sequences]
        self.val_sequences = val_sequences
        self.val_labels = np.asarray(val_labels)
        self.n_classes = n_classes
        self.max_tokens = max_tokens
        self.device = device
        self.precision = precision
        self.class_weights = None if class_weights is None else class_weights.to(device)

    def epoch_batches(self, rng: np.random.Generator, processes: int = 1) -> list[list[int]]:
        """Shuffled batches of training indices, ``processes`` token budgets each."""
        return make_batches(self.train_lengths, self.max_tokens * processes, shuffle=True, rng=rng)

    def member_tokens(self, member: int) -> int:
        """Tokens of a training sequence."""
        return self.train_lengths[member]

    def loss(self, model: nn.Module, batch: list[int], device: torch.device) -> LossTerms:
        """Cross-entropy summed over the batch's sequences, weighted by class when asked."""
        tokens, offsets = pack([self.train_sequences[index] for index in batch])
        logits = model(tokens.to(device, non_blocking=True), offsets.to(device, non_blocking=True))
        targets = self.train_labels[batch].to(device)
        total = F.cross_entropy(logits.float(), targets, weight=self.class_weights, reduction="sum")
        if self.class_weights is None:
            return LossTerms(total, torch.tensor(float(len(batch)), device=device))
        return LossTerms(total, self.class_weights[targets].sum())

    def validate(self, model: nn.Module) -> Optional[dict]:
        """Validation loss and metrics; the score is ROC-AUC (minus loss when undefined)."""
        if len(self.val_sequences) == 0:
            return None
        probabilities = predict_probabilities(
            model, self.val_sequences, self.max_tokens, self.device, self.precision
        )
        targets = torch.as_tensor(self.val_labels, dtype=torch.int64)
        loss = F.nll_loss(torch.log(torch.as_tensor(probabilities).clamp_min(1e-12)), targets)
        metrics = classification_metrics(self.val_labels, probabilities, self.n_classes)
        # Without two classes in validation ROC-AUC is undefined; fall back to the loss.
        score = metrics["roc_auc"] if metrics["roc_auc"] is not None else -float(loss)
        return {"score": score, "loss": float(loss), "roc_auc": metrics["roc_auc"],
                "accuracy": metrics["accuracy"]}


def predict_probabilities(
    model: nn.Module,
    sequences: Sequence[np.ndarray],
    max_tokens: int,
    device: torch.device,
    precision: str,
    average_strands: bool = False,
) -> np.ndarray:
    """Class probabilities for each sequence, in input order.

    Args:
        model: A sequence classifier.
        sequences: Token arrays.
        max_tokens: Token budget per batch.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        average_strands: Average the forward and reverse-complement probabilities.

    Returns:
        (N, C) float64 probabilities.
    """
    def score(members: Sequence[tuple[int, bool]]) -> np.ndarray:
        inputs = [reverse_complement(sequences[index]) if reverse else sequences[index]
                  for index, reverse in members]
        output = np.zeros((len(inputs), model.config.n_classes), dtype=np.float64)
        for batch, _, logits in batched_outputs(
                model, [len(tokens) for tokens in inputs],
                lambda batch: pack([inputs[i] for i in batch]), max_tokens, device, precision):
            output[batch] = torch.softmax(logits, dim=1).numpy()
        return output

    return mean_over_strands(score, len(sequences), average_strands)


def build_classifier(checkpoint: Checkpoint) -> SequenceClassifier:
    """Rebuild a classifier from its checkpoint's config and load its weights.

    Raises:
        CmxError: When the config or weights do not fit, or the labels do not match the outputs.
    """
    model = build_model(checkpoint, ClassifierConfig, SequenceClassifier)
    if len(checkpoint.labels) != model.config.n_classes:
        raise CmxError(
            f"{checkpoint.path}: {len(checkpoint.labels)} labels for {model.config.n_classes} outputs",
            "the checkpoint is damaged; retrain or use another run.",
        )
    return model
