"""Does pretraining pay? The learning curve of the README, rerunnable.

On the U. maydis codon task (`make_codon_variants.py`: does a coding SNV change the amino
acid?) this script
1. pretrains an encoder on chr01-chr03 with `cmx pretrain`'s default flags and, unless
   ``--pretrain-minutes 0``, a time budget;
2. scores it on chr04, held out: masked-base bits per base beside the unigram and order-5
   Markov baselines (`cmx evaluate`), and zero-shot SNV scores (`cmx predict`) beside a
   context-count baseline, P(base | the 3 bp on each side) counted on chr01-chr03;
3. fine-tunes variant classifiers on 100, 300, 1,000, 3,000 and all labelled SNVs of
   chr01-chr03, from scratch and from the pretrained encoder, with several seeds, and tests
   them on chr04 beside the ±5 bp logistic-regression baseline fitted on the same labels.

Every run is a cmx command; its output stays in OUT. Runs already finished are not redone,
so an interrupted experiment continues where it stopped. Results: OUT/summary.json and
OUT/learning_curve.tsv, and tables printed at the end.

Usage:
    python examples/learning_curve.py GENOME.fa GENES.gff3 OUT [--pretrain-minutes 15]
        [--pretrain-threads 1] [--pretrain-lr LR] [--sizes 100 300 1000 3000 all] [--seeds 0 1 2]
        [--starts scratch pretrained] [--steps 300] [--jobs 2]

GENOME.fa and GENES.gff3: U. maydis chr01-chr04 and its gene models, or any genome and
GFF3 whose contigs are named chr01..chr04.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyfaidx
import pysam
from sklearn.metrics import roc_auc_score

TRAINING_CONTIGS = ("chr01", "chr02", "chr03")
TEST_CONTIG = "chr04"
CONTEXT = 3  # bp on each side for the context-count baseline
BASES = "ACGT"
#: How each start fine-tunes: extra `cmx finetune` flags, given the pretraining run and its
#: encoder's shape (so that every start trains the same network).
STARTS = {
    "scratch": lambda run, shape: ["--max-len", shape["max_len"],
                                   "--local-context", shape["local_radius"]],
    "scratch-paper-network": lambda run, shape: ["--max-len", shape["max_len"],
                                                 "--local-context", 0],
    "pretrained": lambda run, shape: ["--init", run],
    "pretrained-encoder-lr-0.1": lambda run, shape: ["--init", run, "--encoder-lr-scale", 0.1],
    "pretrained-frozen": lambda run, shape: ["--init", run, "--freeze-encoder"],
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    out = args.out
    data = out / "data"
    vcf = make_data(args.genome, args.gff3, data)
    pretrained = out / "pretrain"
    if not (pretrained / "metrics.json").exists():
        shutil.rmtree(pretrained, ignore_errors=True)  # an interrupted run starts again
        budget = ["--max-time", args.pretrain_minutes] if args.pretrain_minutes else []
        rate = ["--lr", args.pretrain_lr] if args.pretrain_lr else []
        cmx("pretrain", "--fasta", data / "chr01-03.fa", *budget, *rate, "--threads",
            args.pretrain_threads, "--quiet", "--out", pretrained)
    summary = {"pretraining": pretraining_budget(pretrained),
               "masked_bases": masked_base_metrics(pretrained, data / "chr04.fa", out),
               "zero_shot": zero_shot(pretrained, vcf, args.genome, data / "chr01-03.fa", out)}
    shape = json.loads((pretrained / "metrics.json").read_text())["training"]["model_config"]
    runs = []
    for size in args.sizes:
        for seed in args.seeds:
            subset = label_subset(vcf, size, seed, data)
            for start in args.starts:
                runs.append((f"{start}-n{size}-s{seed}", subset, seed,
                             STARTS[start](pretrained, shape["encoder"])))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda run: finetune(out / "finetune" / run[0], run[1], args.genome,
                                           run[2], args, run[3]), runs))
    summary["learning_curve"] = learning_curve(out / "finetune", args)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, out / "learning_curve.png")
    print_summary(summary)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("genome", type=Path)
    parser.add_argument("gff3", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pretrain-minutes", type=float, default=15,
                        help="pretraining's --max-time (0: none, cmx pretrain's own epochs)")
    parser.add_argument("--pretrain-threads", type=int, default=1,
                        help="CPU threads of the pretraining run")
    parser.add_argument("--pretrain-lr", type=float,
                        help="pretraining's --lr (default: cmx pretrain's own)")
    parser.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "3000", "all"],
                        help="labelled SNVs of chr01-chr03 to fine-tune on ('all': every one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--starts", nargs="+", choices=sorted(STARTS),
                        default=["scratch", "pretrained"])
    parser.add_argument("--window", type=int, default=100, help="fine-tuning window, bp")
    parser.add_argument("--steps", type=int, default=300,
                        help="optimiser steps of every fine-tuning run")
    parser.add_argument("--batch-tokens", type=int, default=4096,
                        help="--max-tokens of the fine-tuning runs (20 variants at 100 bp)")
    parser.add_argument("--jobs", type=int, default=2, help="fine-tuning runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    return parser.parse_args(argv)


def cmx(*words) -> str:
    """Run one cmx command; its standard output."""
    command = [sys.executable, "-m", "cmx_cli", *map(str, words)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr}")
    return result.stdout


def make_data(genome: Path, gff3: Path, data: Path) -> Path:
    """The labelled SNVs of chr01-chr04 and FASTA files of chr01-chr03 and chr04."""
    vcf = data / "codon_snvs.vcf.gz"
    if not vcf.exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_codon_variants.py")),
                        "--fasta", str(genome), "--gff3", str(gff3), "--out-dir", str(data)],
                       check=True)
    fasta = pyfaidx.Fasta(str(genome))
    for name, contigs in (("chr01-03.fa", TRAINING_CONTIGS), ("chr04.fa", (TEST_CONTIG,))):
        path = data / name
        if path.exists():
            continue
        with open(path.with_suffix(".part"), "w") as handle:
            for contig in contigs:
                sequence = str(fasta[contig])
                handle.write(f">{contig}\n")
                handle.writelines(sequence[i:i + 60] + "\n" for i in range(0, len(sequence), 60))
        path.with_suffix(".part").rename(path)
    return vcf


def pretraining_budget(run: Path) -> dict:
    """Minutes and bases of a pretraining run, from its metrics.json and log.tsv."""
    metrics = json.loads((run / "metrics.json").read_text())
    rows = read_tsv(run / "log.tsv")
    return {"minutes": round(metrics["training"]["seconds"] / 60, 1),
            "tokens": sum(int(row["tokens"]) for row in rows),
            "epochs": metrics["training"]["epochs_completed"],
            "steps": metrics["training"]["steps"]}


def masked_base_metrics(pretrained: Path, fasta: Path, out: Path) -> dict:
    """Bits per base on chr04 of the model and of its baselines (`cmx evaluate`)."""
    path = out / "evaluate_chr04.json"
    if not path.exists():
        path.write_text(cmx("evaluate", "--model", pretrained, "--fasta", fasta, "--json"))
    result = json.loads(path.read_text())
    return {name: result[name]["bits_per_base"] for name in ("model", "unigram", "markov")}


def zero_shot(pretrained: Path, vcf: Path, genome: Path, training_fasta: Path,
              out: Path) -> dict:
    """ROC-AUC on chr04 of -(log P(alt) - log P(ref)) against the label, for the model and
    for the context-count baseline."""
    scores_path = out / "zero_shot_chr04.tsv"
    if not scores_path.exists():
        cmx("predict", vcf, "--reference", genome, "--model", pretrained, "--region",
            TEST_CONTIG, "--tsv", "-o", scores_path)
    labels = {(r.chrom, r.pos, r.ref, r.alts[0]): r.info["LABEL"]
              for r in pysam.VariantFile(str(vcf)).fetch(TEST_CONTIG)}
    rows = read_tsv(scores_path)
    score_column = next(key for key in rows[0] if key not in ("chrom", "pos", "id", "ref", "alt"))
    keys = [(row["chrom"], int(row["pos"]), row["ref"], row["alt"]) for row in rows]
    truth = np.array([labels[key] for key in keys])
    model = -np.array([float(row[score_column]) for row in rows])
    counts = context_counts(training_fasta)
    reference = str(pyfaidx.Fasta(str(genome))[TEST_CONTIG]).upper()
    baseline = -np.array([context_log_ratio(counts, reference, pos - 1, ref, alt)
                          for _, pos, ref, alt in keys])
    return {"n": len(truth), "positives": int(truth.sum()),
            "model_roc_auc": float(roc_auc_score(truth, model)),
            "context_count_roc_auc": float(roc_auc_score(truth, baseline))}


def context_counts(fasta: Path) -> np.ndarray:
    """(4^6, 4) counts of each base given the CONTEXT bases on each side, both strands."""
    counts = np.zeros((4 ** (2 * CONTEXT), 4), dtype=np.int64)
    for record in pyfaidx.Fasta(str(fasta)):
        sequence = str(record).upper()
        for strand in (sequence, sequence[::-1].translate(str.maketrans("ACGT", "TGCA"))):
            codes = np.frombuffer(strand.encode(), dtype=np.uint8)
            tokens = np.full(codes.size, 4, dtype=np.int64)
            for index, base in enumerate(BASES.encode()):
                tokens[codes == base] = index
            width = 2 * CONTEXT + 1
            windows = np.lib.stride_tricks.sliding_window_view(tokens, width)
            usable = (windows < 4).all(axis=1)
            windows = windows[usable]
            context = np.zeros(len(windows), dtype=np.int64)
            for column in [*range(CONTEXT), *range(CONTEXT + 1, width)]:
                context = context * 4 + windows[:, column]
            np.add.at(counts, (context, windows[:, CONTEXT]), 1)
    return counts


def context_log_ratio(counts: np.ndarray, reference: str, index: int, ref: str,
                      alt: str) -> float:
    """log P(alt) - log P(ref) from the counts of the site's context (add-one smoothed)."""
    flanks = reference[max(index - CONTEXT, 0):index] + reference[index + 1:index + 1 + CONTEXT]
    if len(flanks) < 2 * CONTEXT or any(base not in BASES for base in flanks):
        return 0.0
    context = 0
    for base in flanks:
        context = context * 4 + BASES.index(base)
    row = counts[context] + 1.0
    return math.log(row[BASES.index(alt)]) - math.log(row[BASES.index(ref)])


