"""`cmx bench`'s variant cases: `cmx predict` over a VCF, end to end, in variants/s.

A seeded random genome and a VCF of SNVs at random positions (one site in ten with two ALT
alleles, as multi-allelic sites come in real call sets) are written to a temporary
directory. A network of the bench's shape, with seeded random weights, is saved as a
`cmx finetune` model (window ``window``) or as a `cmx pretrain` model (zero-shot scores,
with `cmx pretrain`'s default ``max_length`` and decoder). Then :mod:`predict_vcf`, the
pipeline `cmx predict` runs, scores the VCF. Weights do not change the work done, so the
speed is a trained model's. The time is the one `cmx predict`'s closing line gives: from
the pre-flight pass to the written output (reading, windows, the network, writing), without
start-up and model loading.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from cmx_cli.alphabet import BASES
from cmx_cli.io.checkpoint import Checkpoint, save_checkpoint
from cmx_cli.pipelines import predict_vcf
from cmx_cli.pipelines.pretrain import PretrainConfig
from cmx_cli.runtime import peak_memory_bytes, resolve_device
from cmx_cli.settings import EncoderShape, Runtime, VariantInput
from cmx_cli.tasks import masked_bases, variant
from models import (
    MaskedAutoencoder, MaskedAutoencoderConfig, VariantClassifier, VariantClassifierConfig)

#: The kinds of model a variant case scores with.
KINDS = ("fine-tuned", "zero-shot")
#: Share of sites with a second ALT allele.
MULTI_ALLELIC_SHARE = 0.1
#: Genome bases per variant: one SNV every 200 bp, about a bacterial call set's density.
BASES_PER_VARIANT = 200


def variant_case(kind: str, records: int, window: int, shape: EncoderShape, runtime: Runtime,
                 seed: int) -> dict:
    """Score ``records`` synthetic SNV records with a ``kind`` model (runs in a child process).

    Returns:
        records, alleles scored, seconds, variants (records) per second and peak bytes.
    """
    with tempfile.TemporaryDirectory(prefix="cmx-bench-") as scratch:
        directory = Path(scratch)
        reference, vcf = write_inputs(directory, records, window, seed)
        model = save_model(directory / "model.pt", kind, window, shape, seed)
        config = predict_vcf.PredictVcfConfig(
            vcf=str(vcf), variants=VariantInput(reference=str(reference), window=window),
            model=str(model), output=str(directory / "scored.vcf"), runtime=runtime)
        summary = predict_vcf.run(config)
    return {"records": summary.records, "scored": summary.scored, "seconds": summary.seconds,
            "variants_per_second": summary.records / summary.seconds,
            "peak_bytes": peak_memory_bytes(resolve_device(runtime.device))}


def write_inputs(directory: Path, records: int, window: int, seed: int) -> tuple[Path, Path]:
    """A random one-contig genome and a sorted VCF of ``records`` SNV records on it.

    Returns:
        The FASTA and the VCF.
    """
    rng = np.random.default_rng(seed)
    length = max(records * BASES_PER_VARIANT, 4 * window)
    genome = np.asarray(list(BASES))[rng.integers(0, 4, length)]
    reference = directory / "genome.fa"
    lines = ["".join(genome[start:start + 60]) for start in range(0, length, 60)]
    reference.write_text(">chr1\n" + "\n".join(lines) + "\n")
    positions = np.sort(rng.choice(length, size=min(records, length), replace=False))
    rows = []
    for position in positions:
        ref = genome[position]
        others = [base for base in BASES if base != ref]
        alts = rng.permutation(others)[:2 if rng.random() < MULTI_ALLELIC_SHARE else 1]
        rows.append(f"chr1\t{position + 1}\t.\t{ref}\t{','.join(alts)}\t.\tPASS\t.")
    vcf = directory / "variants.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n"
                   f"##contig=<ID=chr1,length={length}>\n"
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "\n".join(rows) + "\n")
    return reference, vcf


def save_model(path: Path, kind: str, window: int, shape: EncoderShape, seed: int) -> Path:
    """Save a seeded random model of ``kind`` as its training command would."""
    torch.manual_seed(seed)
    if kind == "fine-tuned":
        config = VariantClassifierConfig(shape.encoder(window))
        checkpoint = Checkpoint(
            kind=variant.KIND, model_config=config.to_dict(),
            state_dict=VariantClassifier(config).state_dict(), labels=["0", "1"],
            extra={"groups": [""], "window": window,
                   "trained_on": {"window": window, "max_len": window, "alleles": None}})
    elif kind == "zero-shot":
        defaults = {field.name: field.default for field in dataclasses.fields(PretrainConfig)}
        config = MaskedAutoencoderConfig.build(shape.encoder(defaults["max_length"]),
                                               defaults["decoder_track_size"],
                                               defaults["decoder_hidden_size"])
        checkpoint = Checkpoint(kind=masked_bases.KIND, model_config=config.to_dict(),
                                state_dict=MaskedAutoencoder(config).state_dict())
    else:
        raise ValueError(f"unknown kind {kind!r}; kinds are {KINDS}")
    save_checkpoint(checkpoint, path)
    return path
