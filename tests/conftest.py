"""Shared fixtures: devices, data paths."""
import shutil
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def _devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """Each available device: the CPU always, CUDA when present (STYLE.md rule 9)."""
    return torch.device(request.param)


@pytest.fixture
def data_dir() -> Path:
    """tests/data, the suite's small real and hand-made files."""
    return DATA


@pytest.fixture
def data_copy(tmp_path):
    """Copy a file from tests/data into tmp_path, so that no index lands in the tree."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(DATA / name, target)
        return target

    return copy


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def fresh_compiler():
    """Forget compiled graphs and compiler counters, so that a test compiles for itself and
    cannot pass on a graph that an earlier test compiled."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system in tmp_path, for full-disk tests (skipped where mounting fails)."""
    from tests.helpers import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "disk", "size=2m") as directory:
        yield directory


@pytest.fixture
def read_only_disk(tmp_path):
    """An empty read-only file system in tmp_path (skipped where mounting fails)."""
    from tests.helpers import mounted_tmpfs

    with mounted_tmpfs(tmp_path / "read-only", "ro,size=1m") as directory:
        yield directory

