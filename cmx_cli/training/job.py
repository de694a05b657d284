"""The run skeleton of every training command (`cmx train`, `pretrain`, `finetune`).

:func:`run_job` does what the three share, in this order: check the run directory, pick the
device and precision, let the job read its data, write the run's config, split and input
digests (or check them on ``--resume``), build the seeded model (from a pretrained encoder when
asked; on ``--resume`` from the config stored in ``last.pt``), fit it with
:func:`~cmx_cli.training.loop.fit`, reload the best checkpoint, let the job evaluate it beside
its baseline, and write metrics.json. A job (:class:`TrainingJob`) supplies only its data, its
model, its task, its evaluation and its summary line.

A run is finished when early stopping ended it or all its epochs (or ``--max-steps``) ran; a
``--max-time`` stop stays resumable. Resuming a finished run says so and changes no file
(issue 23); one whose evaluation was cut short (killed after its last epoch) is evaluated.

Under ``torchrun`` every process runs the skeleton; only rank 0 writes and evaluates.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch
from torch import nn

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.data.split import SplitTable
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import (
    CLASSIFIER, LAST, MADE_BY, MASKED_BASES, VARIANT_CLASSIFIER, Checkpoint, load_checkpoint)
from cmx_cli.io.output import check_not_input
from cmx_cli.io.predictions import PREDICTIONS_NAME
from cmx_cli.io.input_digests import check_input_digests, input_digests, write_input_digests
from cmx_cli.io.run_dir import (
    CONFIG_NAME, METRICS_NAME, RUN_FILES, SPLIT_NAME, held_run_dir, prepare_run_dir, write_json)
from cmx_cli.runtime import resolve_precision, seeded, use_threads
from cmx_cli.settings import EncoderStart, EncoderShape, TrainingSettings, to_dict
from cmx_cli.tasks.masked_bases import load_encoder
from cmx_cli.training.distributed import SINGLE, Processes
from cmx_cli.training.loop import FitResult, Task, TrainingInterrupted, fit
from models import ChordMixerConfig, set_compiled

@dataclass
class RunResult:
    """Outcome of a training run.

    Attributes:
        run_dir: The run directory.
        metrics: What metrics.json holds.
        summary: The closing line for people.
        fit: How training went.
        finished: The run was finished before this call, which changed nothing (a
            ``--resume`` of a finished run).
    """

    run_dir: Path
    metrics: dict
    summary: str
    fit: FitResult
    finished: bool = False


@dataclass
class NewModel:
    """What a job builds: the network, and where its encoder's weights come from."""

    model: nn.Module
    encoder_state: Optional[dict] = None  # pretrained encoder weights (``--init``)
    freeze_encoder: bool = False
    encoder_lr_scale: float = 1.0  # the encoder's share of the learning rate

    @classmethod
    def started(cls, model: nn.Module, encoder_state: Optional[dict],
                start: EncoderStart) -> "NewModel":
        """A downstream model whose encoder starts as ``--init`` says (random without it)."""
        pretrained = encoder_state is not None
        return cls(model, encoder_state, start.freeze_encoder,
                   start.encoder_lr_scale if pretrained else 1.0)


class TrainingJob(Protocol):
    """What a training command supplies to :func:`run_job`.

    ``config`` has ``out``, ``runtime`` (:class:`~cmx_cli.settings.Runtime`) and ``training``
    (:class:`~cmx_cli.settings.TrainingSettings`); it is saved as config.json.
    """

    config: Any
    #: The checkpoint kind (:mod:`cmx_cli.io.checkpoint`).
    kind: str

    def inputs(self) -> list:
        """The files the job reads (none of them may be one of the run's outputs)."""

    def data_inputs(self) -> list:
        """The files :meth:`read_data` reads, whose bytes a resume checks (inputs.json)."""

    def read_data(self, reporter: Reporter) -> Optional[SplitTable]:
        """Read and split the data (before the run directory exists); the split to save in
        split.tsv, or None for a job without one."""

    def describe_data(self) -> str:
        """What will be trained on, in one line."""

    def build_model(self, reporter: Reporter) -> NewModel:
        """The untrained network (called under a fixed seed)."""

    def checkpoint(self, model: nn.Module, state_dict: dict,
                   training_state: Optional[dict]) -> Checkpoint:
        """A checkpoint of the model's weights (and the training state, for ``last.pt``)."""

    def task(self, device: torch.device, precision: str) -> Task:
        """Batches, loss and validation for the loop."""

    def evaluate(self, model: nn.Module, device: torch.device, precision: str,
                 reporter: Reporter) -> dict:
        """The best model's held-out metrics beside its baseline: the entries of
        metrics.json between ``cmx_version`` and ``training`` (an optional ``training``
        entry is added to the training block; an optional ``predictions`` entry, a
        :class:`~cmx_cli.io.predictions.HeldOutPredictions`, is written as
        test_predictions.tsv)."""

    def summary(self, metrics: dict, fit_result: FitResult, run_dir: Path, seconds: float) -> str:
        """The closing line."""


