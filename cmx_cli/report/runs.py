"""The finished run directories a report reads: config, metrics, log and held-out predictions.

A report reads only what a run wrote (DESIGN.md, "Checkpoints"): metrics.json, log.tsv and,
for `cmx train` and `cmx finetune`, test_predictions.tsv. The run's kind comes from its
metrics: a k-mer baseline means `cmx train`, a flank baseline `cmx finetune`, a Markov
baseline `cmx pretrain`.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from cmx_cli.errors import CmxError
from cmx_cli.io.predictions import PREDICTIONS_NAME, HeldOutPredictions, read_predictions
from cmx_cli.io.run_dir import LOG_NAME, METRICS_NAME

LOG = logging.getLogger("cmx_cli")
#: Columns every log.tsv row must have, as numbers, for the training curves.
_LOG_KEYS = ("epoch", "step")
#: metrics.json key of each kind's baseline.
BASELINE_KEYS = {"train": "kmer_baseline", "finetune": "flank_baseline", "pretrain": "markov"}


@dataclass
class ReportedRun:
    """One run directory, read for a report.

    Attributes:
        label: How figures name the run (its directory, as given).
        kind: ``train``, ``finetune`` or ``pretrain``.
        metrics: metrics.json.
        log: log.tsv rows, one per epoch, with numbers parsed.
        predictions: The held-out predictions (None for pretrain).
    """

    label: str
    kind: str
    metrics: dict
    log: list[dict]
    predictions: Optional[HeldOutPredictions]

    @property
    def baseline_key(self) -> str:
        """The baseline's key in metrics.json."""
        return BASELINE_KEYS[self.kind]


def _number(value: str):
    if value in ("True", "False"):
        return value == "True"
    try:
        return float(value)
    except ValueError:
        return None if value in ("", "nan") else value


def read_log(path: Path) -> list[dict]:
    """log.tsv as one dict per epoch (numbers as floats, empty cells as None).

    A damaged log (cut short by a full disk or a killed process, or overwritten) does not
    stop a report: its damaged lines are left out of the training curves, with a warning on
    the ``cmx_cli`` logger that names the file and the first such line.
    """
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            lines = list(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not a text table"
        LOG.warning(f"{path}: cannot be read ({reason}); the report has no training curves "
                    "of this run")
        return []
    header = lines[0] if lines else []
    if not all(key in header for key in _LOG_KEYS):
        LOG.warning(f"{path}: line 1 is not the header of a run's log "
                    f"({' '.join(header[:4]) or 'the file is empty'}); the report has no "
                    "training curves of this run")
        return []
    rows, damaged = [], []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        row = {key: _number(value) for key, value in zip(header, fields)}
        if len(fields) != len(header):
            damaged.append(f"line {number} has {len(fields)} of {len(header)} columns")
        elif any(type(row[key]) is not float for key in _LOG_KEYS):
            damaged.append(f"line {number} has no epoch or step number")
        else:
            rows.append(row)
    if damaged:
        LOG.warning(f"{path}: {damaged[0]} (cut short or edited); the training curves leave "
                    f"out {len(damaged)} damaged line(s)")
    elif not rows:
        LOG.warning(f"{path}: holds no epoch (cut short?); the report has no training curves "
                    "of this run")
    return rows


def read_held_out(path: Path) -> HeldOutPredictions:
    """A run's test_predictions.tsv, its probabilities checked.

    Raises:
        CmxError: The file is not a UTF-8 text table, does not fit its header, or holds a
            probability that is not a number from 0 to 1 (naming the line).
    """
    try:
        predictions = read_predictions(path)
    except (UnicodeDecodeError, csv.Error) as error:
        reason = f"{error}" if isinstance(error, csv.Error) else "bytes that are not UTF-8"
        raise CmxError(f"{path}: not a held-out predictions table ({reason})",
                       "the file was damaged or replaced after the run wrote it; rerun the "
                       "run.") from None
    values = np.hstack([predictions.cmx, predictions.baseline])
    valid = np.isfinite(values) & (values >= 0) & (values <= 1)
    if not valid.all():
        row, column = (int(index[0]) for index in np.nonzero(~valid))
        raise CmxError(f"{path}: line {row + 2} ({predictions.names[row]}) holds a probability "
                       f"that is not a number from 0 to 1 ({values[row, column]})",
                       "the file was changed after the run wrote it; rerun the run.")
    return predictions


def read_run(path: Path) -> ReportedRun:
    """Read a finished run directory.

    Raises:
        CmxError: When the directory is not a finished run of `cmx train`, `pretrain` or
            `finetune` of this version.
    """
    path = Path(path)
    metrics_path = path / METRICS_NAME
    if not metrics_path.is_file():
        raise CmxError(f"{path}: no {METRICS_NAME}; not a finished run directory",
                       "give the --out directory of a finished cmx train, pretrain or finetune "
                       "run.")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CmxError(f"{metrics_path}: not readable JSON ({error})",
                       "the run was interrupted while writing it, or the file was edited; "
                       "rerun the run.") from None
    kinds = [kind for kind, key in BASELINE_KEYS.items() if key in metrics]
    if len(kinds) != 1:
        raise CmxError(f"{metrics_path}: not the metrics of a cmx train, pretrain or finetune run",
                       "give a run directory written by one of those commands.")
    kind = kinds[0]
    log = read_log(path / LOG_NAME) if (path / LOG_NAME).is_file() else []
    predictions = None
    if kind != "pretrain" and any(split in metrics["model"] for split in ("val", "test")):
        if not (path / PREDICTIONS_NAME).is_file():
            raise CmxError(f"{path}: no {PREDICTIONS_NAME}",
                           "earlier versions of cmx did not keep held-out predictions; rerun the "
                           "run with this version to report it.")
        predictions = read_held_out(path / PREDICTIONS_NAME)
    return ReportedRun(str(path), kind, metrics, log, predictions)
