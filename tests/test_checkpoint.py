"""Tests for cmx_cli.io.checkpoint (safe, self-describing files) and build_classifier."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cmx_cli.data.batching import pack
from cmx_cli.errors import CmxError
from cmx_cli.io.checkpoint import (
    FORMAT_VERSION, LAST, Checkpoint, load_checkpoint, save_checkpoint)
from cmx_cli.tasks.classification import build_classifier
from models import ChordMixerConfig, ClassifierConfig, SequenceClassifier

LABELS = ["Acinetobacter", "Klebsiella"]


def tiny_classifier(n_classes: int = 2, max_len: int = 8, seed: int = 0) -> SequenceClassifier:
    config = ClassifierConfig(
        ChordMixerConfig(max_len=max_len, track_size=2, hidden_size=4, dropout=0.0), n_classes
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SequenceClassifier(config)


def checkpoint_of(model: SequenceClassifier, **overrides) -> Checkpoint:
    values = dict(kind="classifier", model_config=model.config.to_dict(),
                  state_dict=model.state_dict(), labels=list(LABELS))
    values.update(overrides)
    return Checkpoint(**values)


def training_state(model: SequenceClassifier) -> dict:
    """A realistic last.pt training state: AdamW after one step, plus counters."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, offsets = pack([np.array([0, 1, 2, 3], dtype=np.uint8)])
    model(tokens, offsets).sum().backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
    return {"optimizer": optimizer.state_dict(), "epoch": 3, "step": 12, "best_score": 0.75,
            "best_epoch": 2, "stale_epochs": 1, "seconds": 1.5}


def assert_same(left, right, where="payload"):
    """Deep equality for nested dicts/lists of plain values and tensors."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor), where
        assert left.dtype == right.dtype and torch.equal(left, right), where
    elif isinstance(left, dict):
        assert isinstance(right, dict) and list(left) == list(right), where
        for key in left:
            assert_same(left[key], right[key], f"{where}[{key!r}]")
    elif isinstance(left, (list, tuple)):
        assert type(left) is type(right) and len(left) == len(right), where
        for i, (a, b) in enumerate(zip(left, right)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert left == right and type(left) is type(right), where


def plain_leaves(value):
    """Yield every leaf of a nested payload."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from plain_leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from plain_leaves(item)
    else:
        yield value


def test_round_trip(tmp_path):
    model = tiny_classifier()
    state = training_state(model)
    extra = {"mask_rate": 0.15, "names": ["a", "b"], "nested": {"k": 1}, "missing": None}
    original = checkpoint_of(model, extra=extra, training_state=state)
    path = tmp_path / "last.pt"
    save_checkpoint(original, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left

    loaded = load_checkpoint(path)
    assert loaded.kind == "classifier"
    assert loaded.model_config == model.config.to_dict()
    assert loaded.labels == LABELS
    assert loaded.extra == extra
    assert loaded.cmx_version == original.cmx_version
    assert loaded.alphabet == original.alphabet
    assert loaded.path == path
    assert_same(dict(model.state_dict()), dict(loaded.state_dict), "state_dict")
    assert_same(state, loaded.training_state, "training_state")

    # The optimizer state loads back into a fresh optimizer.
    optimizer = torch.optim.AdamW(tiny_classifier().parameters(), lr=1e-3)
    optimizer.load_state_dict(loaded.training_state["optimizer"])


def test_saved_file_is_plain_data_for_weights_only(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(tiny_classifier(), extra={"k": [1, 2.5]}), path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(payload, dict)
    allowed = (str, int, float, bool, type(None), torch.Tensor)
    odd = [type(leaf) for leaf in plain_leaves(payload) if not isinstance(leaf, allowed)]
    assert odd == []
    assert "training_state" not in payload  # only last.pt carries it


def test_loaded_weights_rebuild_the_same_network(tmp_path):
    model = tiny_classifier(seed=3).eval()
    save_checkpoint(checkpoint_of(model), tmp_path / "model.pt")
    rebuilt = build_classifier(load_checkpoint(tmp_path)).eval()
    assert rebuilt.config == model.config
    tokens, offsets = pack([np.array([0, 1, 2, 3, 4], dtype=np.uint8),
                            np.array([3, 3, 1], dtype=np.uint8)])
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens, offsets), model(tokens, offsets))


