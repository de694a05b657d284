"""Draws a report's figures as PNG images, from their :class:`FigureData` rows only.

matplotlib is used through its object interface (``Figure`` and the Agg canvas), with no
pyplot state and no display. Runs are told apart by colour and models by line style: cmx
solid, its baseline dashed.
"""
from __future__ import annotations

import io

from matplotlib.figure import Figure

from cmx_cli.metrics.tables import format_metric
from cmx_cli.report.figures import FigureData

_DPI = 100
#: Line style of each model in the pretraining figures.
_PRETRAINING_LINES = {"cmx": "-", "unigram": ":", "Markov": "--"}
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#7f7f7f")


def _style(figure: FigureData, run: str, model: str) -> dict:
    runs = list(dict.fromkeys(figure.column("run")))
    return {"color": _COLOURS[runs.index(run) % len(_COLOURS)],
            "linestyle": "-" if model == "cmx" else "--"}


def _label(run: str, model: str, several_runs: bool) -> str:
    return f"{run}: {model}" if several_runs else model


def png_bytes(canvas: Figure) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    canvas.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _training(figure: FigureData) -> Figure:
    panels = [("loss", ("train_loss", "val_loss")),
              ("validation", ("val_roc_auc", "val_bits_per_base")),
              ("learning rate", ("learning_rate",))]
    canvas = Figure(figsize=(13, 3.6))
    axes = canvas.subplots(1, 3)
    several = len(set(figure.column("run"))) > 1
    for ax, (title, quantities) in zip(axes, panels):
        for (run, quantity), rows in figure.groups("run", "quantity"):
            if quantity not in quantities:
                continue
            style = _style(figure, run, "cmx")
            style["linestyle"] = "--" if quantity == "val_loss" else "-"
            ax.plot([row[2] for row in rows], [row[4] for row in rows], marker=".",
                    label=_label(run, quantity, several), **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    return canvas


def _curves(figure: FigureData) -> Figure:
    metric, x_name, y_name = figure.columns[4], figure.columns[7], figure.columns[8]
    canvas = Figure(figsize=(6.4, 5.4))
    ax = canvas.subplots()
    several = len(set(figure.column("run"))) > 1
    for (run, model, cls), rows in figure.groups("run", "model", "class"):
        value, low, high = rows[0][4:7]
        name = model if len({row[3] for row in figure.rows}) <= 1 else f"{model}, class {cls}"
        label = (f"{_label(run, name, several)}: "
                 f"{format_metric(value, None if low is None else [low, high])}")
        style = _style(figure, run, model)
        x = [row[7] for row in rows]
        ax.plot(x, [row[8] for row in rows], label=label, **style)
        ax.fill_between(x, [row[9] for row in rows], [row[10] for row in rows],
                        color=style["color"], alpha=0.12, linewidth=0)
    if figure.name == "roc":
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x_name.replace("_", " "))
    ax.set_ylabel(y_name.replace("_", " "))
    ax.set_title(f"{figure.title}\n{metric.replace('_', '-').upper()} [95% interval], "
                 "bands: 95% bootstrap")
    ax.legend(fontsize=7, loc="lower right" if figure.name == "roc" else "lower left")
    return canvas


def _intervals(figure: FigureData, category: str) -> Figure:
    """Points with 95% intervals per category (length bin, group), a line per run and model."""
    categories = list(dict.fromkeys(figure.column(category)))
    canvas = Figure(figsize=(max(6.4, 0.7 * len(categories) + 2), 4.6))
    ax = canvas.subplots()
    several = len(set(figure.column("run"))) > 1
    columns = figure.columns
    value_at, low_at, high_at = (columns.index(name) for name in
                                 ("roc_auc", "roc_auc_low", "roc_auc_high"))
    groups = list(figure.groups("run", "model"))
    for number, ((run, model), rows) in enumerate(groups):
        shift = (number - (len(groups) - 1) / 2) * 0.08
        points = [(categories.index(row[columns.index(category)]) + shift, row[value_at],
                   row[low_at], row[high_at]) for row in rows if row[value_at] is not None]
        if not points:
            continue
        x, y = [p[0] for p in points], [p[1] for p in points]
        errors = [[p[1] - p[2] if p[2] is not None else 0 for p in points],
                  [p[3] - p[1] if p[3] is not None else 0 for p in points]]
        style = _style(figure, run, model)
        ax.errorbar(x, y, yerr=errors, marker="o" if model == "cmx" else "s", capsize=3,
                    label=_label(run, model, several), **style)
    ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30 if len(categories) > 6 else 0)
    ax.set_xlabel("length percentile" if category == "percentiles" else category)
    ax.set_ylabel("ROC-AUC")
    ax.set_title(f"{figure.title}\n(bars: 95% bootstrap interval)")
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=7)
    return canvas


def _pretraining(figure: FigureData) -> Figure:
    canvas = Figure(figsize=(6.4, 4.4))
    ax = canvas.subplots()
    several = len(set(figure.column("run"))) > 1
    for (run, model), rows in figure.groups("run", "model"):
        style = _style(figure, run, "cmx")
        style["linestyle"] = _PRETRAINING_LINES[model]
        ax.plot([row[2] for row in rows], [row[3] for row in rows],
                marker="." if model == "cmx" else None, label=_label(run, model, several),
                **style)
    ax.set_xlabel("step")
    ax.set_ylabel("bits per base (MASK positions)")
    ax.set_title(figure.title)
    ax.legend(fontsize=7)
    return canvas


def _pretraining_detail(figure: FigureData) -> Figure:
    canvas = Figure(figsize=(12, 4.2))
    axes = canvas.subplots(1, 2)
    several = len(set(figure.column("run"))) > 1
    titles = {"by_corruption": "by corruption of the selected base",
              "by_position": "MASK positions by place in the sequence"}
    for ax, split_by in zip(axes, titles):
        categories: list = []
        for (run, model, kind), rows in figure.groups("run", "model", "split_by"):
            if kind != split_by:
                continue
            points = [(row[3], row[5]) for row in rows if row[5] is not None]
            categories += [category for category, _ in points if category not in categories]
            style = _style(figure, run, "cmx")
            style["linestyle"] = _PRETRAINING_LINES[model]
            ax.plot([categories.index(c) for c, _ in points], [v for _, v in points],
                    marker="o" if model == "cmx" else None,
                    label=_label(run, model, several), **style)
        ax.set_xticks(range(len(categories)))
        ax.set_xticklabels(categories, rotation=30 if len(categories) > 4 else 0)
        ax.set_title(titles[split_by])
        ax.set_ylabel("bits per base")
        if ax.lines:
            ax.legend(fontsize=7)
    canvas.suptitle(figure.title)
    return canvas


_DRAW = {"training": _training, "roc": _curves, "pr": _curves,
         "length": lambda figure: _intervals(figure, "percentiles"),
         "groups": lambda figure: _intervals(figure, "group"), "pretraining": _pretraining,
         "pretraining_detail": _pretraining_detail}


def draw(figure: FigureData) -> bytes:
    """The figure as PNG bytes."""
    return png_bytes(_DRAW[figure.name](figure))

