"""Ctrl-C and SIGTERM that cannot be lost, and that training turns into a clean stop.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be. When that is inside a ``__del__`` or a weakref callback (pyfaidx's objects, for one, are
collected whenever the garbage collector runs), Python prints "Exception ignored" and goes
on, and a command the user stopped runs to its end. :func:`install` records each Ctrl-C
before raising it and keeps a swallowed one out of the user's terminal, and the long loops
(training steps, inference batches) call :func:`raise_if_interrupted`, so an interrupt
swallowed that way stops the command at its next batch instead.

SIGTERM (``kill``, a batch scheduler's pre-emption or time limit) is handled like Ctrl-C:
without a handler the process would die at once, midway through a step or a file, and leave
its temporary files behind.

Training wants more than an exception raised at a random point: a stop half-way through an
optimizer step, or between the lines of a log and its checkpoint, leaves a run that cannot be
continued exactly (issue 23, case 9). Inside :func:`deferred`, a signal is only recorded, and
the training loop stops at its next step boundary (:func:`requested`), after saving its state.
A second signal stops at once, as before.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Iterator, Optional

#: The signals handled: Ctrl-C, and the polite request to stop that ``kill`` and batch
#: schedulers send.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict = {"interrupted": False, "signal": None, "deferring": False}


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    first = not _state.get("interrupted")
    _state["interrupted"] = True
    _state["signal"] = _state.get("signal") or signum
    if first and _state.get("deferring"):
        return  # the training loop stops at its next step boundary
    raise KeyboardInterrupt


def _quiet_about_swallowed_interrupts(unraisable: "sys.UnraisableHookArgs") -> None:
    """Python's report of an exception it had to ignore, except a Ctrl-C: that one is
    recorded, and the command stops at its next batch with its own one-line message."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def install() -> None:
    """Record every Ctrl-C and SIGTERM from now on (call once, from the main thread, at
    start-up)."""
    if threading.current_thread() is threading.main_thread():
        for number in SIGNALS:
            signal.signal(number, _on_signal)
        sys.unraisablehook = _quiet_about_swallowed_interrupts


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed, even if it was swallowed since."""
    if _state.get("interrupted"):
        raise KeyboardInterrupt


def requested() -> bool:
    """Whether a signal asked the command to stop."""
    return bool(_state.get("interrupted"))


def signal_name() -> str:
    """The name of the first signal received (``SIGINT`` when none was)."""
    return signal.Signals(_state.get("signal") or signal.SIGINT).name


def exit_status() -> int:
    """The exit status of a command stopped by a signal: 128 + its number, as shells report
    it (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(_state.get("signal") or signal.SIGINT)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM is only recorded: the caller polls
    :func:`requested` where it can stop cleanly. A second one raises ``KeyboardInterrupt``
    at once. Nested use is allowed."""
    before = _state.get("deferring", False)
    _state["deferring"] = True
    try:
        yield
    finally:
        _state["deferring"] = before


def reset() -> None:
    """Forget a recorded signal (for a process that runs several commands, such as tests)."""
    _state.update(interrupted=False, signal=None)