def test_run_directory_resolves_model_pt_and_last_pt(tmp_path):
    model = tiny_classifier()
    save_checkpoint(checkpoint_of(model, labels=["best-a", "best-b"]), tmp_path / "model.pt")
    save_checkpoint(checkpoint_of(model, labels=["last-a", "last-b"],
                                  training_state={"epoch": 1}), tmp_path / LAST)
    best = load_checkpoint(tmp_path)
    assert best.path == tmp_path / "model.pt"
    assert best.labels == ["best-a", "best-b"]
    assert best.training_state is None
    last = load_checkpoint(str(tmp_path), name=LAST)
    assert last.path == tmp_path / "last.pt"
    assert last.labels == ["last-a", "last-b"]
    assert last.training_state == {"epoch": 1}


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(tiny_classifier(), labels=["x", "y"]), path)
    save_checkpoint(checkpoint_of(tiny_classifier(), labels=["p", "q"]), path)
    assert load_checkpoint(path).labels == ["p", "q"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_failure_leaves_no_file(tmp_path):
    bad = checkpoint_of(tiny_classifier(), extra={"not picklable": lambda: None})
    with pytest.raises(Exception):
        save_checkpoint(bad, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


# --- Files that are not cmx checkpoints -------------------------------------------------------

class Payload:
    """Executes os.mkdir(target) when unpickled by an unsafe loader."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def write_text(path: Path) -> None:
    path.write_text("hello, this is not a checkpoint\n")


def write_fasta(path: Path) -> None:
    path.write_text(">seq1\nACGTACGT\n")


def write_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_truncated(path: Path) -> None:
    save_checkpoint(checkpoint_of(tiny_classifier()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def write_state_dict_only(path: Path) -> None:
    torch.save(tiny_classifier().state_dict(), path)


def write_dict_without_marker(path: Path) -> None:
    payload = checkpoint_of(tiny_classifier()).to_payload()
    del payload["format"]
    torch.save(payload, path)


def write_torch_pickle_of_object(path: Path) -> None:
    torch.save(Payload(path.parent / "executed"), path)


def write_plain_pickle_of_object(path: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump(Payload(path.parent / "executed"), handle)


def write_object_inside_payload(path: Path) -> None:
    payload = checkpoint_of(tiny_classifier()).to_payload()
    payload["extra"] = {"hook": Payload(path.parent / "executed")}
    torch.save(payload, path)


def write_newer_version(path: Path) -> None:
    payload = checkpoint_of(tiny_classifier()).to_payload()
    payload["format_version"] = FORMAT_VERSION + 1
    payload["cmx_version"] = "99.0"
    torch.save(payload, path)


def write_other_alphabet(path: Path) -> None:
    save_checkpoint(checkpoint_of(tiny_classifier(), alphabet="ACGU-protein"), path)


def write_pretrained_model(path: Path) -> None:
    save_checkpoint(checkpoint_of(tiny_classifier(), kind="mlm", labels=[]), path)


def write_unknown_kind(path: Path) -> None:
    save_checkpoint(checkpoint_of(tiny_classifier(), kind="masked-lm", labels=[]), path)


BAD_FILES = [
    # writer, expected_kind, words that show which check fired
    pytest.param(write_text, None, ["not a cmx checkpoint"], id="text"),
    pytest.param(write_fasta, None, ["not a cmx checkpoint"], id="fasta"),
    pytest.param(write_random_bytes, None, ["not a cmx checkpoint"], id="random-bytes"),
    pytest.param(write_empty, None, ["not a cmx checkpoint"], id="empty"),
    pytest.param(write_truncated, None, ["not a cmx checkpoint"], id="truncated"),
    pytest.param(write_tensor, None, ["format marker"], id="plain-tensor"),
    pytest.param(write_state_dict_only, None, ["format marker"], id="bare-state-dict"),
    pytest.param(write_dict_without_marker, None, ["format marker"], id="no-marker"),
    pytest.param(write_torch_pickle_of_object, None, ["not a cmx checkpoint"],
                 id="torch-pickle-object"),
    pytest.param(write_plain_pickle_of_object, None, ["not a cmx checkpoint"],
                 id="plain-pickle-object"),
    pytest.param(write_object_inside_payload, None, ["not a cmx checkpoint"],
                 id="object-inside-payload"),
    pytest.param(write_newer_version, None, ["newer", "99.0"], id="newer-format"),
    pytest.param(write_other_alphabet, None, ["alphabet", "ACGU-protein"], id="alphabet"),
    pytest.param(write_pretrained_model, "classifier",
                 ["made by `cmx pretrain`; this needs a model made by `cmx train`"],
                 id="wrong-kind"),
    pytest.param(write_unknown_kind, "classifier",
                 ["'masked-lm', which no command", "made by `cmx train`"], id="unknown-kind"),
]


# The plain pickle uses protocol 4+, about which torch's weights-only loader warns.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer, expected_kind, words", BAD_FILES)
def test_load_refuses(tmp_path, writer, expected_kind, words):
    path = tmp_path / "suspicious.pt"
    writer(path)
    with pytest.raises(CmxError) as error:
        load_checkpoint(path, expected_kind=expected_kind)
    message = error.value.message
    assert str(path) in message
    assert "Hint:" in message
    for word in words:
        assert word in message
    assert error.value.exit_code == 1
    assert not (tmp_path / "executed").exists(), "the pickle was executed"


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.pt"
    with pytest.raises(CmxError) as error:
        load_checkpoint(path)
    assert str(path) in error.value.message
    assert "Hint:" in error.value.message


def test_run_directory_without_model(tmp_path):
    with pytest.raises(CmxError) as error:
        load_checkpoint(tmp_path)
    assert str(tmp_path / "model.pt") in error.value.message
    assert "Hint:" in error.value.message


def test_short_binary_file(tmp_path):
    path = tmp_path / "short.pt"
    path.write_bytes(b"J\x00")
    with pytest.raises(CmxError, match="Hint:"):
        load_checkpoint(path)


def test_marker_without_fields(tmp_path):
    path = tmp_path / "damaged.pt"
    torch.save({"format": "cmx-checkpoint", "format_version": FORMAT_VERSION}, path)
    with pytest.raises(CmxError, match="Hint:"):
        load_checkpoint(path)


# --- build_classifier on weights that do not fit ---------------------------------------------

def other_classes(model: SequenceClassifier) -> dict:
    return tiny_classifier(n_classes=3).state_dict()


def bigger_trunk(model: SequenceClassifier) -> dict:
    return tiny_classifier(max_len=64).state_dict()


def missing_key(model: SequenceClassifier) -> dict:
    state = dict(model.state_dict())
    del state["classifier.bias"]
    return state


def unexpected_key(model: SequenceClassifier) -> dict:
    state = dict(model.state_dict())
    state["classifier.scale"] = torch.ones(1)
    return state


def empty(model: SequenceClassifier) -> dict:
    return {}


@pytest.mark.parametrize(
    "make_state", [other_classes, bigger_trunk, missing_key, unexpected_key, empty]
)
def test_build_classifier_refuses_weights_that_do_not_fit(tmp_path, make_state):
    model = tiny_classifier()
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(model, state_dict=make_state(model)), path)
    with pytest.raises(CmxError) as error:
        build_classifier(load_checkpoint(path, expected_kind="classifier"))
    assert str(path) in error.value.message
    assert "do not fit" in error.value.message
    assert "Hint:" in error.value.message


@pytest.mark.parametrize("labels", [["only-one"], ["a", "b", "c"]], ids=["fewer", "more"])
def test_build_classifier_refuses_wrong_label_count(tmp_path, labels):
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(tiny_classifier(), labels=labels), path)
    with pytest.raises(CmxError) as error:
        build_classifier(load_checkpoint(path))
    assert str(path) in error.value.message
    assert "labels" in error.value.message
    assert "Hint:" in error.value.message


def test_build_classifier_refuses_unknown_config_key(tmp_path):
    model = tiny_classifier()
    config = model.config.to_dict()
    config["encoder"]["rotation"] = "reverse"
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint_of(model, model_config=config), path)
    with pytest.raises(CmxError, match="Hint:"):
        build_classifier(load_checkpoint(path))
