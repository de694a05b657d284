"""Assertions, marks and the command-line runners shared by the test modules.

Every test that runs cmx's command line goes through :func:`run_cli` (in this process) or
:func:`run_cmx` (a real ``python -m cmx_cli`` process). Both fail the test when cmx reports an
internal error, which is for bugs in cmx only, unless the test says that it provokes one on
purpose (``internal_error=True``). ``tests/test_cli_helpers.py`` checks that no test module
runs the command line another way.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from click.testing import CliRunner, Result

from cmx_cli.errors import CmxError

ROOT = Path(__file__).resolve().parents[1]
#: What cmx prints for an error that is a bug in cmx (cmx_cli.cli.main).
INTERNAL_ERROR = "internal error"


def run_cli(*arguments, internal_error: bool = False, **invoke_options) -> Result:
    """Run ``cmx ARGUMENTS`` in this process with click's ``CliRunner`` (stderr is not a
    terminal) and return its result.

    Args:
        arguments: The command line after ``cmx``; each is passed through ``str``.
        internal_error: The test provokes an internal error on purpose; without it, a run
            that ends in one (an exception that ``cmx`` would report as "internal error")
            fails the test.
        invoke_options: Passed to ``CliRunner.invoke`` (``input``, ``env``, ...).
    """
    from cmx_cli.cli import cli
    from cmx_cli.cli.main import is_internal_error

    result = CliRunner().invoke(cli, [str(argument) for argument in arguments], **invoke_options)
    internal = is_internal_error(result.exception)
    if internal != internal_error:
        detail = (f"{type(result.exception).__name__}: {result.exception}"
                  if result.exception is not None else "none")
        pytest.fail(f"cmx {' '.join(map(str, arguments))}: internal error expected "
                    f"{internal_error}, got {detail}\n{result.output}", pytrace=False)
    return result


def cmx_environment(extra: Optional[dict] = None) -> dict:
    """The environment of a cmx subprocess: this checkout's code first on the path."""
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(extra or {})}


def cmx_command(*arguments) -> list[str]:
    """The argument vector of ``python -m cmx_cli ARGUMENTS``."""
    return [sys.executable, "-m", "cmx_cli", *map(str, arguments)]


def check_internal_error(arguments, stderr: str, internal_error: bool = False) -> None:
    """Fail unless a finished cmx process's stderr says "internal error" exactly when the
    test provokes one (``internal_error``)."""
    said = INTERNAL_ERROR in stderr
    if said != internal_error:
        pytest.fail(f"cmx {' '.join(map(str, arguments))}: internal error expected "
                    f"{internal_error}, got {said}\n{stderr}", pytrace=False)


def run_cmx(*arguments, cwd=None, timeout: float = 300, internal_error: bool = False,
            env: Optional[dict] = None, **run_options) -> subprocess.CompletedProcess:
    """Run ``python -m cmx_cli ARGUMENTS`` in a new process, as a user does, and return it
    (text output captured).

    Args:
        arguments: The command line after ``cmx``.
        cwd: The working directory.
        timeout: Seconds before the test fails.
        internal_error: The test provokes an internal error on purpose; without it, a run
            whose stderr says "internal error" fails the test.
        env: Variables added to the environment.
        run_options: Passed to ``subprocess.run``.
    """
    result = subprocess.run(cmx_command(*arguments), capture_output=True, text=True, cwd=cwd,
                            env=cmx_environment(env), timeout=timeout, **run_options)
    check_internal_error(arguments, result.stderr, internal_error)
    return result


#: The script of :func:`run_cmx_and_probe`: cmx's entry point, as ``python -m cmx_cli`` runs
#: it, then the probe, with ``status`` the exit status the command ended with.
_PROBE_SCRIPT = """\
import sys
from cmx_cli.cli import main
sys.argv = ["cmx", *sys.argv[1:]]
try:
    main()
    status = 0
except SystemExit as exit:
    status = exit.code or 0
"""


