"""The numbers behind each figure of a report, as tables (one row per plotted point).

Each function turns the runs into one :class:`FigureData`; :mod:`cmx_cli.report.plots` draws
exactly these rows, and the report writes them as a TSV beside the figure. AUCs, their
intervals and the length bins are copied from the runs' metrics.json; curves and their
bands are computed from test_predictions.tsv.

Curves: ROC as the true-positive rate on a grid of false-positive rates (linear between
the curve's corners, as ``sklearn.metrics.roc_curve`` draws it), PR as the interpolated
precision (the best precision at that recall or more) on a grid of recalls. Bands are the
2.5th and 97.5th percentiles over :data:`CURVE_RESAMPLES` stratified bootstrap resamples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from cmx_cli.metrics.bootstrap import stratified_resamples
from cmx_cli.metrics.classification import binary_metrics
from cmx_cli.report.runs import ReportedRun

#: Resamples behind each curve's band.
CURVE_RESAMPLES = 200
#: Points on each curve.
GRID = np.linspace(0.0, 1.0, 101)
#: How figures name the baselines.
BASELINE_NAMES = {"train": "k-mer baseline", "finetune": "flank baseline"}


@dataclass
class FigureData:
    """One figure's rows.

    Attributes:
        name: File name stem (``roc`` gives ``roc.png`` and ``roc.tsv``).
        title: What the figure shows.
        columns: Column names.
        rows: One list of values per plotted point.
    """

    name: str
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def column(self, name: str) -> list:
        """All values of one column."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]

    def groups(self, *names: str) -> Iterator[tuple[tuple, list[list]]]:
        """The rows grouped by the values of ``names`` columns, in first-seen order."""
        indices = [self.columns.index(name) for name in names]
        seen: dict[tuple, list] = {}
        for row in self.rows:
            seen.setdefault(tuple(row[i] for i in indices), []).append(row)
        yield from seen.items()

    def tsv(self) -> str:
        """The rows as tab-separated text with a header ("" for missing values)."""
        def cell(value) -> str:
            if value is None:
                return ""
            return repr(float(value)) if isinstance(value, float) else str(value)
        lines = ["\t".join(self.columns)]
        lines += ["\t".join(cell(value) for value in row) for row in self.rows]
        return "\n".join(lines) + "\n"


def training_curves(runs: list[ReportedRun]) -> FigureData:
    """Training loss, validation loss and metric, and learning rate by step, from log.tsv."""
    figure = FigureData("training", "Training", ["run", "epoch", "step", "quantity", "value"])
    for run in runs:
        for row in run.log:
            for quantity in ("train_loss", "val_loss", "val_roc_auc", "val_bits_per_base",
                             "learning_rate"):
                if row.get(quantity) is not None:
                    figure.rows.append([run.label, int(row["epoch"]), int(row["step"]), quantity,
                                        row[quantity]])
    return figure


def _curve_classes(run: ReportedRun) -> list[int]:
    """Class 1 for a binary run; every class, one-vs-rest, otherwise."""
    count = len(run.predictions.class_names)
    return [1] if count == 2 else list(range(count))


def _band(labels: np.ndarray, scores: np.ndarray, curve) -> tuple[np.ndarray, np.ndarray]:
    resampled = np.stack([curve(labels[rows], scores[rows])
                          for rows in stratified_resamples(labels, CURVE_RESAMPLES)])
    return np.percentile(resampled, 2.5, axis=0), np.percentile(resampled, 97.5, axis=0)


def _roc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    fpr, tpr, _ = roc_curve(labels, scores)
    return np.interp(GRID, fpr, tpr)