def label_subset(vcf: Path, size: str, seed: int, data: Path) -> Path:
    """A VCF of ``size`` random labelled SNVs of chr01-chr03 (all of them for 'all') and
    every SNV of chr04, the test set."""
    path = data / f"labels-n{size}-s{seed}.vcf.gz"
    if path.exists():
        return path
    source = pysam.VariantFile(str(vcf))
    training = [record for contig in TRAINING_CONTIGS for record in source.fetch(contig)]
    if size != "all":
        chosen = np.random.default_rng(seed).choice(len(training), int(size), replace=False)
        training = [training[i] for i in sorted(chosen)]
    part = path.with_name(path.name + ".part")
    with pysam.VariantFile(str(part), "wz", header=source.header) as sink:
        for record in [*training, *source.fetch(TEST_CONTIG)]:
            sink.write(record)
    part.rename(path)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def finetune(run: Path, vcf: Path, genome: Path, seed: int, args: argparse.Namespace,
             start_flags: list) -> None:
    """One fine-tuning run of the curve: a fixed number of steps, tested on chr04."""
    if (run / "metrics.json").exists():
        return
    shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts again
    cmx("finetune", "--vcf", vcf, "--label-field", "LABEL", "--reference", genome,
        "--window", args.window, "--test-contigs", TEST_CONTIG, "--max-steps", args.steps,
        "--epochs", 100_000, "--patience", 100_000, "--max-tokens", args.batch_tokens,
        "--seed", seed, "--threads", args.threads, "--quiet", "--out", run,
        *start_flags)


