"""What a supervised run's held-out metrics were computed from: ``test_predictions.tsv``.

`cmx train` and `cmx finetune` write one row per held-out item of the split their metrics
report (test, or validation when there is no test set): the split, the item's name, its
length, its true label, its group, and the probability of each class from cmx and from the
run's baseline. Probabilities are written with as many digits as a float64 needs, so
metrics recomputed from the file are the run's own (`cmx report` does this).

Columns, tab-separated, with a header: ``split name length label group`` then ``cmx_<class>``
for each class and ``baseline_<class>`` for each class. For `cmx finetune` the name is
``chrom:pos:ref>alt``, the length that of the REF window, and the classes ``0`` and ``1``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output

PREDICTIONS_NAME = "test_predictions.tsv"
#: Who made each block of probability columns.
SOURCES = ("cmx", "baseline")
_FIXED = ("split", "name", "length", "label", "group")


@dataclass
class HeldOutPredictions:
    """Held-out items and both models' class probabilities.

    Attributes:
        split: ``test`` or ``val``.
        class_names: The classes, in column order.
        names: Each item's name.
        lengths: (N,) lengths in bp.
        labels: (N,) class indices into ``class_names``.
        groups: Each item's group (``.`` for none).
        cmx: (N, classes) cmx's probabilities.
        baseline: (N, classes) the baseline's probabilities.
    """

    split: str
    class_names: list[str]
    names: Sequence[str]
    lengths: np.ndarray
    labels: np.ndarray
    groups: Sequence[str]
    cmx: np.ndarray
    baseline: np.ndarray

    def probabilities(self, source: str) -> np.ndarray:
        """``cmx`` or ``baseline`` probabilities."""
        return {"cmx": self.cmx, "baseline": self.baseline}[source]

    def write(self, path: Path) -> None:
        """Write the TSV (atomically)."""
        header = [*_FIXED, *(f"{source}_{name}" for source in SOURCES
                             for name in self.class_names)]
        with atomic_output(path) as stream:
            writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
            writer.writerow(header)
            for i, name in enumerate(self.names):
                writer.writerow([self.split, name, int(self.lengths[i]),
                                 self.class_names[self.labels[i]], self.groups[i],
                                 *(repr(float(p)) for p in self.cmx[i]),
                                 *(repr(float(p)) for p in self.baseline[i])])


def read_predictions(path: Path) -> HeldOutPredictions:
    """Read a ``test_predictions.tsv``.

    Raises:
        CmxError: When the file is missing or not a predictions table.
    """
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream, delimiter="\t"))
    except OSError as error:
        raise CmxError(f"{path}: cannot read ({error.strerror})",
                       "a run of this version of cmx writes it beside metrics.json.") from None
    header = rows[0] if rows else []
    classes = [column[len("cmx_"):] for column in header if column.startswith("cmx_")]
    expected = [*_FIXED, *(f"{s}_{c}" for s in SOURCES for c in classes)]
    if header != expected or not classes:
        raise CmxError(f"{path}: not a held-out predictions table (line 1: "
                       f"{' '.join(header[:6]) or 'empty'})",
                       f"its header is: {' '.join(_FIXED)} cmx_<class>... baseline_<class>...")
    body = rows[1:]
    index = {name: i for i, name in enumerate(classes)}
    values = np.zeros((len(body), 2 * len(classes)))
    lengths, labels = np.zeros(len(body), np.int64), np.zeros(len(body), np.int64)
    for number, row in enumerate(body, start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} columns, the header has {len(header)}")
            lengths[number - 2], labels[number - 2] = int(row[2]), index[row[3]]
            values[number - 2] = [float(v) for v in row[len(_FIXED):]]
        except (ValueError, KeyError) as error:
            raise CmxError(f"{path}: line {number} ({row[1] if len(row) > 1 else ''}) does not "
                           f"fit the header: {error}",
                           "the file was changed after the run wrote it; rerun the run.") from None
    return HeldOutPredictions(
        split=body[0][0] if body else "test", class_names=classes,
        names=[row[1] for row in body], lengths=lengths, labels=labels,
        groups=[row[4] for row in body],
        cmx=values[:, :len(classes)], baseline=values[:, len(classes):])