def run_cmx_and_probe(probe: str, *arguments, cwd=None, timeout: float = 300,
                      internal_error: bool = False,
                      env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Like :func:`run_cmx`, but run the Python statements ``probe`` in the same process
    after the command has ended, to read what it left there (e.g. torch's thread count);
    ``status`` holds the command's exit status."""
    script = _PROBE_SCRIPT + probe
    result = subprocess.run([sys.executable, "-c", script, *map(str, arguments)],
                            capture_output=True, text=True, cwd=cwd, env=cmx_environment(env),
                            timeout=timeout)
    check_internal_error(arguments, result.stderr, internal_error)
    return result


#: Two warnings that torch itself raises while compiling (``--compile``), not cmx.
COMPILER_WARNINGS = (
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning",
)


def allow_compiler_warnings(test):
    """Let a test through :data:`COMPILER_WARNINGS`."""
    for warning in COMPILER_WARNINGS:
        test = pytest.mark.filterwarnings(warning)(test)
    return test


def check_user_error(error: CmxError, *names: object) -> str:
    """Check the house rules for a user error (STYLE.md rule 6) and return its message."""
    message = error.format_message()
    assert isinstance(error, CmxError)
    for name in names:
        assert str(name) in message, (name, message)
    assert "Hint:" in message
    assert "\n" not in message
    return message


def flat_config(config_type, **values):
    """Build a job config from flat keyword arguments: each name that is not a field of
    ``config_type`` goes to the nested settings group that has a field of that name (e.g.
    ``track_size`` to ``shape``, ``device`` to ``runtime``, ``window`` to ``variants``)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_type)
    direct = {field.name for field in dataclasses.fields(config_type)}
    groups = {name: hint for name, hint in hints.items()
              if name in direct and dataclasses.is_dataclass(hint)}
    top, nested = {}, {name: {} for name in groups}
    for name, value in values.items():
        if name in direct:
            top[name] = value
            continue
        owners = [group for group, hint in groups.items()
                  if name in {field.name for field in dataclasses.fields(hint)}]
        assert len(owners) == 1, f"{name!r} belongs to {owners or 'no group'} of {config_type}"
        nested[owners[0]][name] = value
    for group, fields in nested.items():
        if fields:
            base = top.get(group)
            top[group] = (dataclasses.replace(base, **fields) if base is not None
                          else groups[group](**fields))
    return config_type(**top)


def write_gc_classes(root: Path, query: Optional[str] = None,
                     header_labels: bool = False) -> Path:
    """Write two classes of short sequences into ``root`` (seeded): ``a.fa``, 30 GC-rich
    sequences of class A, and ``b.fa``, 30 AT-rich ones of class B, 40-63 bp each.

    Args:
        root: The directory.
        query: Also write ``q.fa``, 10 sequences of 50 bp: ``"classes"`` alternates GC-rich
            A and AT-rich B, ``"neutral"`` has half G+C.
        header_labels: Write each sequence's class in its header (``label=A``).

    Returns:
        ``root``.
    """
    import numpy as np

    rng = np.random.default_rng(3)

    def sequence(gc: float, length: int) -> str:
        weights = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
        return "".join(rng.choice(list("ACGT"), length, p=weights))

    def header(name: str, label: str) -> str:
        return f">{name} label={label}" if header_labels else f">{name}"

    for name, gc in (("a", 0.65), ("b", 0.35)):
        (root / f"{name}.fa").write_text("".join(
            f"{header(f'{name}{i}', name.upper())}\n{sequence(gc, int(rng.integers(40, 64)))}\n"
            for i in range(30)))
    if query == "classes":
        (root / "q.fa").write_text("".join(
            f"{header(f'q{i}', 'AB'[i % 2])}\n{sequence(0.65 if i % 2 == 0 else 0.35, 50)}\n"
            for i in range(10)))
    elif query == "neutral":
        (root / "q.fa").write_text("".join(f"{header(f'q{i}', 'A')}\n{sequence(0.5, 50)}\n"
                                           for i in range(10)))
    return root


def start_cmx(*arguments, cwd=None) -> subprocess.Popen:
    """Start ``python -m cmx_cli ARGUMENTS`` (text stdout and stderr piped), for a test that
    signals or kills it; the test checks its stderr with :func:`check_internal_error` once it
    has ended."""
    return subprocess.Popen(cmx_command(*arguments), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=cmx_environment())


def wait_until(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120,
               poll: float = 0.01, what: str = "the awaited state") -> None:
    """Wait until ``ready()`` holds, failing the test when ``process`` ends first or
    ``timeout`` seconds pass; ``poll`` is the pause between looks."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{what} never came in {timeout:.0f} s"
        time.sleep(poll)

@contextlib.contextmanager
def mounted_tmpfs(directory: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``directory`` for the block (needs root; the test is skipped where
    mounting fails).

    Root writes through permission bits, so a read-only directory is made by mounting a
    read-only file system, and a full one by mounting a small one and filling it
    (:func:`fill_disk`)."""
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill_disk(directory: Path, leave: int = 0) -> None:
    """Fill the file system of ``directory`` until a write fails, then free ``leave`` bytes."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for block in (65536, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * block)
    finally:
        if leave:
            os.ftruncate(descriptor, max(0, os.fstat(descriptor).st_size - leave))
        os.close(descriptor)

