"""inputs.json: the size and SHA-256 digest of each input file of a training run.

A resume recomputes them and refuses an input whose bytes changed (issue 23): a name says
nothing about content. A full hash costs seconds per gigabase, once at the start and once at
each resume. The digests are kept in a file of their own, apart from config.json, which holds
the run's settings only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional

from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output

INPUTS_NAME = "inputs.json"
#: What inputs.json says it is.
INPUTS_FORMAT = "cmx-input-digests"


def file_digest(path: Path) -> dict:
    """The size and SHA-256 digest of a file's bytes (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            piece = handle.read(1 << 20)
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
    return {"size": size, "sha256": digest.hexdigest()}


def _input_files(paths: Iterable) -> list[str]:
    """The distinct input files among ``paths`` (None dropped), in order."""
    return list(dict.fromkeys(str(path) for path in paths if path is not None))


def input_digests(paths: Iterable) -> dict:
    """The content of inputs.json for the files ``paths``.

    Raises:
        CmxError: When an input cannot be read.
    """
    files = {}
    for path in _input_files(paths):
        try:
            files[path] = file_digest(Path(path))
        except OSError as error:
            raise CmxError(f"{path}: cannot read ({error.strerror})",
                           "check that the input file exists and is readable.") from None
    return {"format": INPUTS_FORMAT, "files": files}


def write_input_digests(run_dir: Path, digests: dict) -> None:
    """Write inputs.json (the digests of :func:`input_digests`) into the run directory."""
    with atomic_output(Path(run_dir) / INPUTS_NAME) as handle:
        json.dump(digests, handle, indent=2)
        handle.write("\n")


def check_input_digests(run_dir: Path, paths: Iterable) -> Optional[str]:
    """Check, on resume, that the run's input files hold the bytes it started with.

    Args:
        run_dir: The run directory (with its inputs.json).
        paths: The input files the resumed run reads.

    Returns:
        None when every input is unchanged, or a warning for a run made before cmx kept the
        digests (it has no inputs.json).

    Raises:
        CmxError: Naming the first input whose size or content changed, or that is gone.
    """
    path = Path(run_dir) / INPUTS_NAME
    try:
        saved = json.loads(path.read_text())
        files = saved["files"] if saved.get("format") == INPUTS_FORMAT else None
        if not isinstance(files, dict):
            raise ValueError("no digests")
    except FileNotFoundError:
        return (f"{run_dir} has no {INPUTS_NAME} (a run made before cmx kept digests of its "
                "inputs): its input files are not checked against the ones it started with")
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise CmxError(f"{path}: damaged ({error})",
                       "restore the run's inputs.json, or start a new run.") from None
    for name in _input_files(paths):
        expected = files.get(name)
        if expected is None:
            raise CmxError(f"{name}: not an input the run {run_dir} started with",
                           "resume with the original input files, or start a new run.")
        try:
            size = os.stat(name).st_size
            same = size == expected.get("size") and (
                file_digest(Path(name))["sha256"] == expected.get("sha256"))
        except OSError as error:
            raise CmxError(f"{name}: an input of the run {run_dir} cannot be read "
                           f"({error.strerror})",
                           "resume with the original input files, or start a new run.") from None
        if not same:
            change = (f"{expected.get('size')} bytes then, {size} now"
                      if size != expected.get("size") else "same size, other bytes")
            raise CmxError(f"{name}: the input file changed since the run {run_dir} started "
                           f"({change})",
                           "resume with the original input files, or start a new run.")
    return None
