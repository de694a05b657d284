"""The training loop shared by every cmx job: AdamW, warmup + cosine decay, clipping,
early stopping, checkpoints, resume, time and step bounds, progress.

What is specific to a job (its batches, its loss, its validation metric) comes in through a
:class:`Task`; the loop knows nothing about labels, masks or variants. Under ``torchrun`` the
loop shares each batch among the processes (:mod:`cmx_cli.training.distributed`).
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from cmx_cli.console import Reporter
from cmx_cli.interrupts import raise_if_interrupted
from cmx_cli.runtime import autocast
from cmx_cli.io.checkpoint import BEST, LAST, Checkpoint, save_checkpoint
from cmx_cli.io.output import write_errors
from cmx_cli.io.run_dir import LOG_NAME
from cmx_cli.settings import TrainingSettings
from cmx_cli.training.distributed import SINGLE, Processes, share_members
from models import set_checkpointing



class LossTerms(NamedTuple):
    """The loss of a batch as a weighted sum: the batch's loss is ``total / weight``.

    Kept apart so that shares of one batch in several processes add up to the loss of the
    whole batch.
    """

    total: torch.Tensor  # () summed (weighted) loss of the members
    weight: torch.Tensor  # () summed weight of the members (e.g. their count)


class Task(Protocol):
    """The job-specific half of training. A batch is a list of members (sequences, variants)."""

    #: Name of the validation score, for people (e.g. "ROC-AUC").
    score_name: str
    #: Whether a larger score is better (ROC-AUC) or worse (bits per base).
    higher_is_better: bool

    def epoch_batches(self, rng: np.random.Generator, processes: int) -> Sequence[list]:
        """The training batches of one epoch, shuffled with ``rng``, each with the token
        budget of ``processes`` processes."""

    def member_tokens(self, member: Any) -> int:
        """Number of tokens of one batch member."""

    def loss(self, model: nn.Module, members: list, device: torch.device) -> LossTerms:
        """Training loss of a batch, or of a share of one."""

    def validate(self, model: nn.Module) -> Optional[dict]:
        """Validation metrics with a ``score`` key, or None without validation data."""


@dataclass
class FitResult:
    """What happened during :func:`fit`."""

    epochs_completed: int
    steps: int
    best_epoch: Optional[int]
    best_score: Optional[float]
    stopped_because: str
    seconds: float
    history: list = field(default_factory=list)


class TrainingInterrupted(Exception):
    """Raised on Ctrl-C after the last completed epoch is safely on disk."""

    def __init__(self, epoch: int, run_dir: Path) -> None:
        if epoch == 0:
            message = "interrupted during the first epoch, before any checkpoint"
        else:
            message = f"interrupted; {run_dir / LAST} holds the end of epoch {epoch}"
        super().__init__(message)
        self.epoch, self.run_dir = epoch, run_dir


class WarmupCosine:
    """Learning-rate factor: linear warmup, then cosine decay to 1% of the peak.

    Attributes:
        total_steps: The steps the run is expected to take. A run with a time budget
            revises it after every epoch (:func:`steps_within`), so that the decay ends
            with the budget rather than with epochs it will never reach.
        warmup_fraction: The share of ``total_steps`` spent warming up.
    """

    def __init__(self, total_steps: int, warmup_fraction: float) -> None:
        self.total_steps, self.warmup_fraction = total_steps, warmup_fraction

    def __call__(self, step: int) -> float:
        warmup = max(1, int(round(self.total_steps * self.warmup_fraction)))
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(total_steps: int, warmup_fraction: float) -> WarmupCosine:
    """The learning-rate factor of a run of ``total_steps`` steps (:class:`WarmupCosine`)."""
    return WarmupCosine(total_steps, warmup_fraction)


def steps_within(step: int, steps_this_session: int, seconds: float, seconds_left: float,
                 planned: int) -> int:
    """The steps a run will have taken when its time budget ends, at the pace it has kept.

    Args:
        step: Steps taken so far.
        steps_this_session: Of those, the ones taken since this process started (a resumed
            run's pace is its own).
        seconds: Seconds this session has trained.
        seconds_left: Seconds left in the budget.
        planned: The steps the epochs or ``--max-steps`` allow: never more than that.
    """
    pace = steps_this_session / max(seconds, 1e-9)
    return max(step + 1, min(planned, step + int(pace * max(seconds_left, 0.0))))


def build_optimizer(model: nn.Module, settings: TrainingSettings,
                    encoder_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norm scales); the
    parameters of ``model.encoder`` at ``encoder_lr_scale`` times the learning rate."""
    groups: dict[tuple[float, float], list] = {}  # (learning rate, weight decay) -> members
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            scale = encoder_lr_scale if name.startswith("encoder.") else 1.0
            decay = settings.weight_decay if parameter.dim() >= 2 else 0.0
            groups.setdefault((settings.learning_rate * scale, decay), []).append(parameter)
    return torch.optim.AdamW(
        [{"params": members, "lr": lr, "weight_decay": decay}
         for (lr, decay), members in groups.items()], lr=settings.learning_rate)


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with write_errors(path), open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row), delimiter="\t", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({key: _format_cell(value) for key, value in row.items()})


