"""Tests for cmx_cli.io.output.atomic_output: all or nothing under the requested name."""
from __future__ import annotations

import os
import stat
import sys

import pytest

from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output


class Boom(Exception):
    """Raised inside a block to simulate a failure half-way through writing."""


def listing(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_writes_text_on_success(tmp_path):
    destination = tmp_path / "out.tsv"
    with atomic_output(destination) as handle:
        handle.write("name\tscore\n")
        handle.write("s1\t0.5\n")
    assert destination.read_text() == "name\tscore\ns1\t0.5\n"
    assert listing(tmp_path) == ["out.tsv"]


def test_writes_bytes_on_success(tmp_path):
    destination = tmp_path / "out.bin"
    with atomic_output(str(destination), "wb") as handle:
        handle.write(b"\x00\xffabc")
    assert destination.read_bytes() == b"\x00\xffabc"
    assert listing(tmp_path) == ["out.bin"]


def test_destination_appears_only_when_the_block_ends(tmp_path):
    destination = tmp_path / "out.tsv"
    with atomic_output(destination) as handle:
        handle.write("partial")
        handle.flush()
        assert not destination.exists()
    assert destination.read_text() == "partial"


def test_replaces_an_existing_file_on_success(tmp_path):
    destination = tmp_path / "out.tsv"
    destination.write_text("old\n")
    with atomic_output(destination) as handle:
        handle.write("new\n")
        handle.flush()
        assert destination.read_text() == "old\n"  # untouched until the rename
    assert destination.read_text() == "new\n"
    assert listing(tmp_path) == ["out.tsv"]


@pytest.mark.parametrize("error", [Boom("half-way"), KeyboardInterrupt()], ids=["exception",
                                                                              "ctrl-c"])
def test_failure_leaves_no_destination_and_no_temporary(tmp_path, error):
    destination = tmp_path / "out.tsv"
    with pytest.raises(type(error)):
        with atomic_output(destination) as handle:
            handle.write("half a file")
            raise error
    assert not destination.exists()
    assert listing(tmp_path) == []


def test_failure_leaves_an_existing_destination_untouched(tmp_path):
    destination = tmp_path / "out.tsv"
    destination.write_text("previous results\n")
    with pytest.raises(Boom):
        with atomic_output(destination) as handle:
            handle.write("broken")
            raise Boom()
    assert destination.read_text() == "previous results\n"
    assert listing(tmp_path) == ["out.tsv"]


def test_failure_in_binary_mode_cleans_up(tmp_path):
    destination = tmp_path / "out.bin"
    with pytest.raises(Boom):
        with atomic_output(destination, "wb") as handle:
            handle.write(b"abc")
            raise Boom()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("relative", ["missing/out.tsv", "missing/deeper/out.tsv"])
def test_missing_parent_directory(tmp_path, relative):
    destination = tmp_path / relative
    with pytest.raises(CmxError) as error:
        with atomic_output(destination) as handle:
            handle.write("never")
    message = error.value.message
    assert str(destination) in message
    assert str(destination.parent) in message
    assert "Hint:" in message
    assert error.value.exit_code == 1
    assert listing(tmp_path) == []  # no directory was created either


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CmxError, match="Hint:"):
        with atomic_output(tmp_path / "file" / "out.tsv"):
            pass


def test_dash_writes_to_stdout(tmp_path, capsys):
    with atomic_output("-") as handle:
        handle.write("s1\t0.5\n")
        assert handle is sys.stdout
    captured = capsys.readouterr()
    assert captured.out == "s1\t0.5\n"
    assert captured.err == ""
    assert listing(tmp_path) == []
    assert not os.path.exists("-")


def test_dash_binary_writes_to_stdout_buffer(capsysbinary):
    with atomic_output("-", "wb") as handle:
        handle.write(b"ACGT\n")
    assert capsysbinary.readouterr().out == b"ACGT\n"


def test_dash_does_not_swallow_errors(capsys):
    with pytest.raises(Boom):
        with atomic_output("-") as handle:
            handle.write("partial\n")
            raise Boom()
    assert capsys.readouterr().out == "partial\n"


def test_output_permissions_follow_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        destination = tmp_path / "out.tsv"
        with atomic_output(destination) as handle:
            handle.write("x")
        plain = tmp_path / "plain.tsv"
        plain.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(destination.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_destination_that_is_a_directory(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(CmxError) as error:
        with atomic_output(tmp_path / "out") as handle:
            handle.write("never")
    assert "is a directory" in error.value.message and "Hint:" in error.value.message
    assert listing(tmp_path) == ["out"] and listing(tmp_path / "out") == []


def test_a_symbolic_link_is_followed_and_kept(tmp_path):
    (tmp_path / "link.tsv").symlink_to(tmp_path / "target.tsv")
    with atomic_output(tmp_path / "link.tsv") as handle:
        handle.write("rows\n")
    assert (tmp_path / "link.tsv").is_symlink()
    assert (tmp_path / "target.tsv").read_text() == "rows\n"
    assert listing(tmp_path) == ["link.tsv", "target.tsv"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_written_in_place_not_replaced(tmp_path):
    import threading
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    with atomic_output(pipe) as handle:
        handle.write("through the pipe\n")
    reader.join(timeout=10)
    assert received == ["through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert listing(tmp_path) == ["pipe"]


def test_dev_null_stays_a_device():
    with atomic_output(os.devnull) as handle:
        handle.write("discarded\n")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
