"""Checkpoints: one self-describing file per model, loadable with ``weights_only=True``.

A checkpoint holds plain data only: the state dict, the network's config as a dict, the
alphabet, the label names, the cmx version and the kind of model. The network is rebuilt
from the stored config, never from flags (DESIGN.md, "Checkpoints"). ``last.pt`` also holds
the optimizer and scheduler state and the epoch counters that ``--resume`` needs.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from cmx_cli import __version__
from cmx_cli.alphabet import ALPHABET_NAME
from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output

#: The kinds of model, each made by one command (its head is in :mod:`cmx_cli.tasks`).
CLASSIFIER, MASKED_BASES, VARIANT_CLASSIFIER = "classifier", "mlm", "variant-classifier"
#: The command that makes each kind of model, as users know them.
MADE_BY = {CLASSIFIER: "cmx train", MASKED_BASES: "cmx pretrain",
           VARIANT_CLASSIFIER: "cmx finetune"}

FORMAT = "cmx-checkpoint"
#: 2: the encoder of a classifier and of a variant classifier is ``encoder``, not ``trunk``
#: (files of version 1 are renamed when read).
FORMAT_VERSION = 2
BEST = "model.pt"
LAST = "last.pt"


@dataclass
class Checkpoint:
    """What a checkpoint file holds.

    Attributes:
        kind: The model kind, e.g. ``classifier``.
        model_config: The network config as a plain dict.
        state_dict: The network's weights.
        labels: Class names in output order (empty for models without classes).
        extra: Kind-specific plain data (e.g. masking settings).
        training_state: Optimizer, scheduler and counters; only in ``last.pt``.
        cmx_version: Version of cmx that wrote it.
        alphabet: Name of the token alphabet.
        path: Where it was read from.
    """

    kind: str
    model_config: dict
    state_dict: dict
    labels: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    training_state: Optional[dict] = None
    cmx_version: str = __version__
    alphabet: str = ALPHABET_NAME
    path: Optional[Path] = None

    def to_payload(self) -> dict:
        """Plain dict for ``torch.save``."""
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cmx_version": self.cmx_version,
            "kind": self.kind,
            "alphabet": self.alphabet,
            "model_config": self.model_config,
            "labels": list(self.labels),
            "extra": self.extra,
            "state_dict": self.state_dict,
        }
        if self.training_state is not None:
            payload["training_state"] = self.training_state
        return payload


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write a checkpoint atomically (temporary file, flushed, then renamed), so that a
    failed write leaves the previous checkpoint as it was.

    The checkpoint is serialised in memory first: torch reports a failed write to a file as
    a bare ``RuntimeError``, while writing the bytes ourselves gives the operating system's
    error (a full device, say) to :func:`~cmx_cli.io.output.atomic_output`.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint.to_payload(), buffer)
    with atomic_output(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_plain_data(path: Path, what: str, hint: str) -> Any:
    """Read a file written with ``torch.save`` of plain data, safely and quietly.

    ``weights_only=True`` refuses anything but tensors and plain containers. torch's
    warnings about foreign files, and its advice to load them unsafely, are not for cmx's
    users: a file that does not load is one error line that names it.

    Raises:
        CmxError: ``"{path}: not {what} (...)"`` with ``hint``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types on foreign files
        raise CmxError(f"{path}: not {what} ({type(error).__name__})", hint) from error


def resolve_checkpoint_path(path: Union[str, Path], name: str = BEST) -> Path:
    """A run directory means its ``model.pt`` (or ``name``); a file means itself."""
    path = Path(path)
    return path / name if path.is_dir() else path


def model_files(path: Union[str, Path]) -> list[Path]:
    """What ``--model`` names: a checkpoint file, or every file of a run directory (for
    checks that no output replaces one of them)."""
    path = Path(path)
    return sorted(entry for entry in path.iterdir() if entry.is_file()) if path.is_dir() else [path]