def _format_cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _better(score: float, best: float, task: Task) -> bool:
    return score > best if task.higher_is_better else score < best


def _step_loss(model: nn.Module, task: Task, batch: list, device: torch.device, precision: str,
               processes: Processes) -> float:
    """Forward and backward of one batch (this process's share of it); returns the batch loss.

    With several processes, each share's loss is ``total / Σ weight`` (the sum over
    processes); summed over processes, the gradients are those of the whole batch's loss.
    """
    members, scale = batch, 1.0
    if processes.parallel:
        lengths = [task.member_tokens(member) for member in batch]
        share = share_members(lengths, processes.world_size)[processes.rank]
        if not share:
            # Fewer members than processes: compute a member at weight 0, so that this
            # process still joins the gradient exchange.
            share, scale = [0], 0.0
        members = [batch[position] for position in share]
    with autocast(device, precision):
        terms = task.loss(model, members, device)
    total, weight = terms.total.float() * scale, terms.weight.float() * scale
    if not processes.parallel:
        loss = total / weight.clamp_min(1e-8)
        loss.backward()
        return float(loss.detach())
    weights = processes.total(weight.reshape(1)).clamp_min(1e-8)
    (total / weights[0]).backward()
    processes.sum_gradients(model)
    return float(processes.total(total.reshape(1))[0] / weights[0])