def learning_curve(runs: Path, args: argparse.Namespace) -> list:
    """Test ROC-AUC per start and size: mean, standard deviation and each seed's, beside
    the flank baseline fitted on the same labels."""
    rows = []
    for size in args.sizes:
        for start in args.starts:
            model, flank, seconds = [], [], []
            for seed in args.seeds:
                path = runs / f"{start}-n{size}-s{seed}" / "metrics.json"
                metrics = json.loads(path.read_text())
                model.append(metrics["model"]["test"]["roc_auc"])
                flank.append(metrics["flank_baseline"]["test"]["roc_auc"])
                seconds.append(metrics["training"]["seconds"])
            rows.append({"labels": size, "start": start, "roc_auc_mean": statistics.mean(model),
                         "roc_auc_sd": statistics.stdev(model) if len(model) > 1 else 0.0,
                         "roc_auc": model, "flank_roc_auc_mean": statistics.mean(flank),
                         "seconds_mean": statistics.mean(seconds)})
    with open(runs.parent / "learning_curve.tsv", "w") as handle:
        handle.write("labels\tstart\troc_auc_mean\troc_auc_sd\troc_auc_per_seed\t"
                     "flank_roc_auc_mean\tseconds_mean\n")
        for row in rows:
            handle.write(f"{row['labels']}\t{row['start']}\t{row['roc_auc_mean']:.4f}\t"
                         f"{row['roc_auc_sd']:.4f}\t"
                         f"{','.join(f'{value:.4f}' for value in row['roc_auc'])}\t"
                         f"{row['flank_roc_auc_mean']:.4f}\t{row['seconds_mean']:.0f}\n")
    return rows


