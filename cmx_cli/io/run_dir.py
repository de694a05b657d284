"""The run directory every training job writes: its checks, its lock, its JSON files.

One directory per run (DESIGN.md, "Checkpoints"): ``config.json`` (everything needed to rerun),
``metrics.json``, ``log.tsv``, ``model.pt`` (best) and ``last.pt`` (for ``--resume``), and for a
supervised run the held-out predictions its metrics come from (``test_predictions.tsv``). The run
directory is where its config.json lies: nothing inside it says where to write.

One writer at a time (DESIGN.md, "Trust"): a run holds an exclusive lock on ``.cmx.lock``
inside its directory for as long as it runs, resumes included. The operating system drops
the lock when the process ends, however it ends, so a killed run blocks nobody; the file
stays, with the process id of the last holder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, TypeVar

from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import BEST, LAST
from cmx_cli.io.output import atomic_output, write_errors
from cmx_cli.io.predictions import PREDICTIONS_NAME
from cmx_cli.settings import from_dict

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
LOG_NAME = "log.tsv"
SPLIT_NAME = "split.tsv"
LOCK_NAME = ".cmx.lock"

Config = TypeVar("Config")

#: What a run writes before its first checkpoint (config, split, log, pretraining baselines).
#: A directory holding only these is a run stopped before any checkpoint, which nothing can
#: resume: a new run may start over in it.
UNFINISHED_FILES = frozenset({CONFIG_NAME, SPLIT_NAME, LOG_NAME, "baselines.pt", LOCK_NAME})
#: Every file a run writes: none of them may be one of its inputs.
RUN_FILES = (BEST, LAST, CONFIG_NAME, METRICS_NAME, SPLIT_NAME, LOG_NAME, "baselines.pt",
             LOCK_NAME, PREDICTIONS_NAME)


@contextlib.contextmanager
def held_run_dir(run_dir: Path, resume: bool) -> Iterator[Path]:
    """Check a run directory, create it for a new run, and lock it for the block.

    A new run's directory (and any parent this made) is removed again when the block fails
    before writing anything into it, so bad input leaves no empty run behind.

    Raises:
        CmxError: Another process holds the lock (naming its process id), the directory is
            a finished run (without ``resume``), or it has nothing to resume.
    """
    run_dir = Path(run_dir)
    if resume:
        check_run_dir(run_dir, resume)  # before anything is created
    made = [] if resume else _make_directories(run_dir)
    try:
        with _locked(run_dir):
            check_run_dir(run_dir, resume)
            yield run_dir
    except BaseException:
        if made and {entry.name for entry in run_dir.iterdir()} <= {LOCK_NAME}:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
            for directory in made:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        raise


def _make_directories(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and its missing parents; the ones created, deepest first."""
    missing = [directory for directory in (run_dir, *run_dir.parents) if not directory.exists()]
    with write_errors(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock (``fcntl.flock``) for the block."""
    path = run_dir / LOCK_NAME
    with write_errors(path), open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CmxError(
                f"{run_dir}: another cmx process (pid {holder}) is writing this run directory",
                "wait for it to finish (or stop it); a run directory has one writer at a "
                "time.") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    """Refuse to overwrite a run, and to resume one that has no last checkpoint.

    A run stopped before its first checkpoint (only :data:`UNFINISHED_FILES`) may be started
    over.
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
    """Read a run's config.json (for ``--resume``), with ``out`` set to ``run_dir``.

    Args:
        run_dir: The run directory.
        config_type: The job's config dataclass.
        command: The command that makes such runs, for the hint (e.g. ``cmx train``).

    Raises:
        CmxError: When the run has no readable config of this kind.
    """
    path = Path(run_dir) / CONFIG_NAME
    try:
        config = from_dict(config_type, json.loads(path.read_text()))
        # The run is where its config lies: whatever directory it was made in, and however
        # that was typed, a resume writes only here.
        return dataclasses.replace(config, out=str(Path(run_dir).absolute()))
    except FileNotFoundError:
        raise CmxError(f"{path}: no such file",
                       f"--resume needs a run directory made by `{command}`.") from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSONDecodeError too
        raise CmxError(f"{path}: not a `{command}` config ({error})",
                       "the run directory is damaged, or was made by another command.") from None
