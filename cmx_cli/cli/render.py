"""What the commands show of their results: tables and the closing line on stderr, data on
stdout, so that a pipe gets data and people get words. Pipelines return results; only
this module prints them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cmx_cli.console import Reporter
from cmx_cli.metrics.masked_bases import beyond_local_statistics
from cmx_cli.metrics.tables import length_table, metrics_table, mlm_table
from cmx_cli.pipelines.bench import OUT_OF_MEMORY, SHARES
from cmx_cli.pipelines.evaluate import EvaluateResult
from cmx_cli.pipelines.predict_fasta import PredictFastaResult
from cmx_cli.training.job import RunResult, held_out_split
from cmx_cli.variants.scoring import ScoreSummary


def train_result(result: RunResult, reporter: Reporter) -> None:
    """`cmx train`: the held-out metrics beside the k-mer baseline, ROC-AUC by length."""
    metrics, split = result.metrics, held_out_split(result.metrics)
    if split in metrics["model"]:
        reporter.table(metrics_table(f"{split} set", {
            "cmx": metrics["model"][split], "k-mer baseline": metrics["kmer_baseline"][split]}))
        reporter.table(length_table(f"cmx {split} ROC-AUC by length percentile",
                                    metrics["model"][f"{split}_by_length"]))
    reporter.summary(result.summary)


def finetune_result(result: RunResult, flank: int, reporter: Reporter) -> None:
    """`cmx finetune`: the held-out metrics beside the flank baseline, per group too."""
    metrics, split = result.metrics, held_out_split(result.metrics)
    baseline = f"±{flank} bp baseline"
    if split in metrics["model"]:
        reporter.table(metrics_table(f"{split} variants", {
            "cmx": metrics["model"][split], baseline: metrics["flank_baseline"][split]}))
        for group in metrics["model"].get(f"{split}_by_group", {}):
            reporter.table(metrics_table(f"{split} variants, group {group}", {
                "cmx": metrics["model"][f"{split}_by_group"][group],
                baseline: metrics["flank_baseline"][f"{split}_by_group"][group]}))
    reporter.summary(result.summary)


def pretrain_result(result: RunResult, markov_order: int, reporter: Reporter) -> None:
    """`cmx pretrain`: the validation metrics beside both baselines."""
    metrics = result.metrics
    reporter.table(mlm_table("validation, MASK-token positions", {
        "cmx": metrics["model"], "unigram": metrics["unigram"],
        f"order-{markov_order} Markov": metrics["markov"]}))
    reporter.summary(result.summary)


def fasta_predictions(result: PredictFastaResult, reporter: Reporter) -> None:
    """`cmx predict` on FASTA: the metrics when labels were given, and the closing line."""
    if result.metrics is not None:
        reporter.table(metrics_table(Path(result.fasta).name, {"cmx": result.metrics}))
    reporter.summary(result.summary)


def variant_scores(summary: ScoreSummary, reporter: Reporter) -> None:
    """`cmx predict` on a VCF: the closing line."""
    reporter.summary(f"cmx predict: {summary.line()}")


def evaluation(result: EvaluateResult, as_json: bool) -> None:
    """`cmx evaluate`: the metrics are the command's result, so they go to stdout."""
    if as_json:
        json.dump(result.metrics, sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
        return
    Console().print(mlm_table(
        f"{Path(result.fasta).name}: {result.bases:,} bases, {result.rate:.0%} selected, "
        "MASK-token positions",
        {"cmx": result.metrics["model"], "unigram": result.metrics["unigram"],
         f"order-{result.markov_order} Markov": result.metrics["markov"]}))
    verdict = beyond_local_statistics(result.metrics["model"], result.metrics["markov"],
                                      result.markov_order)
    Console().print(f"cmx on MASK positions: {verdict}")


def bench_results(results: dict, as_json: bool, reporter: Reporter) -> None:
    """`cmx bench`: JSON on stdout, or tables on stderr."""
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for table in bench_tables(results):
        reporter.console.print(table)


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


def bench_tables(results: dict) -> list[Table]:
    """The results as rich tables: speed and memory per batch and precision, the packed batch
    against the hardware's limits, and the variant cases."""
    config = results["config"]
    setup = [f"{results['threads']} threads"]
    setup += [name for name, on in (("checkpointing", config["checkpointing"]),
                                    ("reversible blocks", config["shape"]["reversible"]),
                                    ("compiled blocks", config["runtime"]["compile_blocks"]))
              if on]
    table = Table(title=f"cmx bench on {results['device']} ({', '.join(setup)})")
    modes = [mode for mode in ("train", "inference", "attention", "attention-inference")
             if mode in results["cases"][0]]
    table.add_column("batch")
    table.add_column("precision")
    for mode in modes:
        name = {"train": "train", "inference": "inference", "attention": "attention train",
                "attention-inference": "attention inference"}[mode]
        table.add_column(f"{name} tok/s", justify="right")
        table.add_column(f"{name} peak", justify="right")
    for case in results["cases"]:
        for precision in results["precisions"]:
            cells = [case["batch"], precision]
            for mode in modes:
                measured = case[mode][precision]
                if "error" in measured:
                    cells += [measured["error"], ""]
                else:
                    cells += [f"{measured['tokens_per_second']:,.0f}",
                              _gib(measured["peak_bytes"])]
            table.add_row(*cells)
    if not (config["checkpointing"] or config["shape"]["reversible"]) and any(
            measured.get("error") == OUT_OF_MEMORY
            for case in results["cases"] for measured in case["train"].values()):
        table.caption = ("Training ran out of memory: --checkpointing or --reversible trains "
                         "in far less (see cmx train --help).")
    tables = [table, _limits_table(results)]
    if results["variants"]:
        tables.append(_variants_table(results))
    return tables


def _limits_table(results: dict) -> Table:
    measured = results["limits"]
    limits = Table(title="Against the hardware's limits and the reference (packed batch of the "
                         f"table's last row, {results['precisions'][0]}, timed in turns in one "
                         "process)")
    for column in ("measure", "cmx", "limit", "share"):
        limits.add_column(column, justify="left" if column == "measure" else "right")
    if "error" in measured:
        limits.add_row("all", measured["error"], "", "")
        return limits
    for name, share, ours, limit, unit in SHARES:
        limits.add_row(name, f"{measured[ours] / unit:.1f}", f"{measured[limit] / unit:.1f}",
                       f"{measured[share]:.0%}")
    if "speedup_over_reference" in results:
        limits.add_row("training step vs per-sequence torch.roll (tok/s)",
                       f"{measured['train_tokens_per_second']:,.0f}",
                       f"{measured['reference_tokens_per_second']:,.0f}",
                       f"{results['speedup_over_reference']:.1f}×")
    return limits


def _variants_table(results: dict) -> Table:
    config = results["config"]
    table = Table(title=f"cmx predict on a VCF ({config['variant_records']:,} SNV records, "
                        f"{config['window']:,}-bp windows; pre-flight pass to written output)")
    for column in ("model", "precision", "variants/s", "seconds", "peak"):
        table.add_column(column, justify="left" if column in ("model", "precision") else "right")
    for kind, by_precision in results["variants"].items():
        for precision, measured in by_precision.items():
            if "error" in measured:
                table.add_row(kind, precision, measured["error"], "", "")
            else:
                table.add_row(kind, precision, f"{measured['variants_per_second']:,.1f}",
                              f"{measured['seconds']:.2f}", _gib(measured["peak_bytes"]))
    return table