def _pr(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    precision, recall, _ = precision_recall_curve(labels, scores)
    order = np.argsort(recall, kind="stable")
    # Interpolated precision: the best precision at this recall or more.
    best = np.maximum.accumulate(precision[order][::-1])[::-1]
    first = np.searchsorted(recall[order], GRID, side="left").clip(max=len(order) - 1)
    return best[first]


def _ranking_curves(runs: list[ReportedRun], name: str, title: str, metric: str,
                    axes: tuple[str, str], curve) -> FigureData:
    x_name, y_name = axes
    figure = FigureData(name, title, ["run", "split", "model", "class", metric, f"{metric}_low",
                                      f"{metric}_high", x_name, y_name, f"{y_name}_low",
                                      f"{y_name}_high"])
    for run in runs:
        predictions = run.predictions
        if predictions is None or len(set(predictions.labels.tolist())) < 2:
            continue
        split = predictions.split
        for source, key in (("cmx", "model"), (BASELINE_NAMES[run.kind], run.baseline_key)):
            probabilities = predictions.probabilities("cmx" if key == "model" else "baseline")
            for cls in _curve_classes(run):
                positive = predictions.labels == cls
                if positive.all() or not positive.any():
                    continue  # a class the held-out set lacks has no curve
                scores = probabilities[:, cls]
                if len(predictions.class_names) == 2:
                    value = run.metrics[key][split][metric]
                    low, high = run.metrics[key][split][f"{metric}_ci"]
                else:  # one-vs-rest of one class, from the predictions
                    one_class = binary_metrics(positive.astype(np.int64), scores, intervals=True)
                    value = one_class[metric]
                    low, high = one_class[f"{metric}_ci"]
                y = curve(positive, scores)
                y_low, y_high = _band(positive, scores, curve)
                for point in range(len(GRID)):
                    figure.rows.append([run.label, split, source,
                                        predictions.class_names[cls], value, low, high,
                                        float(GRID[point]), float(y[point]),
                                        float(y_low[point]), float(y_high[point])])
    return figure


def roc_curves(runs: list[ReportedRun]) -> FigureData:
    """ROC curves of cmx and its baseline on each run's held-out set, with bands."""
    return _ranking_curves(runs, "roc", "ROC curves, held-out set", "roc_auc",
                           ("false_positive_rate", "true_positive_rate"), _roc)


def pr_curves(runs: list[ReportedRun]) -> FigureData:
    """Precision-recall curves of cmx and its baseline on each run's held-out set."""
    return _ranking_curves(runs, "pr", "Precision-recall curves, held-out set", "pr_auc",
                           ("recall", "precision"), _pr)


def length_bins(runs: list[ReportedRun]) -> FigureData:
    """ROC-AUC by length percentile (the paper's Figure 5), from metrics.json."""
    figure = FigureData("length", "ROC-AUC by length percentile, held-out set",
                        ["run", "split", "model", "percentiles", "min_length", "max_length", "n",
                         "roc_auc", "roc_auc_low", "roc_auc_high"])
    for run in runs:
        if run.kind != "train":
            continue
        for source, key in (("cmx", "model"), (BASELINE_NAMES[run.kind], run.baseline_key)):
            for split in ("test", "val"):
                bins = run.metrics[key].get(f"{split}_by_length")
                if bins is None:
                    continue
                for row in bins:
                    low, high = row.get("roc_auc_ci") or (None, None)
                    figure.rows.append([run.label, split, source, row["percentiles"],
                                        row["min_length"], row["max_length"], row["n"],
                                        row["roc_auc"], low, high])
                break
    return figure


def group_metrics(runs: list[ReportedRun]) -> FigureData:
    """ROC-AUC per group of a fine-tuned model with groups, from metrics.json."""
    figure = FigureData("groups", "ROC-AUC per group, held-out set",
                        ["run", "split", "model", "group", "n", "roc_auc", "roc_auc_low",
                         "roc_auc_high"])
    for run in runs:
        if run.kind != "finetune":
            continue
        for split in ("test", "val"):
            if f"{split}_by_group" not in run.metrics["model"]:
                continue
            for source, key in (("cmx", "model"), (BASELINE_NAMES[run.kind], run.baseline_key)):
                for group, values in run.metrics[key][f"{split}_by_group"].items():
                    low, high = values.get("roc_auc_ci") or (None, None)
                    figure.rows.append([run.label, split, source, group, values["n"],
                                        values["roc_auc"], low, high])
            break
    return figure


def pretraining_curves(runs: list[ReportedRun]) -> FigureData:
    """Validation bits per base over pretraining, beside the unigram and Markov baselines."""
    figure = FigureData("pretraining", "Masked-base pretraining, validation",
                        ["run", "model", "step", "bits_per_base"])
    for run in runs:
        if run.kind != "pretrain":
            continue
        steps = [int(row["step"]) for row in run.log if row.get("val_bits_per_base") is not None]
        for row in run.log:
            if row.get("val_bits_per_base") is not None:
                figure.rows.append([run.label, "cmx", int(row["step"]), row["val_bits_per_base"]])
        ends = [min(steps), max(steps)] if steps else [0]
        for name, key in (("unigram", "unigram"), ("Markov", "markov")):
            for step in ends:
                figure.rows.append([run.label, name, step, run.metrics[key]["bits_per_base"]])
    return figure


def pretraining_detail(runs: list[ReportedRun]) -> FigureData:
    """The final validation bits per base of cmx and both baselines by corruption type and
    by where a MASK position lies in its sequence, from metrics.json."""
    figure = FigureData("pretraining_detail", "Masked-base pretraining, validation, in detail",
                        ["run", "model", "split_by", "category", "n", "bits_per_base"])
    for run in runs:
        if run.kind != "pretrain":
            continue
        for name, key in (("cmx", "model"), ("unigram", "unigram"), ("Markov", "markov")):
            for split_by in ("by_corruption", "by_position"):
                for category, values in run.metrics[key].get(split_by, {}).items():
                    figure.rows.append([run.label, name, split_by, category, values["n"],
                                        values["bits_per_base"]])
    return figure


#: Every figure a report can hold, in report order.
FIGURES = (training_curves, roc_curves, pr_curves, length_bins, group_metrics,
           pretraining_curves, pretraining_detail)


def report_figures(runs: list[ReportedRun]) -> list[FigureData]:
    """The figures that have data for these runs."""
    return [figure for figure in (make(runs) for make in FIGURES) if figure.rows]
