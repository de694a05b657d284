"""`cmx demo`: the whole cmx cycle on bundled data, from any directory, in a few CPU minutes.

Two bundled examples (``cmx_cli/demo_data``, see its README):

* capsule-locus genes of Klebsiella and Acinetobacter, deduplicated, with the query genes
  taken from loci that training never sees: `cmx train` and `cmx predict` on FASTA;
* 300 kb of each of two Ustilago maydis chromosomes with coding SNVs labelled 1 when they
  change the amino acid: `cmx pretrain` on the genome, `cmx finetune` on chr01 from that
  encoder, tested on chr04, and `cmx predict` on the VCF.

Every step is a call to the same pipeline a command runs; the demo prints the command
line of each, so users can redo any step themselves.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.pipelines import finetune, predict_fasta, predict_vcf, pretrain, train
from cmx_cli.training.loop import TrainingSettings
from cmx_cli.variants.vcf_io import ScoreSummary

DEMO_FILES = ("klebsiella.fa", "acinetobacter.fa", "query.fa", "umaydis_demo.fa.gz",
              "codon_snvs.vcf.gz", "codon_snvs.vcf.gz.tbi")
WINDOW = 200


@dataclass
class DemoResult:
    """What the demo produced."""

    pretrain: pretrain.PretrainResult
    train: train.TrainResult
    predict: predict_fasta.PredictFastaResult
    finetune: finetune.FinetuneResult
    predict_vcf: ScoreSummary


def demo_data_dir() -> Path:
    """The directory of the bundled demo files."""
    return Path(str(resources.files("cmx_cli") / "demo_data"))


def run(out: Path, device: str = "auto", reporter: Optional[Reporter] = None) -> DemoResult:
    """Copy the demo data into ``out`` and run pretrain, train, finetune and predict on it.

    Raises:
        CmxError: When ``out`` exists and is not empty.
    """
    reporter = reporter or Reporter(quiet=True)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CmxError(f"{out}: already exists and is not empty",
                       "remove it or choose another directory with --out.")
    data = out / "data"
    data.mkdir(parents=True)
    for name in DEMO_FILES:
        shutil.copyfile(demo_data_dir() / name, data / name)
    reporter.step("Demo data copied", f"ls {data}")
    genome, vcf = data / "umaydis_demo.fa.gz", data / "codon_snvs.vcf.gz"

    reporter.step("1/5 Pretrain an encoder by masked-base modelling on the U. maydis genome",
          f"cmx pretrain --fasta {genome} --min-length 128 --max-length 512 "
          f"--tokens-per-epoch 200000 --epochs 2 --out {out / 'pretrain'}")
    pretrained = pretrain.run(pretrain.PretrainConfig(
        fasta=(str(genome),), out=str(out / "pretrain"), min_length=128, max_length=512,
        tokens_per_epoch=200_000, validation_tokens=50_000, device=device,
        training=TrainingSettings(epochs=2, seed=0)), reporter)

    fasta_args = (f"{data / 'klebsiella.fa'}:Klebsiella", f"{data / 'acinetobacter.fa'}:Acinetobacter")
    reporter.step("2/5 Train a genus classifier on capsule-locus genes",
          f"cmx train --fasta {fasta_args[0]} --fasta {fasta_args[1]} --val-fraction 0.15 "
          f"--test-fraction 0.15 --epochs 10 --out {out / 'run'}")
    trained = train.run(train.TrainConfig(
        fasta=fasta_args, out=str(out / "run"), val_fraction=0.15, test_fraction=0.15,
        device=device, training=TrainingSettings(epochs=10, seed=0)), reporter)

    reporter.step("3/5 Predict the genus of genes from loci that training never saw",
          f"cmx predict {data / 'query.fa'} --model {out / 'run'} --label-regex 'label=(\\S+)' "
          f"-o {out / 'query_predictions.tsv'}")
    predicted = predict_fasta.run(predict_fasta.PredictFastaConfig(
        fasta=str(data / "query.fa"), model=str(out / "run"),
        output=str(out / "query_predictions.tsv"), label_regex=r"label=(\S+)", device=device),
        reporter)

    reporter.step("4/5 Fine-tune the pretrained encoder into a variant classifier: does a "
          "coding SNV change the amino acid? Train on chr01, test on chr04",
          f"cmx finetune --vcf {vcf} --reference {genome} --label-field LABEL "
          f"--window {WINDOW} --test-contigs chr04 --init {out / 'pretrain'} --epochs 3 "
          f"--out {out / 'finetune'}")
    finetuned = finetune.run(finetune.FinetuneConfig(
        reference=str(genome), out=str(out / "finetune"), vcf=str(vcf), label_field="LABEL",
        window=WINDOW, test_contigs=("chr04",), init=str(out / "pretrain"), device=device,
        training=TrainingSettings(epochs=3, seed=0)), reporter)

    scored = out / "codon_scored.vcf.gz"
    reporter.step("5/5 Score every SNV of the VCF and write it back annotated (INFO/CMX)",
          f"cmx predict {vcf} --reference {genome} --model {out / 'finetune'} -o {scored}")
    summary = predict_vcf.run(predict_vcf.PredictVcfConfig(
        vcf=str(vcf), reference=str(genome), model=str(out / "finetune"), output=str(scored),
        device=device, command=f"cmx predict {vcf} --reference {genome} "
                               f"--model {out / 'finetune'} -o {scored}"), reporter)
    reporter.step(
        f"Done. Runs (model.pt, metrics.json, log.tsv): {out / 'pretrain'}, {out / 'run'}, "
        f"{out / 'finetune'}. Predictions: {out / 'query_predictions.tsv'}, {scored}",
        f"bcftools view -H {scored} | head")
    return DemoResult(pretrained, trained, predicted, finetuned, summary)
