"""`cmx report`: figures of how runs trained and how good they are, in one HTML file.

Flow: read each finished run directory (:mod:`cmx_cli.report.runs`) → compute each figure's
rows (:mod:`cmx_cli.report.figures`) → draw them (:mod:`cmx_cli.report.plots`) → write one
self-contained HTML file (PNGs embedded, no JavaScript, nothing fetched), or one PNG per
figure; each figure's rows go to a TSV beside it. The files are written as one set: each
under a temporary name first, and renamed only when all of them are complete, so a failed
write (a full disk, say) leaves none of them and the previous report as it was.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cmx_cli import __version__
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.output import check_not_input, write_as_set
from cmx_cli.io.run_dir import RUN_FILES
from cmx_cli.metrics.tables import format_metric
from cmx_cli.report.figures import FigureData, report_figures
from cmx_cli.report.plots import draw
from cmx_cli.report.runs import ReportedRun, read_run
from cmx_cli.training.job import held_out_split

FORMATS = (".html", ".png")


@dataclass(frozen=True)
class ReportConfig:
    """`cmx report`'s inputs and output."""

    runs: tuple[str, ...]
    output: str


@dataclass
class ReportResult:
    """What was written."""

    files: list[Path]
    summary: str


def figure_path(output: Path, figure: str, suffix: str) -> Path:
    """Where a figure's file goes: ``report.html`` → ``report.roc.tsv``."""
    return output.with_name(f"{output.stem}.{figure}{suffix}")


def run(config: ReportConfig, reporter: Optional[Reporter] = None) -> ReportResult:
    """Write the report of ``config.runs`` to ``config.output``.

    Raises:
        CmxError: For a directory that is not a finished run, or an output that would
            replace one of the runs' files.
    """
    reporter = reporter or Reporter(quiet=True)
    output = Path(config.output)
    if output.suffix.lower() not in FORMATS:
        raise CmxError(f"{output}: a report is written as .html or .png",
                       "name the output report.html (one file) or report.png (one PNG per "
                       "figure).")
    runs = [read_run(Path(path)) for path in config.runs]
    figures = report_figures(runs)
    writes = {figure_path(output, figure.name, ".tsv"): figure.tsv().encode()
              for figure in figures}
    images = {figure.name: draw(figure) for figure in figures}
    if output.suffix.lower() == ".html":
        writes[output] = _html(runs, figures, images, output).encode()
    else:
        writes |= {figure_path(output, name, ".png"): image for name, image in images.items()}
    inputs = [Path(run.label) / name for run in runs for name in RUN_FILES]
    for path in writes:
        check_not_input(path, *inputs)
    write_as_set(writes, "the report's")
    main = output if output.suffix.lower() == ".html" else figure_path(output, "*", ".png")
    summary = (f"cmx report: {len(figures)} figure(s) of {len(runs)} run(s) in {main}; "
               f"their data in {figure_path(output, '*', '.tsv')}")
    return ReportResult(list(writes), summary)


def _headline(run: ReportedRun) -> list[str]:
    """A run's held-out result in words, for the report's table."""
    metrics = run.metrics
    if run.kind == "pretrain":
        def bits(key: str) -> str:
            value = metrics[key]["bits_per_base"]
            return "n/a" if value is None else f"{value:.3f}"
        return ["validation", f"{metrics['model']['n']:,} masked bases",
                f"{bits('model')} bits/base", f"unigram {bits('unigram')}, Markov {bits('markov')}"]
    split = held_out_split(metrics)
    if split not in metrics["model"]:
        return ["–", "no held-out data", "–", "–"]

    def auc(values: dict) -> str:
        if values.get("roc_auc") is None:
            return "n/a"
        return format_metric(values["roc_auc"], values.get("roc_auc_ci"))

    return [split, f"{metrics['model'][split]['n']:,}", f"ROC-AUC {auc(metrics['model'][split])}",
            f"baseline {auc(metrics[run.baseline_key][split])}"]


def _html(runs: list[ReportedRun], figures: list[FigureData], images: dict[str, bytes],
          output: Path) -> str:
    """The report page: a table of the runs, then every figure with its TSV's name."""
    escape = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in
                         [run.label, f"cmx {run.kind}", *_headline(run)]) + "</tr>"
        for run in runs)
    sections = "".join(
        f"<h2>{escape(figure.title)}</h2>"
        f'<img alt="{escape(figure.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(images[figure.name]).decode()}">'
        f"<p>Data: <code>{escape(figure_path(output, figure.name, '.tsv').name)}</code></p>"
        for figure in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cmx report</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
img{{max-width:100%}}</style></head><body>
<h1>cmx report</h1>
<table><tr><th>run</th><th>command</th><th>held out</th><th>n</th><th>cmx</th>
<th>baseline</th></tr>{rows}</table>
<p>Intervals in brackets and bands around curves: 95% stratified bootstrap. Written by cmx
{escape(__version__)}.</p>
{sections}
</body></html>
"""
