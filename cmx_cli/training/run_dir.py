"""The run directory every training job writes: its checks, its JSON files, its resume state.

One directory per run (DESIGN.md, "Checkpoints"): ``config.json`` (everything needed to rerun),
``metrics.json``, ``log.tsv``, ``model.pt`` (best) and ``last.pt`` (for ``--resume``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, TypeVar

from torch import nn

from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output
from cmx_cli.training.checkpoint import LAST, load_checkpoint

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"

Config = TypeVar("Config")

#: What a run writes before its first checkpoint (config, split, log, pretraining baselines).
#: A directory holding only these is a run stopped before any checkpoint, which nothing can
#: resume: a new run may start over in it.
UNFINISHED_FILES = frozenset({CONFIG_NAME, "split.tsv", "log.tsv", "baselines.pt"})


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    """Refuse to overwrite a run, and to resume one that has no last checkpoint.

    The directory itself is created by the caller once the input data have been read, so
    bad input leaves no empty run behind. A run stopped before its first checkpoint (only
    :data:`UNFINISHED_FILES`) may be started over.
    """
    run_dir = Path(run_dir)
    if resume and not (run_dir / LAST).is_file():
        raise CmxError(f"{run_dir}: no {LAST} to resume from",
                       "start the run without --resume first.")
    entries = {entry.name for entry in run_dir.iterdir()} if run_dir.is_dir() else set()
    if not resume and not entries <= UNFINISHED_FILES:
        raise CmxError(
            f"{run_dir}: the run directory already exists and is not empty",
            "choose a new --out, delete the old run, or continue it with --resume.",
        )
    return run_dir


def write_json(path: Path, values: dict) -> None:
    """Write a JSON file atomically (strict JSON: no NaN)."""
    with atomic_output(path) as handle:
        json.dump(values, handle, indent=2, allow_nan=False)
        handle.write("\n")


def read_config(run_dir: Path, from_dict: Callable[[dict], Config], command: str) -> Config:
    """Read a run's config.json (for ``--resume``).

    Args:
        run_dir: The run directory.
        from_dict: Builds the job's config from the parsed JSON.
        command: The command that makes such runs, for the hint (e.g. ``cmx train``).

    Raises:
        CmxError: When the run has no readable config of this kind.
    """
    path = Path(run_dir) / CONFIG_NAME
    try:
        return from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CmxError(f"{path}: no such file",
                       f"--resume needs a run directory made by `{command}`.") from None
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise CmxError(f"{path}: not a `{command}` config ({error})",
                       "the run directory is damaged, or was made by another command.") from None


def resume_state_(model: nn.Module, run_dir: Path, kind: str) -> Optional[dict]:
    """Load ``last.pt`` into ``model`` (in place) and return its training state."""
    last = load_checkpoint(run_dir, kind, name=LAST)
    model.load_state_dict(last.state_dict)
    return last.training_state


def closing_line(command: str, metrics: dict, split: str, baseline_key: str,
                 baseline_name: str, unit: str, result, run_dir: Path, seconds: float) -> str:
    """The summary line of a supervised run: held-out ROC-AUC beside its baseline, and how
    training went.

    Args:
        command: e.g. ``cmx train``.
        metrics: The run's metrics.json content, with ``model`` and ``baseline_key`` entries.
        split: The held-out split reported (``test`` or ``val``).
        baseline_key: The baseline's key in ``metrics``.
        baseline_name: How the line names the baseline.
        unit: What was scored (``sequences``, ``variants``).
        result: The :class:`~cmx_cli.training.loop.FitResult`.
        run_dir: The run directory.
        seconds: Wall time of the whole run.
    """
    model, baseline = metrics["model"].get(split), metrics[baseline_key].get(split)

    def auc(values: Optional[dict]) -> str:
        return "n/a" if not values or values["roc_auc"] is None else f"{values['roc_auc']:.3f}"

    held_out = (f"no held-out {unit}" if model is None else
                f"{split} ROC-AUC {auc(model)} ({baseline_name} {auc(baseline)}) on "
                f"{model['n']:,} {unit}")
    return (f"{command}: {held_out}; best epoch {result.best_epoch} of "
            f"{result.epochs_completed}, stopped by {result.stopped_because}; "
            f"{seconds:.0f} s; run in {run_dir}")