def run_job(job: TrainingJob, reporter: Optional[Reporter] = None, resume: bool = False,
            processes: Processes = SINGLE) -> Optional[RunResult]:
    """Train and evaluate a job's model in its run directory (module docstring).

    Args:
        job: The command's data, model, task and evaluation.
        reporter: Where people-facing output goes (silent by default).
        resume: Continue the run in ``job.config.out`` from its ``last.pt``.
        processes: The training processes under ``torchrun``; only rank 0 writes the run
            directory, evaluates and returns a result (the others return None).

    Returns:
        The run's outcome, with the metrics written to metrics.json.

    Raises:
        CmxError: For bad input, a run directory in the way, or a resume that does not fit.
    """
    reporter = reporter or Reporter(quiet=True)
    config = job.config
    started = time.monotonic()
    run_dir = Path(config.out)
    for name in RUN_FILES:
        check_not_input(run_dir / name, *job.inputs())
    try:
        with contextlib.ExitStack() as holding:
            _on_main(processes, lambda: holding.enter_context(held_run_dir(run_dir, resume)))
            try:
                return _train(job, run_dir, reporter, resume, processes, started)
            except KeyboardInterrupt:
                # Outside the loop's own steps (reading, validating, evaluating): what is
                # on disk is the last.pt of the last completed epoch, if any.
                raise _interruption(run_dir) from None
    except TrainingInterrupted as error:
        error.command = MADE_BY.get(job.kind, "cmx train")  # for the resume hint
        raise


class RunInterrupted(TrainingInterrupted, KeyboardInterrupt):
    """A Ctrl-C outside the loop's steps (reading data, validating, evaluating) of a run that
    has a last checkpoint: still a ``KeyboardInterrupt``, which also says where the run
    stands, for the resume hint."""


def _interruption(run_dir: Path) -> BaseException:
    """What a Ctrl-C outside the loop's steps stopped: the run at its last checkpoint, or
    (without one) just the command."""
    try:
        state = load_checkpoint(run_dir, name=LAST).training_state
        epoch, step = int(state["epoch"]), int(state["step"])
    except (CmxError, KeyError, TypeError, ValueError):
        return KeyboardInterrupt()
    return RunInterrupted(epoch, run_dir, step, int(state.get("epoch_batches_done", 0)))


def _on_main(processes: Processes, action: Callable[[], Any]) -> Any:
    """Rank 0 does ``action`` (checks, or writes, of the run directory); every process fails
    alike when it raises a :class:`CmxError`. Returns the action's result on rank 0."""
    failure: Optional[CmxError] = None
    result = None
    if processes.is_main:
        try:
            result = action()
        except CmxError as error:
            failure = error
    message = processes.from_main(None if failure is None else failure.format_message())
    if failure is not None:
        raise failure
    if message is not None:
        raise CmxError(message)
    return result


def finished_because(state: dict, settings: TrainingSettings) -> Optional[tuple[str, str]]:
    """Whether a run whose ``last.pt`` holds ``state`` is finished, and why.

    A run is finished when early stopping ended it, or all its epochs or ``--max-steps``
    steps ran; a ``--max-time`` stop is not an end (the run resumes).

    Returns:
        None for a run that goes on; else how :class:`FitResult` names the stop
        (``early-stopping``, ``max-steps``, ``epochs``) and the reason in words.
    """
    epoch, step = int(state["epoch"]), int(state["step"])
    if settings.patience is not None and int(state.get("stale_epochs", 0)) >= settings.patience:
        return "early-stopping", (f"early stopping ended it at epoch {epoch} (best epoch "
                                  f"{state.get('best_epoch')}, then {settings.patience} "
                                  "epoch(s) without a better validation score)")
    if settings.max_steps is not None and step >= settings.max_steps:
        return "max-steps", f"all {settings.max_steps:,} steps of --max-steps ran"
    if settings.epochs is not None and epoch >= settings.epochs:
        return "epochs", f"all {settings.epochs} epochs ran"
    return None