def fit(
    model: nn.Module,
    task: Task,
    settings: TrainingSettings,
    run_dir: Path,
    device: torch.device,
    precision: str,
    reporter: Reporter,
    make_checkpoint: Callable[[dict, Optional[dict]], Checkpoint],
    resume_state: Optional[dict] = None,
    processes: Processes = SINGLE,
    encoder_lr_scale: float = 1.0,
) -> FitResult:
    """Train ``model`` on ``task`` and keep its best and last checkpoints in ``run_dir``.

    Args:
        model: The network, already on ``device``.
        task: Batches, loss and validation of the job.
        settings: Optimisation and stopping settings.
        run_dir: Run directory; ``model.pt`` (best), ``last.pt`` and ``log.tsv`` go here.
        device: Where to compute.
        precision: ``fp32`` or ``bf16``.
        reporter: Progress and messages.
        make_checkpoint: Builds a :class:`Checkpoint` from a state dict and a training
            state (None for the best-model file).
        resume_state: The ``training_state`` of a ``last.pt`` to continue from.
        processes: The training processes; with several, each computes its share of every
            batch and only rank 0 validates and writes.
        encoder_lr_scale: The learning rate of ``model.encoder`` as a share of the others'
            (a pretrained encoder trains more gently than a new head).

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingInterrupted: On Ctrl-C, after the last completed epoch is saved.
    """
    set_checkpointing(model, settings.checkpointing)
    optimizer = build_optimizer(model, settings, encoder_lr_scale)
    processes.copy_parameters_from_main(model)
    world = processes.world_size
    first_epoch_batches = task.epoch_batches(np.random.default_rng([settings.seed, 0]), world)
    epochs = settings.epochs if settings.epochs is not None else 10**9
    total_steps = epochs * len(first_epoch_batches)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    schedule = warmup_cosine(total_steps, settings.warmup_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    epoch, step = 0, 0
    best_score: Optional[float] = None
    best_epoch: Optional[int] = None
    stale_epochs = 0
    elapsed_before = 0.0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        epoch, step = resume_state["epoch"], resume_state["step"]
        best_score, best_epoch = resume_state["best_score"], resume_state["best_epoch"]
        stale_epochs = resume_state["stale_epochs"]
        elapsed_before = resume_state["seconds"]
        before = resume_state.get("processes", 1)
        if before != world:
            reporter.warn(
                f"the run was trained by {before} process(es) and resumes with {world}: a step "
                f"now covers {world} × --max-tokens tokens instead of {before} ×, so the rest "
                f"of the run differs from an uninterrupted one")
    started = time.monotonic()
    deadline = None
    if settings.max_time_minutes is not None:
        deadline = started + 60.0 * settings.max_time_minutes
    first_step = step
    history: list[dict] = []
    stopped_because = "epochs"
    log_path = run_dir / LOG_NAME

    while epoch < epochs:
        if settings.max_steps is not None and step >= settings.max_steps:
            stopped_because = "max-steps"
            break
        if deadline is not None and history and processes.any(time.monotonic() > deadline):
            stopped_because = "max-time"  # an epoch ended right at the deadline
            break
        # Seeding per epoch makes a resumed run replay exactly what an uninterrupted one does;
        # each process draws its own dropout. The batches are the same in every process.
        torch.manual_seed(settings.seed * 1_000_003 + epoch + 7_919 * processes.rank)
        rng = np.random.default_rng([settings.seed, epoch])
        batches = first_epoch_batches if epoch == 0 else task.epoch_batches(rng, world)
        model.train()
        epoch_started = time.monotonic()
        loss_sum, loss_batches, tokens_seen = 0.0, 0, 0
        partial = False
        try:
            with reporter.progress(f"epoch {epoch + 1}", len(batches)) as bar:
                for batch in batches:
                    raise_if_interrupted()
                    optimizer.zero_grad(set_to_none=True)
                    batch_loss = _step_loss(model, task, batch, device, precision, processes)
                    if settings.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    loss_sum += batch_loss
                    loss_batches += 1
                    tokens_seen += sum(task.member_tokens(member) for member in batch)
                    rate = tokens_seen / max(1e-9, time.monotonic() - epoch_started)
                    bar.advance(status=f"loss {loss_sum / loss_batches:.4f}  {rate:,.0f} tok/s")
                    if settings.max_steps is not None and step >= settings.max_steps:
                        stopped_because, partial = "max-steps", True
                        break
                    if deadline is not None and processes.any(time.monotonic() > deadline):
                        stopped_because, partial = "max-time", True
                        break
        except KeyboardInterrupt:
            raise TrainingInterrupted(epoch, run_dir) from None
        # The last batch of an epoch also ends it: no partial flag then.
        partial = partial and loss_batches < len(batches)
        epoch += 1
        training_seconds = time.monotonic() - epoch_started
        # Rank 0 validates; every process takes the same decisions from its result.
        validation = processes.from_main(task.validate(model) if processes.is_main else None)
        seconds = time.monotonic() - epoch_started
        row = {
            "epoch": epoch,
            "step": step,
            "complete": not partial,
            # The new parts' rate (a pretrained encoder's may be a share of it).
            "learning_rate": settings.learning_rate * schedule(scheduler.last_epoch),
            "train_loss": loss_sum / max(1, loss_batches),
            "tokens": tokens_seen,
            "tokens_per_second": tokens_seen / max(1e-9, training_seconds),
            "seconds": seconds,
        }
        score = None
        if validation is not None:
            score = validation.get("score")
            row.update({f"val_{key}": value for key, value in validation.items() if key != "score"})
        improved = validation is None or (
            score is not None and (best_score is None or _better(score, best_score, task))
        )
        if improved:
            best_score, best_epoch, stale_epochs = score, epoch, 0
            if processes.is_main:
                save_checkpoint(make_checkpoint(model.state_dict(), None), run_dir / BEST)
        else:
            stale_epochs += 1
        row["best"] = improved
        history.append(row)
        if processes.is_main:
            _append_log(log_path, row)
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "step": step,
            "best_score": best_score,
            "best_epoch": best_epoch,
            "stale_epochs": stale_epochs,
            "seconds": elapsed_before + (time.monotonic() - started),
            "processes": world,
        }
        if processes.is_main:
            save_checkpoint(make_checkpoint(model.state_dict(), training_state), run_dir / LAST)
        # Nobody starts the next epoch (or a resume) before the checkpoints are on disk.
        processes.barrier()
        if deadline is not None:  # every process decays the learning rate alike
            now = time.monotonic()
            schedule.total_steps = processes.from_main(steps_within(
                step, step - first_step, now - started, deadline - now, total_steps))
        summary = f"epoch {epoch}: train loss {row['train_loss']:.4f}"
        if score is not None:
            summary += f", validation {task.score_name} {score:.4f}" + (" (best)" if improved else "")
        reporter.note(summary)
        if partial:
            break
        if settings.patience is not None and validation is not None and stale_epochs >= settings.patience:
            stopped_because = "early-stopping"
            break
    return FitResult(
        epochs_completed=epoch,
        steps=step,
        best_epoch=best_epoch,
        best_score=best_score,
        stopped_because=stopped_because,
        seconds=elapsed_before + (time.monotonic() - started),
        history=history,
    )
