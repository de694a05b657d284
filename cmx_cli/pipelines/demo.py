"""`cmx demo`: the whole supervised cycle on the bundled example, from any directory.

The bundled data (``cmx_cli/demo_data``) are capsule-locus genes of Klebsiella and
Acinetobacter, deduplicated, with the query genes taken from loci that training never sees.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.pipelines import predict_fasta, train
from cmx_cli.training.loop import TrainingSettings

DEMO_FILES = ("klebsiella.fa", "acinetobacter.fa", "query.fa")


@dataclass
class DemoResult:
    """What the demo produced."""

    train: train.TrainResult
    predict: predict_fasta.PredictFastaResult


def demo_data_dir() -> Path:
    """The directory of the bundled demo FASTA files."""
    return Path(str(resources.files("cmx_cli") / "demo_data"))


def run(out: Path, device: str = "auto", reporter: Optional[Reporter] = None) -> DemoResult:
    """Copy the demo data into ``out``, train on it and predict the query genes.

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
    reporter.note(f"Demo data copied to {data}")
    train_result = train.run(
        train.TrainConfig(
            fasta=(f"{data / 'klebsiella.fa'}:Klebsiella", f"{data / 'acinetobacter.fa'}:Acinetobacter"),
            out=str(out / "run"),
            val_fraction=0.15,
            test_fraction=0.15,
            device=device,
            training=TrainingSettings(epochs=10, seed=0),
        ),
        reporter,
    )
    predict_result = predict_fasta.run(
        predict_fasta.PredictFastaConfig(
            fasta=str(data / "query.fa"),
            model=str(out / "run"),
            output=str(out / "query_predictions.tsv"),
            label_regex=r"label=(\S+)",
            device=device,
        ),
        reporter,
    )
    return DemoResult(train_result, predict_result)
