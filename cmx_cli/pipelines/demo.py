"""`cmx demo`: the whole cmx cycle on bundled data, from any directory, in a few CPU minutes.

Two bundled examples (``cmx_cli/demo_data``, see its README):

* capsule-locus genes of Klebsiella and Acinetobacter, deduplicated, with the query genes
  taken from loci that training never sees: `cmx train` and `cmx predict` on FASTA;
* 300 kb of each of two Ustilago maydis chromosomes with coding SNVs labelled 1 when they
  change the amino acid: `cmx pretrain` on the genome, `cmx finetune` on chr01 from that
  encoder, tested on chr04, and `cmx predict` on the VCF.

Then `cmx report` plots the three runs into one HTML page.

Each step is one command line, printed and then run through the same parser as a command
typed by hand, so that the printed command is exactly the one that ran.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.io.output import write_error

DEMO_FILES = ("klebsiella.fa", "acinetobacter.fa", "query.fa", "umaydis_demo.fa.gz",
              "codon_snvs.vcf.gz", "codon_snvs.vcf.gz.tbi")
WINDOW = 200

#: Runs one cmx command line (without the leading ``cmx``) and returns its result.
Execute = Callable[[list[str]], Any]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of `cmx demo`."""

    out: str = "cmx-demo"
    device: str = "auto"
    threads: Optional[int] = None
    quiet: bool = False


@dataclass
class DemoResult:
    """What each step returned, by step name (pretrain, train, predict, finetune,
    predict_vcf, report), and where everything is."""

    steps: dict
    out: Path


def demo_data_dir() -> Path:
    """The directory of the bundled demo files."""
    return Path(str(resources.files("cmx_cli") / "demo_data"))


def _steps(out: Path) -> list[tuple[str, str, list[str]]]:
    """(name, title, command line) of every step."""
    data = out / "data"
    genome, vcf = data / "umaydis_demo.fa.gz", data / "codon_snvs.vcf.gz"
    return [
        ("pretrain", "1/6 Pretrain an encoder by masked-base modelling on the U. maydis genome",
         ["pretrain", "--fasta", str(genome), "--min-length", "128", "--max-length", "512",
          "--tokens-per-epoch", "200000", "--validation-tokens", "50000", "--epochs", "2",
          "--out", str(out / "pretrain")]),
        ("train", "2/6 Train a genus classifier on capsule-locus genes",
         ["train", "--fasta", f"{data / 'klebsiella.fa'}:Klebsiella",
          "--fasta", f"{data / 'acinetobacter.fa'}:Acinetobacter", "--val-fraction", "0.15",
          "--test-fraction", "0.15", "--epochs", "10", "--out", str(out / "run")]),
        ("predict", "3/6 Predict the genus of genes from loci that training never saw",
         ["predict", str(data / "query.fa"), "--model", str(out / "run"),
          "--label-regex", r"label=(\S+)", "-o", str(out / "query_predictions.tsv")]),
        ("finetune", "4/6 Fine-tune the pretrained encoder into a variant classifier: does a "
         "coding SNV change the amino acid? Train on chr01, test on chr04",
         ["finetune", "--vcf", str(vcf), "--reference", str(genome), "--label-field", "LABEL",
          "--window", str(WINDOW), "--test-contigs", "chr04", "--init", str(out / "pretrain"),
          "--epochs", "3", "--out", str(out / "finetune")]),
        ("predict_vcf", "5/6 Score every SNV of the VCF and write it back annotated (INFO/CMX)",
         ["predict", str(vcf), "--reference", str(genome), "--model", str(out / "finetune"),
          "-o", str(out / "codon_scored.vcf.gz")]),
        ("report", "6/6 Plot how each run trained and how good it is, beside its baseline",
         ["report", str(out / "pretrain"), str(out / "run"), str(out / "finetune"),
          "-o", str(out / "report.html")]),
    ]


def run(config: DemoConfig, execute: Execute, reporter: Optional[Reporter] = None) -> DemoResult:
    """Copy the demo data into ``config.out`` and run every step's command line.

    Args:
        config: Where to work, on which device, how quietly.
        execute: Runs a command line as `cmx` does (the CLI passes its own parser).
        reporter: Where the steps and their commands are shown.

    Raises:
        CmxError: When ``config.out`` exists and is not empty.
    """
    reporter = reporter or Reporter(quiet=True)
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise CmxError(f"{out}: already exists and is not empty",
                       "remove it or choose another directory with --out.")
    data = out / "data"
    try:
        data.mkdir(parents=True)
        for name in DEMO_FILES:
            shutil.copyfile(demo_data_dir() / name, data / name)
    except OSError as error:  # a read-only or full --out
        raise write_error(out, error) from error
    reporter.step(f"Demo data copied to {data}: {', '.join(DEMO_FILES)}")
    runtime = (["--device", config.device] if config.device != "auto" else []) + (
        ["--threads", str(config.threads)] if config.threads else [])
    quiet = ["--quiet"] if config.quiet else []
    results = {}
    for name, title, argv in _steps(out):
        argv = argv + (quiet if name == "report" else runtime + quiet)
        reporter.step(title, "cmx " + shlex.join(argv))
        results[name] = execute(argv)
    scored = out / "codon_scored.vcf.gz"
    reporter.step(
        f"Done. Runs (model.pt, metrics.json, log.tsv): {out / 'pretrain'}, {out / 'run'}, "
        f"{out / 'finetune'}. Predictions: {out / 'query_predictions.tsv'}, {scored}. "
        f"Report: {out / 'report.html'}",
        f"bcftools view -H {scored} | head")
    return DemoResult(results, out)
