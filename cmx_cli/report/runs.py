"""The finished run directories a report reads: config, metrics, log and held-out predictions.

A report reads only what a run wrote (DESIGN.md, "Checkpoints"): metrics.json, log.tsv and,
for `cmx train` and `cmx finetune`, test_predictions.tsv. The run's kind comes from its
metrics: a k-mer baseline means `cmx train`, a flank baseline `cmx finetune`, a Markov
baseline `cmx pretrain`.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cmx_cli.errors import CmxError
from cmx_cli.io.predictions import PREDICTIONS_NAME, HeldOutPredictions, read_predictions
from cmx_cli.io.run_dir import LOG_NAME, METRICS_NAME

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
    """log.tsv as one dict per epoch (numbers as floats, empty cells as None)."""
    with open(path, newline="", encoding="utf-8") as stream:
        return [{key: _number(value) for key, value in row.items()}
                for row in csv.DictReader(stream, delimiter="\t")]


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
        predictions = read_predictions(path / PREDICTIONS_NAME)
    return ReportedRun(str(path), kind, metrics, log, predictions)