def _saved_metrics(run_dir: Path, state: dict) -> Optional[dict]:
    """The run's metrics.json when it reports the training that ``state`` ends (the run's
    evaluation was done); else None."""
    try:
        metrics = json.loads((run_dir / METRICS_NAME).read_text())
        training = metrics["training"]
        if (training["epochs_completed"], training["steps"]) == (state["epoch"], state["step"]):
            return metrics
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _fit_so_far(state: dict, stopped_because: str) -> FitResult:
    """How a finished run's training went, from its last training state."""
    return FitResult(epochs_completed=int(state["epoch"]), steps=int(state["step"]),
                     best_epoch=state.get("best_epoch"), best_score=state.get("best_score"),
                     stopped_because=stopped_because, seconds=float(state.get("seconds", 0.0)))


def rebuild_model(checkpoint: Checkpoint) -> nn.Module:
    """The network a checkpoint stores, built from its own model config (a resume never
    rebuilds it from config.json and today's defaults, issue 23).

    Raises:
        CmxError: When the stored config cannot be built or the weights do not fit it.
    """
    from cmx_cli.tasks.classification import build_classifier
    from cmx_cli.tasks.masked_bases import build_autoencoder
    from cmx_cli.tasks.variant import build_variant_classifier

    builders = {CLASSIFIER: build_classifier, MASKED_BASES: build_autoencoder,
                VARIANT_CLASSIFIER: build_variant_classifier}
    return builders[checkpoint.kind](checkpoint)


def _train(job: TrainingJob, run_dir: Path, reporter: Reporter, resume: bool,
           processes: Processes, started: float) -> Optional[RunResult]:
    """:func:`run_job` in its held run directory."""
    config = job.config
    last: Optional[Checkpoint] = None
    finished: Optional[tuple[str, str]] = None
    if resume:
        last = load_checkpoint(run_dir, job.kind, name=LAST)
        state = last.training_state
        if not isinstance(state, dict) or not {"epoch", "step"} <= set(state):
            raise CmxError(f"{last.path}: holds no training state to resume from",
                           "the run directory is damaged; start a new run.")
        finished = finished_because(state, config.training)
        metrics = _saved_metrics(run_dir, state) if finished and processes.is_main else None
        if processes.from_main(metrics is not None):
            if not processes.is_main:
                return None
            command = MADE_BY.get(job.kind, "cmx")
            return RunResult(run_dir, metrics,
                             f"{command}: the run in {run_dir} is finished: {finished[1]}; "
                             "nothing to resume, no file changed", _fit_so_far(state, finished[0]),
                             finished=True)
    _on_main(processes, lambda: prepare_run_dir(
        run_dir, resume, None if last is None else int(last.training_state["epoch"])))
    if resume:
        # Every process learns the outcome: writing the digests below is a collective step.
        unchecked = processes.from_main(
            _on_main(processes, lambda: check_input_digests(run_dir, job.data_inputs())))
        if unchecked:
            reporter.warn(unchecked)
    use_threads(config.runtime.threads)
    device = processes.device(config.runtime.device)
    precision = resolve_precision(config.runtime.precision, device)
    split = job.read_data(reporter)
    if resume:
        if split is not None and not split.saved_in(run_dir / SPLIT_NAME):
            raise CmxError(f"{run_dir / SPLIT_NAME}: the input data no longer gives this run's "
                           "split", "resume with the same input files, or start a new run.")
        if unchecked:  # kept from now on
            _on_main(processes, lambda: write_input_digests(
                run_dir, input_digests(job.data_inputs())))
    else:
        def write_settings() -> None:
            if split is not None:
                split.write(run_dir / SPLIT_NAME)
            write_json(run_dir / CONFIG_NAME, to_dict(config))
            write_input_digests(run_dir, input_digests(job.data_inputs()))

        _on_main(processes, write_settings)
    reporter.note(f"{job.describe_data()}; device {device}, {precision}")

    resume_state = None
    if last is not None:
        model = rebuild_model(last)
        start: Optional[EncoderStart] = getattr(config, "start", None)
        new = NewModel(model, None, bool(start and start.freeze_encoder),
                       start.encoder_lr_scale if start and start.init else 1.0)
        resume_state = last.training_state
    else:
        with seeded(config.training.seed):
            new = job.build_model(reporter)
        model = new.model
        if new.encoder_state is not None:
            model.encoder.load_state_dict(new.encoder_state)
    if new.freeze_encoder:
        freeze_(model.encoder)
    set_compiled(model, config.runtime.compile_blocks)
    model.to(device)

    def make_checkpoint(state_dict: dict, training_state: Optional[dict]) -> Checkpoint:
        return job.checkpoint(model, state_dict, training_state)

    task = job.task(device, precision)  # also what a job's evaluation may need
    if finished is not None:  # its last epoch ran, its evaluation did not
        fit_result = _fit_so_far(resume_state, finished[0])
    else:
        fit_result = fit(model, task, config.training, run_dir, device, precision, reporter,
                         make_checkpoint, resume_state, processes, new.encoder_lr_scale)
    if not processes.is_main:
        return None

    model.load_state_dict(load_checkpoint(run_dir, job.kind).state_dict)
    evaluation = job.evaluate(model, device, precision, reporter)
    predictions = evaluation.pop("predictions", None)
    if predictions is not None:
        predictions.write(run_dir / PREDICTIONS_NAME)
    training = {**training_block(fit_result, model, device, precision),
                **evaluation.pop("training", {})}
    metrics = {"cmx_version": __version__, **evaluation, "training": training,
               "warnings": list(reporter.warnings)}
    write_json(run_dir / METRICS_NAME, metrics)
    reporter.warnings_saved_to = str(run_dir / METRICS_NAME)
    summary = job.summary(metrics, fit_result, run_dir, time.monotonic() - started)
    return RunResult(run_dir, metrics, summary, fit_result)


