"""The run directory every training job writes: its checks, its JSON files, its resume state.

One directory per run (DESIGN.md, "Checkpoints"): ``config.json`` (everything needed to rerun),
``metrics.json``, ``log.tsv``, ``model.pt`` (best) and ``last.pt`` (for ``--resume``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import LAST
from cmx_cli.io.output import atomic_output
from cmx_cli.settings import from_dict

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


def read_config(run_dir: Path, config_type: type[Config], command: str) -> Config:
    """Read a run's config.json (for ``--resume``).

    Args:
        run_dir: The run directory.
        config_type: The job's config dataclass.
        command: The command that makes such runs, for the hint (e.g. ``cmx train``).

    Raises:
        CmxError: When the run has no readable config of this kind.
    """
    path = Path(run_dir) / CONFIG_NAME
    try:
        return from_dict(config_type, json.loads(path.read_text()))
    except FileNotFoundError:
        raise CmxError(f"{path}: no such file",
                       f"--resume needs a run directory made by `{command}`.") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSONDecodeError too
        raise CmxError(f"{path}: not a `{command}` config ({error})",
                       "the run directory is damaged, or was made by another command.") from None
