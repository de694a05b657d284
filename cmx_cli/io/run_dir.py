"""The run directory every training job writes: its checks, its lock, its JSON files.

One directory per run (DESIGN.md, "Checkpoints"): ``config.json`` (everything needed to rerun),
``metrics.json``, ``log.tsv``, ``model.pt`` (best) and ``last.pt`` (for ``--resume``), and for a
supervised run the held-out predictions its metrics come from (``test_predictions.tsv``). The run
directory is where its config.json lies: nothing inside it says where to write.

One writer at a time (DESIGN.md, "Trust"): a run holds an exclusive lock on ``.cmx.lock``
inside its directory for as long as it runs, resumes included. The operating system drops
the lock when the process ends, however it ends, so a killed run blocks nobody; the file
stays, with the process id of the last holder. The lock is opened without following a
symbolic link: a lock that is a link (a run copied with ``cp -rs``) is replaced by a file of
the run's own, and one that is not a regular file is refused.

A run writes only the names of its own directory (issue 23): before a run writes, every file
of it that is a link (symbolic, or a hard link shared with another run) is replaced by a copy
of its own, so that a copy of a run made of links resumes without changing the original. A
run stopped before its first checkpoint (killed, say) starts over in its directory with the
same command, and temporaries that a killed run left (``.last.pt.*.tmp``) are removed.

``inputs.json`` (:mod:`cmx_cli.io.input_digests`) keeps the size and SHA-256 digest of each
input file the run reads, apart from config.json, which holds settings only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Iterator, Optional, TypeVar

from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import BEST, LAST
from cmx_cli.io.input_digests import INPUTS_NAME
from cmx_cli.io.output import atomic_output, temporary_file, write_errors
from cmx_cli.io.predictions import PREDICTIONS_NAME
from cmx_cli.settings import from_dict

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
LOG_NAME = "log.tsv"
SPLIT_NAME = "split.tsv"
LOCK_NAME = ".cmx.lock"

Config = TypeVar("Config")

#: What a run writes before its first checkpoint (config, split, input digests, log, the best
#: model of an epoch whose last.pt a kill cut short, pretraining baselines). A directory holding
#: only these (and temporaries of them) is a run stopped before any checkpoint, which nothing
#: can resume: the same command starts it over.
UNFINISHED_FILES = frozenset({CONFIG_NAME, SPLIT_NAME, INPUTS_NAME, LOG_NAME, BEST,
                              "baselines.pt", LOCK_NAME})
#: Every file a run writes: none of them may be one of its inputs.
RUN_FILES = (BEST, LAST, CONFIG_NAME, METRICS_NAME, SPLIT_NAME, LOG_NAME, "baselines.pt",
             LOCK_NAME, PREDICTIONS_NAME, INPUTS_NAME)
#: The temporary files of a run's own files (io/output.py's ``.NAME.XXXXXXXX.tmp``).
_TEMPORARY = re.compile(r"^\.(%s)\.[^/]+\.tmp$" % "|".join(map(re.escape, RUN_FILES)))


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
    """Hold the run directory's lock (``fcntl.flock`` on ``.cmx.lock``) for the block.

    The lock is opened without following a symbolic link and never truncated before it is
    held, so that no other file is ever written through it (issue 23). A lock that is a
    link of any kind (a run copied with ``cp -rs`` or ``cp -al`` links its lock to the
    original's) is first replaced by a file of this run's own; one that is not a regular
    file is refused.

    Raises:
        CmxError: The lock is held by another process (naming its process id), or it is not
            a regular file.
    """
    path = run_dir / LOCK_NAME
    with write_errors(path, run_dir):
        descriptor = _open_lock(path)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise CmxError(
                f"{run_dir}: another cmx process (pid {holder}) is writing this run directory",
                "wait for it to finish (or stop it); a run directory has one writer at a "
                "time.") from None
        try:
            with write_errors(path):  # the run's own regular file, held: the pid of its writer
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _open_lock(path: Path) -> int:
    """Open (or create) the lock file ``path``, a regular file of this run's own.

    Links are replaced under a short lock on the directory itself, so that two processes
    replacing one link cannot end up holding locks on two different files.
    """
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a file system without directory locks
            fcntl.flock(directory, fcntl.LOCK_EX)
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            status = None
        if status is not None and (stat.S_ISLNK(status.st_mode) or
                                   (stat.S_ISREG(status.st_mode) and status.st_nlink > 1)):
            with temporary_file(path) as temporary:
                os.replace(temporary, path)
        elif status is not None and not stat.S_ISREG(status.st_mode):
            raise _not_a_lock(path)
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_CLOEXEC, 0o666)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise _not_a_lock(path) from None
            raise
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise _not_a_lock(path)
        return descriptor
    finally:
        os.close(directory)  # drops the directory's lock


def _not_a_lock(path: Path) -> CmxError:
    return CmxError(f"{path}: the run's lock file is not a regular file",
                    "remove it (cmx makes a new one); it must not be a directory, a pipe or "
                    "a link.")


def _is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of one of a run's own files."""
    return _TEMPORARY.match(name) is not None


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    """Refuse to overwrite a run, and to resume one that has no last checkpoint.

    A run stopped before its first checkpoint (only :data:`UNFINISHED_FILES` and temporaries
    of its files) is started over by the same command.
    """
    run_dir = Path(run_dir)
    entries = {entry.name for entry in run_dir.iterdir()} if run_dir.is_dir() else set()
    unfinished = {name for name in entries if not _is_temporary(name)} <= UNFINISHED_FILES
    if resume and not (run_dir / LAST).is_file():
        if entries and unfinished:
            raise CmxError(f"{run_dir}: no {LAST} to resume from: the run stopped before its "
                           "first epoch ended",
                           "start the run again with the same command, without --resume; "
                           "it starts over in this directory.")
        raise CmxError(f"{run_dir}: no {LAST} to resume from",
                       "start the run without --resume first.")
    if not resume and not unfinished:
        raise CmxError(
            f"{run_dir}: the run directory already exists and is not empty",
            "choose a new --out, delete the old run, or continue it with --resume.",
        )
    return run_dir


def prepare_run_dir(run_dir: Path, resume: bool, epochs: Optional[int] = None) -> None:
    """Make a held run directory ready to be written (call it while holding the lock).

    Removes the temporaries that a killed run left behind; for a run that starts over, removes
    what its stopped predecessor wrote (all of it is written again); for a resumed run,
    replaces each of its files that is a link (a symbolic link, or a hard link another
    directory shares) by a copy of its own, so that writing the run never changes another
    directory's files (issue 23), and drops the log rows of epochs after the ``epochs`` that
    its last.pt holds (a kill between an epoch's log row and its last.pt leaves one, which
    the resumed run writes again).
    """
    run_dir = Path(run_dir)
    for entry in list(run_dir.iterdir()):
        stale = _is_temporary(entry.name) or (not resume and entry.name in UNFINISHED_FILES
                                              and entry.name != LOCK_NAME)
        if stale and (entry.is_symlink() or not entry.is_dir()):
            with write_errors(entry):
                entry.unlink(missing_ok=True)
    if resume:
        for name in RUN_FILES:
            if name != LOCK_NAME:
                _own_copy(run_dir / name)
        if epochs is not None:
            _drop_log_rows_after(run_dir / LOG_NAME, epochs)


def _drop_log_rows_after(path: Path, epochs: int) -> None:
    """Rewrite log.tsv without the rows of epochs after ``epochs`` (rows it cannot read stay)."""
    try:
        with open(path, newline="") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return

    def later(line: str) -> bool:
        try:
            return int(line.split("\t", 1)[0]) > epochs
        except ValueError:
            return False

    kept = lines[:1] + [line for line in lines[1:] if not later(line)]
    if kept != lines:
        with atomic_output(path) as handle:
            handle.writelines(kept)


def _own_copy(path: Path) -> None:
    """Replace a link at ``path`` by a regular file with the same bytes (a dangling
    symbolic link is removed); a regular file of one link stays as it is."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    linked = stat.S_ISLNK(status.st_mode) or (stat.S_ISREG(status.st_mode) and status.st_nlink > 1)
    if not linked:
        return
    with write_errors(path):
        if not path.exists():  # a link to nothing: nothing to keep
            path.unlink()
            return
        with temporary_file(path) as temporary:
            with write_errors(path, temporary):
                shutil.copyfile(path, temporary)
                os.replace(temporary, path)


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
