"""Ctrl-C that cannot be lost.

Python turns SIGINT into a ``KeyboardInterrupt`` raised wherever the main thread happens to
be. When that is inside a ``__del__`` or a weakref callback (pyfaidx's objects, for one, are
collected whenever the garbage collector runs), Python prints "Exception ignored" and goes
on, and a command the user stopped runs to its end. :func:`install` records each Ctrl-C
before raising it and keeps a swallowed one out of the user's terminal, and the long loops
(training steps, inference batches) call :func:`raise_if_interrupted`, so an interrupt
swallowed that way stops the command at its next batch instead.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Optional

_state = {"interrupted": False}


def _on_sigint(signum: int, frame: Optional[FrameType]) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


def _quiet_about_swallowed_interrupts(unraisable: "sys.UnraisableHookArgs") -> None:
    """Python's report of an exception it had to ignore, except a Ctrl-C: that one is
    recorded, and the command stops at its next batch with its own one-line message."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def install() -> None:
    """Record every Ctrl-C from now on (call once, from the main thread, at start-up)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        sys.unraisablehook = _quiet_about_swallowed_interrupts


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed, even if it was swallowed since."""
    if _state["interrupted"]:
        raise KeyboardInterrupt
