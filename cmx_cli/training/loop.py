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

from cmx_cli import interrupts
from cmx_cli.console import Reporter
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
    """Raised on Ctrl-C or SIGTERM once the run's state is safely on disk.

    Attributes:
        epoch: The epochs completed in ``last.pt`` (0: none).
        run_dir: The run directory.
        step: The optimizer steps in ``last.pt`` (0: nothing was saved).
        resumable: Whether ``last.pt`` holds something to continue from.
        command: The training command that was stopped, for the resume hint (set by
            :func:`~cmx_cli.training.job.run_job`).
    """

    command = "cmx train"

    def __init__(self, epoch: int, run_dir: Path, step: Optional[int] = None,
                 batches_done: int = 0, batches: int = 0,
                 signal_name: Optional[str] = None) -> None:
        step = epoch if step is None else step  # (epoch, run_dir): an epoch end, as before
        signal_name = signal_name or interrupts.signal_name()
        stopped = "interrupted" if signal_name == "SIGINT" else f"stopped by {signal_name}"
        if step == 0:
            message = f"{stopped} during the first epoch, before any checkpoint"
        elif batches_done:
            of = f" of {batches}" if batches else ""
            message = (f"{stopped} at step {step} (batch {batches_done}{of} of epoch "
                       f"{epoch + 1}); {run_dir / LAST} holds the run up to that step")
        else:
            message = f"{stopped}; {run_dir / LAST} holds the end of epoch {epoch}"
        super().__init__(message)
        self.epoch, self.run_dir, self.step = epoch, run_dir, step
        self.resumable = step > 0


