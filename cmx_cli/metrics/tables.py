"""How metrics are shown: rich tables of models side by side, "–" where a metric is undefined."""
from __future__ import annotations

from typing import Optional

from rich.table import Table

from cmx_cli.metrics.bootstrap import RESAMPLES

#: Shown in tables where a metric is undefined.
MISSING = "–"
#: Says what the bracketed intervals are.
INTERVAL_CAPTION = f"[low, high]: 95% bootstrap interval ({RESAMPLES:,} stratified resamples)"


def format_metric(value: Optional[float], interval: Optional[list] = None) -> str:
    """Three decimals, or a dash where the metric is undefined; with its 95% interval in
    brackets when there is one."""
    if value is None:
        return MISSING
    return f"{value:.3f}" + ("" if interval is None else
                             f" [{interval[0]:.3f}, {interval[1]:.3f}]")


def metrics_table(title: str, rows: dict[str, dict]) -> Table:
    """Build a table with one row per model, e.g. "cmx" and "k-mer baseline".

    Args:
        title: Table title, e.g. the split evaluated.
        rows: Model name to a :func:`classification_metrics` result.

    Returns:
        A rich table with columns model, n, ROC-AUC, PR-AUC, accuracy, balanced accuracy.
    """
    return comparison_table(title, rows, (("ROC-AUC", "roc_auc"), ("PR-AUC", "pr_auc"),
                                          ("accuracy", "accuracy"),
                                          ("balanced accuracy", "balanced_accuracy")))


def comparison_table(title: str, rows: dict[str, dict], columns) -> Table:
    """One row per model, one column per metric, n first; "–" where a metric is undefined,
    and a metric's 95% bootstrap interval (key ``<metric>_ci``) in brackets beside it.

    Args:
        title: Table title.
        rows: Model name to its metrics dict (with an ``n`` key).
        columns: (header, metric key) pairs.

    Returns:
        A rich table.
    """
    table = Table(title=title)
    if any(metrics.get(f"{key}_ci") for metrics in rows.values() for _, key in columns):
        table.caption = INTERVAL_CAPTION
    table.add_column("model")
    for header in ("n", *(header for header, _ in columns)):
        table.add_column(header, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, f"{metrics.get('n', 0):,}",
                      *(format_metric(metrics.get(key), metrics.get(f"{key}_ci"))
                        for _, key in columns))
    return table


def length_table(title: str, bins: list[dict]) -> Table:
    """Build a table of ROC-AUC by length percentile from :func:`metrics_by_length`.

    Args:
        title: Table title.
        bins: The bins, shortest first.

    Returns:
        A rich table with columns percentiles, length (bp), n, ROC-AUC (with its 95%
        interval where the bins have one).
    """
    table = Table(title=title)
    if any(row.get("roc_auc_ci") for row in bins):
        table.caption = INTERVAL_CAPTION
    table.add_column("percentiles")
    for header in ("length (bp)", "n", "ROC-AUC"):
        table.add_column(header, justify="right")
    for row in bins:
        table.add_row(
            row["percentiles"],
            f"{row['min_length']:,}–{row['max_length']:,}",
            f"{row['n']:,}",
            format_metric(row["roc_auc"], row.get("roc_auc_ci")),
        )
    return table


def mlm_table(title: str, rows: dict[str, dict]) -> Table:
    """Build a table with one row per model, e.g. "cmx", "unigram" and "5-mer Markov".

    Args:
        title: Table title, e.g. "validation, MASK positions".
        rows: Model name to a :meth:`MlmMetrics.result` (or any group of it).

    Returns:
        A rich table with columns model, n, bits/base, perplexity, accuracy.
    """
    return comparison_table(title, rows, (("bits/base", "bits_per_base"),
                                          ("perplexity", "perplexity"), ("accuracy", "accuracy")))
