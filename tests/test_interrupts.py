"""A Ctrl-C is never lost: one that Python swallows (raised inside a ``__del__``) still stops
the next inference batch, without Python's "Exception ignored" report."""
import signal
import sys

import pytest
import torch
from torch import nn

from cmx_cli import interrupts
from cmx_cli.inference import batched_outputs


class _Finaliser:
    """Presses Ctrl-C from its ``__del__``, where Python reports and ignores the interrupt."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


@pytest.fixture
def recorded_ctrl_c(monkeypatch):
    monkeypatch.setattr(interrupts, "_state", {"interrupted": False})
    previous = signal.getsignal(signal.SIGINT), sys.unraisablehook
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, previous[0])
    sys.unraisablehook = previous[1]


def _batches():
    return batched_outputs(nn.Identity(), [4, 4, 4], lambda batch: (torch.ones(len(batch), 4),),
                           max_tokens=4, device=torch.device("cpu"), precision="fp32")


def test_a_ctrl_c_swallowed_by_a_finaliser_stops_the_next_batch(recorded_ctrl_c, capsys):
    batches = _batches()
    next(batches)
    _Finaliser()  # collected at once: the interrupt is raised in __del__ and ignored
    with pytest.raises(KeyboardInterrupt):
        next(batches)
    assert "Exception ignored" not in capsys.readouterr().err


class _BrokenFinaliser:
    def __del__(self):
        raise ValueError("a real bug")


def test_other_ignored_exceptions_are_still_reported(recorded_ctrl_c, capsys):
    _BrokenFinaliser()
    assert "a real bug" in capsys.readouterr().err
    assert len(list(_batches())) == 3


def test_without_a_ctrl_c_every_batch_runs(recorded_ctrl_c):
    assert len(list(_batches())) == 3


def test_a_ctrl_c_is_raised_where_the_program_is(recorded_ctrl_c):
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_interrupted()