@dataclass(frozen=True)
class _EpochSoFar:
    """The part of an epoch already trained: its batches, their summed loss and tokens.

    ``last.pt`` keeps it when a signal stops the run mid-epoch, so that the resumed epoch
    goes on at the next batch and logs the loss of the whole epoch.
    """

    batches: int = 0
    loss_sum: float = 0.0
    tokens: int = 0

    @property
    def mean_loss(self) -> float:
        """The mean training loss of the batches so far."""
        return self.loss_sum / max(1, self.batches)

    def plus(self, loss: float, tokens: int) -> "_EpochSoFar":
        """This with one more batch."""
        return _EpochSoFar(self.batches + 1, self.loss_sum + loss, self.tokens + tokens)

    def to_state(self) -> dict:
        """The entries of a mid-epoch training state."""
        return {"epoch_batches_done": self.batches, "epoch_loss_sum": self.loss_sum,
                "epoch_tokens": self.tokens}

    @classmethod
    def of(cls, state: dict) -> "_EpochSoFar":
        """What a training state says of its unfinished epoch (nothing at an epoch's end)."""
        return cls(int(state.get("epoch_batches_done", 0)),
                   float(state.get("epoch_loss_sum", 0.0)), int(state.get("epoch_tokens", 0)))


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


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of optimizer step ``step`` in process ``rank`` (dropout, strand flips).

    Seeding every step, rather than every epoch, lets a run stopped at any step continue
    with the very random numbers an uninterrupted run draws, in every process and on every
    device, without saving generator states (issue 23, case 9).
    """
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0])


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
        TrainingInterrupted: On Ctrl-C or SIGTERM, at the next step boundary, after the run
            up to that step is saved in ``last.pt``.
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
    # A run stopped by a signal mid-epoch continues that epoch at the batch where it stopped.
    resumed = _EpochSoFar()
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        epoch, step = resume_state["epoch"], resume_state["step"]
        best_score, best_epoch = resume_state["best_score"], resume_state["best_epoch"]
        stale_epochs = resume_state["stale_epochs"]
        elapsed_before = resume_state["seconds"]
        resumed = _EpochSoFar.of(resume_state)
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

    def training_state(so_far: Optional[_EpochSoFar] = None) -> dict:
        """What ``last.pt`` keeps to continue the run: at an epoch's end, or mid-epoch."""
        state = {
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
        if so_far is not None and so_far.batches:
            state.update(so_far.to_state())
        return state

    # What last.pt holds: (epochs, steps, batches of the next epoch, that epoch's batches).
    saved = (epoch, step, resumed.batches, 0)

    def stop(so_far: Optional[_EpochSoFar] = None, batches: int = 0) -> None:
        """Save the run at this step boundary when last.pt does not hold it yet, and stop."""
        nonlocal saved
        if so_far is not None and so_far.batches and step != saved[1]:
            if processes.is_main:
                save_checkpoint(make_checkpoint(model.state_dict(), training_state(so_far)),
                                run_dir / LAST)
            processes.barrier()
            saved = (epoch, step, so_far.batches, batches)
        raise TrainingInterrupted(saved[0], run_dir, saved[1], saved[2], saved[3],
                                  interrupts.signal_name())

    # From here on, Ctrl-C and SIGTERM stop the run at a step boundary, after saving it; a
    # second one stops at once, with last.pt as it was (issue 23, case 9).
    with interrupts.deferred():
        while epoch < epochs:
            if settings.max_steps is not None and step >= settings.max_steps:
                stopped_because = "max-steps"
                break
            if deadline is not None and history and processes.any(time.monotonic() > deadline):
                stopped_because = "max-time"  # an epoch ended right at the deadline
                break
            if processes.any(interrupts.requested()):
                stop()  # between epochs: last.pt holds the end of the last one
            rng = np.random.default_rng([settings.seed, epoch])
            batches = first_epoch_batches if epoch == 0 else task.epoch_batches(rng, world)
            model.train()
            epoch_started = time.monotonic()
            so_far, resumed = resumed, _EpochSoFar()
            tokens_now = 0  # tokens of this epoch taken by this process (for the rate)
            partial = False
            try:
                with reporter.progress(f"epoch {epoch + 1}", len(batches) - so_far.batches) as bar:
                    for batch in batches[so_far.batches:]:
                        if processes.any(interrupts.requested()):
                            stop(so_far, len(batches))
                        # Seeded per step, so that a run continued from any step replays
                        # exactly what an uninterrupted one does; each process draws its own
                        # dropout. The batches are the same in every process.
                        torch.manual_seed(step_seed(settings.seed, step, processes.rank))
                        optimizer.zero_grad(set_to_none=True)
                        batch_loss = _step_loss(model, task, batch, device, precision, processes)
                        if settings.grad_clip > 0:
                            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                        optimizer.step()
                        scheduler.step()
                        step += 1
                        batch_tokens = sum(task.member_tokens(member) for member in batch)
                        so_far = so_far.plus(batch_loss, batch_tokens)
                        tokens_now += batch_tokens
                        rate = tokens_now / max(1e-9, time.monotonic() - epoch_started)
                        bar.advance(status=f"loss {so_far.mean_loss:.4f}  {rate:,.0f} tok/s")
                        if settings.max_steps is not None and step >= settings.max_steps:
                            stopped_because, partial = "max-steps", True
                            break
                        if deadline is not None and processes.any(time.monotonic() > deadline):
                            stopped_because, partial = "max-time", True
                            break
            except KeyboardInterrupt:  # a second signal, or one raised outside the handler
                raise TrainingInterrupted(saved[0], run_dir, saved[1], saved[2], saved[3],
                                          interrupts.signal_name()) from None
            # The last batch of an epoch also ends it: no partial flag then.
            partial = partial and so_far.batches < len(batches)
            training_seconds = time.monotonic() - epoch_started
            # Rank 0 validates; every process takes the same decisions from its result.
            try:
                validation = processes.from_main(
                    task.validate(model) if processes.is_main else None)
            except KeyboardInterrupt:  # validation stops at its next batch: keep the steps
                # (a resume validates the epoch again); with several processes only rank 0
                # validates, and the others wait for it, not for a checkpoint.
                stop(None if processes.parallel else so_far, len(batches))
            epoch += 1
            seconds = time.monotonic() - epoch_started
            row = {
                "epoch": epoch,
                "step": step,
                "complete": not partial,
                # The new parts' rate (a pretrained encoder's may be a share of it).
                "learning_rate": settings.learning_rate * schedule(scheduler.last_epoch),
                "train_loss": so_far.mean_loss,
                "tokens": so_far.tokens,
                "tokens_per_second": tokens_now / max(1e-9, training_seconds),
                "seconds": seconds,
            }
            score = None
            if validation is not None:
                score = validation.get("score")
                row.update({f"val_{key}": value for key, value in validation.items()
                            if key != "score"})
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
                save_checkpoint(make_checkpoint(model.state_dict(), training_state()),
                                run_dir / LAST)
            saved = (epoch, step, 0, 0)
            # Nobody starts the next epoch (or a resume) before the checkpoints are on disk.
            processes.barrier()
            if deadline is not None:  # every process decays the learning rate alike
                now = time.monotonic()
                schedule.total_steps = processes.from_main(steps_within(
                    step, step - first_step, now - started, deadline - now, total_steps))
            summary = f"epoch {epoch}: train loss {row['train_loss']:.4f}"
            if score is not None:
                summary += (f", validation {task.score_name} {score:.4f}"
                            + (" (best)" if improved else ""))
            reporter.note(summary)
            if partial:
                break
            if (settings.patience is not None and validation is not None
                    and stale_epochs >= settings.patience):
                stopped_because = "early-stopping"
                break
        if processes.any(interrupts.requested()):
            stop()  # during the last epoch's end: the run is saved, not yet evaluated
    return FitResult(
        epochs_completed=epoch,
        steps=step,
        best_epoch=best_epoch,
        best_score=best_score,
        stopped_because=stopped_because,
        seconds=elapsed_before + (time.monotonic() - started),
        history=history,
    )