def load_checkpoint(
    path: Union[str, Path], expected_kind: Optional[str] = None, name: str = BEST
) -> Checkpoint:
    """Read a checkpoint safely (``torch.load(weights_only=True)``).

    Args:
        path: A checkpoint file or a run directory.
        expected_kind: Raise unless the checkpoint is of this kind.
        name: File to read inside a run directory.

    Raises:
        CmxError: When the file is missing, is not a cmx checkpoint, or is of another kind.
    """
    file = resolve_checkpoint_path(path, name)
    if not file.is_file():
        raise CmxError(
            f"{file}: no such checkpoint",
            "pass a run directory made by `cmx train` (it holds model.pt) or a .pt file.",
        )
    payload = load_plain_data(
        file, "a cmx checkpoint",
        "pass the model.pt of a cmx run directory; cmx loads no other model files.")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CmxError(
            f"{file}: not a cmx checkpoint (no cmx format marker)",
            "pass the model.pt of a cmx run directory; cmx loads no other model files.",
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CmxError(
            f"{file}: written by a newer cmx ({payload.get('cmx_version')})",
            "upgrade cmx to read it.",
        )
    missing = sorted({"kind", "model_config", "state_dict"} - set(payload))
    if missing:
        raise CmxError(
            f"{file}: damaged cmx checkpoint (no {', '.join(missing)})",
            "retrain, or use another run's model.pt.",
        )
    checkpoint = Checkpoint(
        kind=payload["kind"],
        model_config=payload["model_config"],
        state_dict=_current_names(payload["state_dict"], payload.get("format_version", 0)),
        labels=list(payload.get("labels", [])),
        extra=dict(payload.get("extra", {})),
        training_state=payload.get("training_state"),
        cmx_version=payload.get("cmx_version", "unknown"),
        alphabet=payload.get("alphabet", ALPHABET_NAME),
        path=file,
    )
    if checkpoint.alphabet != ALPHABET_NAME:
        raise CmxError(
            f"{file}: uses the alphabet {checkpoint.alphabet!r}, this cmx uses {ALPHABET_NAME!r}",
            "use the cmx version that wrote it.",
        )
    if expected_kind is not None and checkpoint.kind != expected_kind:
        raise CmxError(
            f"{file}: is {_kind_described(checkpoint.kind)}; "
            f"this needs {_kind_described(expected_kind)}",
            "check which run directory you passed (--model, or --init).",
        )
    return checkpoint


def _kind_described(kind: str) -> str:
    """'a model made by `cmx train`', or the kind's own name when no command makes it."""
    if kind in MADE_BY:
        return f"a model made by `{MADE_BY[kind]}`"
    return f"a model of kind {kind!r}, which no command of this cmx makes"


def _current_names(state_dict: dict, format_version: int) -> dict:
    """The weights under this version's names (version 1 called the encoder ``trunk``)."""
    if format_version >= 2:
        return state_dict
    return {("encoder." + key[len("trunk."):] if key.startswith("trunk.") else key): value
            for key, value in state_dict.items()}


def build_model(checkpoint: Checkpoint, config_type, model_type):
    """Rebuild a network from its checkpoint's stored config and load its weights.

    Args:
        checkpoint: A loaded checkpoint.
        config_type: The config dataclass, with ``from_dict``.
        model_type: The network class, built from that config.

    Raises:
        CmxError: When the stored config cannot be built or the weights do not fit it.
    """
    try:
        config = config_type.from_dict(checkpoint.model_config)
    except (ValueError, KeyError, TypeError) as error:
        raise CmxError(
            f"{checkpoint.path}: the stored model config is not one this cmx can build ({error})",
            "use the cmx version that wrote it, or retrain.",
        ) from error
    model = model_type(config)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise CmxError(
            f"{checkpoint.path}: the weights do not fit the stored model config ({first_line})",
            "the checkpoint is damaged or was edited; retrain or use another run.",
        ) from error
    return model