def plot(summary: dict, path: Path) -> None:
    """Test ROC-AUC against the labels used: each start's mean and every seed, and the
    flank baseline."""
    from matplotlib.figure import Figure

    rows = summary["learning_curve"]
    sizes = list(dict.fromkeys(row["labels"] for row in rows))
    canvas = Figure(figsize=(6.5, 4))
    ax = canvas.subplots()
    for start in dict.fromkeys(row["start"] for row in rows):
        mine = [row for row in rows if row["start"] == start]
        x = [sizes.index(row["labels"]) for row in mine]
        line, = ax.plot(x, [row["roc_auc_mean"] for row in mine], marker="o", label=start)
        for position, row in zip(x, mine):
            ax.scatter([position] * len(row["roc_auc"]), row["roc_auc"], s=8,
                       color=line.get_color(), alpha=0.5)
    flank = [next(row["flank_roc_auc_mean"] for row in rows if row["labels"] == size)
             for size in sizes]
    ax.plot(range(len(sizes)), flank, linestyle="--", color="grey", label="±5 bp baseline")
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("labelled SNVs of chr01-chr03")
    ax.set_ylabel("test ROC-AUC on chr04")
    ax.legend(fontsize=8)
    canvas.savefig(path, dpi=100, bbox_inches="tight")


def print_summary(summary: dict) -> None:
    budget, bits, zero = summary["pretraining"], summary["masked_bases"], summary["zero_shot"]
    print(f"pretraining: {budget['minutes']} min, {budget['tokens']:,} bases, "
          f"{budget['steps']} steps")
    print(f"bits/base on chr04: model {bits['model']:.3f}, unigram {bits['unigram']:.3f}, "
          f"order-5 Markov {bits['markov']:.3f}")
    print(f"zero-shot ROC-AUC on chr04 ({zero['n']} SNVs): model {zero['model_roc_auc']:.3f}, "
          f"±{CONTEXT} bp context counts {zero['context_count_roc_auc']:.3f}")
    print("labels\tstart\ttest ROC-AUC (mean ± sd over seeds)\tflank baseline\tseconds")
    for row in summary["learning_curve"]:
        print(f"{row['labels']}\t{row['start']}\t{row['roc_auc_mean']:.3f} ± "
              f"{row['roc_auc_sd']:.3f}\t{row['flank_roc_auc_mean']:.3f}\t"
              f"{row['seconds_mean']:.0f}")


def read_tsv(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


if __name__ == "__main__":
    main()