def training_block(fit_result: FitResult, model: nn.Module, device: torch.device,
                   precision: str) -> dict:
    """The ``training`` entry of metrics.json: how the run went and what it trained."""
    return {
        "epochs_completed": fit_result.epochs_completed, "steps": fit_result.steps,
        "best_epoch": fit_result.best_epoch, "stopped_because": fit_result.stopped_because,
        "seconds": round(fit_result.seconds, 2), "device": str(device), "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model_config": model.config.to_dict(),
    }


def encoder_config(shape: EncoderShape, start: EncoderStart, longest: int, what: str,
                   reporter: Reporter) -> tuple[ChordMixerConfig, Optional[dict]]:
    """A new encoder's config sized for the data, or a pretrained one's config and weights.

    Args:
        shape: The shape flags (used without ``--init``).
        start: ``--init`` and ``--freeze-encoder``.
        longest: The longest input, in bp.
        what: What an input is, for the warning (``sequence``, ``window``).
        reporter: Warns when the pretrained encoder was sized for shorter inputs.
    """
    if not start.init:
        return shape.encoder(longest), None
    config, state = load_encoder(start.init)
    if longest > config.max_len:
        reporter.warn(f"the longest {what} ({longest:,} bp) exceeds the pretrained encoder's "
                      f"max_len ({config.max_len:,} bp); longer inputs get a partial "
                      "receptive field")
    return config, state


def freeze_(module: nn.Module) -> nn.Module:
    """Stop training ``module``'s parameters (in place)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def closing_line(command: str, metrics: dict, baseline_key: str, baseline_name: str,
                 unit: str, fit_result: FitResult, run_dir: Path, seconds: float) -> str:
    """The summary line of a supervised run: held-out ROC-AUC beside its baseline (on the
    test set, else the validation set), and how training went.

    Args:
        command: e.g. ``cmx train``.
        metrics: The run's metrics.json content, with ``model`` and ``baseline_key`` entries.
        baseline_key: The baseline's key in ``metrics``.
        baseline_name: How the line names the baseline.
        unit: What was scored (``sequences``, ``variants``).
        fit_result: How training went.
        run_dir: The run directory.
        seconds: Wall time of the whole run.
    """
    split = held_out_split(metrics)
    model, baseline = metrics["model"].get(split), metrics[baseline_key].get(split)

    def auc(values: Optional[dict]) -> str:
        return "n/a" if not values or values["roc_auc"] is None else f"{values['roc_auc']:.3f}"

    held_out = (f"no held-out {unit}" if model is None else
                f"{split} ROC-AUC {auc(model)} ({baseline_name} {auc(baseline)}) on "
                f"{model['n']:,} {unit}")
    return (f"{command}: {held_out}; best epoch {fit_result.best_epoch} of "
            f"{fit_result.epochs_completed}, stopped by {fit_result.stopped_because}; "
            f"{seconds:.0f} s; run in {run_dir}")


def held_out_split(metrics: dict) -> str:
    """The split a supervised run reports: test when it has one, else validation."""
    return "test" if "test" in metrics["model"] else "val"
