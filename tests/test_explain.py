"""`cmx explain`: ISM agrees with direct scoring, saliency finds a planted motif, profiles."""
import csv

import numpy as np
import pytest
from PIL import Image

from cmx_cli.alphabet import MASK, encode
from cmx_cli.explain.attribution import gradient_times_input, log_odds, mutagenesis
from cmx_cli.explain.masked_profile import masked_profile
from cmx_cli.io.checkpoint import load_checkpoint
from cmx_cli.pipelines import train
from cmx_cli.settings import TrainingSettings
from cmx_cli.tasks.classification import build_classifier
from cmx_cli.tasks.masked_bases import build_autoencoder, predict_log_probabilities
from tests.conftest import DATA
from tests.helpers import flat_config, run_cli
from tests.test_pretrain_pipeline import _pretrain_config

MOTIF = "GATTACAG"
LENGTH = 48


def _write_motif_task(path, rng, count=240):
    """Random sequences; class 'motif' carries MOTIF at a random place, class 'none' not."""
    lines, planted = [], {}
    for index in range(count):
        sequence = list(rng.choice(list("ACGT"), LENGTH))
        label = "motif" if index % 2 else "none"
        if label == "motif":
            start = int(rng.integers(0, LENGTH - len(MOTIF)))
            sequence[start:start + len(MOTIF)] = MOTIF
            planted[f"s{index}"] = start
        text = "".join(sequence)
        if label == "none" and MOTIF in text:
            text = text.replace(MOTIF, "C" * len(MOTIF))
        lines.append(f">s{index} label={label}\n{text}\n")
    path.write_text("".join(lines))
    return planted


@pytest.fixture(scope="module")
def motif_run(tmp_path_factory):
    """A classifier of the paper's network that finds an 8-bp motif. (With the default local
    stem, gradient x input separates the motif from the background less clearly, as the
    README says; the stem's terms of the estimate are tested exactly below.)"""
    root = tmp_path_factory.mktemp("explain")
    planted = _write_motif_task(root / "motif.fa", np.random.default_rng(5), count=600)
    config = flat_config(train.TrainConfig, fasta=(str(root / "motif.fa"),),
                         label_regex=r"label=(\S+)", out=str(root / "run"), val_fraction=0.2,
                         test_fraction=0.0, track_size=8, hidden_size=64, dropout=0.0,
                         max_tokens=1024, kmer_k=3, device="cpu", local_radius=0,
                         training=TrainingSettings(epochs=20, learning_rate=3e-3, seed=1,
                                                   patience=None))
    result = train.run(config)
    assert result.metrics["model"]["val"]["roc_auc"] > 0.95, result.metrics["model"]["val"]
    return root, planted


def _sequence(root, name):
    for block in (root / "motif.fa").read_text().split(">")[1:]:
        header, sequence = block.strip().split("\n")
        if header.split()[0] == name:
            return sequence
    raise KeyError(name)


def test_ism_equals_the_difference_of_two_predictions(motif_run, tmp_path):
    root, planted = motif_run
    name = next(iter(planted))
    sequence = _sequence(root, name)
    query = tmp_path / "one.fa"
    query.write_text(f">{name}\n{sequence}\n")
    result = run_cli("explain", str(query), "--model", str(root / "run"),
                     "--region", f"{name}:3-6", "-o", str(tmp_path / "ism.tsv"),
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "ism.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 4 * 3
    assert [int(row["position"]) for row in rows[::3]] == [3, 4, 5, 6]

    def logit_of_motif(text):
        path = tmp_path / "q.fa"
        path.write_text(f">q\n{text}\n")
        out = tmp_path / "q.tsv"
        outcome = run_cli("predict", str(path), "--model", str(root / "run"),
                          "-o", str(out), "--precision", "fp32",
                          "--device", "cpu")
        assert outcome.exit_code == 0, outcome.output
        with open(out) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        # From both columns: 1 - p would lose the digits of a confident prediction.
        return np.log(float(row["p_motif"])) - np.log(float(row["p_none"]))

    original = logit_of_motif(sequence)
    for row in rows[:6]:
        position = int(row["position"]) - 1
        assert sequence[position] == row["ref"] and row["alt"] != row["ref"]
        mutated = sequence[:position] + row["alt"] + sequence[position + 1:]
        assert float(row["delta_motif"]) == pytest.approx(logit_of_motif(mutated) - original,
                                                          abs=2e-4)
        assert float(row["delta_none"]) == pytest.approx(-float(row["delta_motif"]), abs=1e-4)
    bedgraph = (tmp_path / "ism.bedgraph").read_text().splitlines()
    assert [line.split("\t")[:3] for line in bedgraph] == [
        [name, str(start), str(start + 1)] for start in range(2, 6)]


@pytest.mark.parametrize("method", ["ism", "gradient"])
def test_maps_peak_on_the_planted_motif(motif_run, method):
    root, planted = motif_run
    model = build_classifier(load_checkpoint(root / "run")).float()
    hits = 0
    names = list(planted)[:10]
    for name in names:
        tokens = encode(_sequence(root, name))
        effects = (mutagenesis(model, tokens, 0, LENGTH, 4096) if method == "ism" else
                   gradient_times_input(model, tokens, 0, LENGTH))
        track = np.abs(effects.delta[:, :, 1]).max(axis=1)  # class "motif"
        start = planted[name]
        inside = track[start:start + len(MOTIF)].mean()
        outside = np.delete(track, np.arange(start, start + len(MOTIF))).mean()
        hits += inside > 2 * outside
    assert hits >= 8, hits


def test_ism_batches_agree_with_one_copy_at_a_time(motif_run):
    root, planted = motif_run
    model = build_classifier(load_checkpoint(root / "run")).float()
    tokens = encode(_sequence(root, next(iter(planted))))
    together = mutagenesis(model, tokens, 10, 20, max_tokens=4096)
    alone = mutagenesis(model, tokens, 10, 20, max_tokens=1)
    np.testing.assert_allclose(together.delta, alone.delta, atol=1e-5)
    assert together.delta.shape == (10, 3, 2)
    assert (together.alt != together.ref[:, None]).all()


def test_log_odds_of_two_classes_are_opposite():
    import torch

    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    odds = log_odds(logits)
    p = torch.softmax(logits, 1)
    assert torch.allclose(odds, torch.log(p / (1 - p)), atol=1e-6)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from cmx_cli.pipelines import pretrain

    out = tmp_path_factory.mktemp("explain_pre") / "pre"
    pretrain.run(_pretrain_config(DATA, out))
    return out


def test_masked_profile_is_the_model_at_each_masked_position(pretrained, tmp_path):
    model = build_autoencoder(load_checkpoint(pretrained))
    import torch

    tokens = encode("ACGTTGCAAGCTAGCTAGGATCCA" * 3)
    profile = masked_profile(model, tokens, 5, 15, 64, torch.device("cpu"), "fp32")
    assert profile.shape == (10, 4)
    np.testing.assert_allclose(profile.sum(1), 1.0, atol=1e-9)
    copy = tokens.copy()
    copy[9] = MASK
    direct = np.exp(predict_log_probabilities(model, [copy], 4096, torch.device("cpu"),
                                              "fp32")[0][9])
    np.testing.assert_allclose(profile[4], direct / direct.sum(), atol=1e-6)
    fasta = tmp_path / "s.fa"
    fasta.write_text(">s\n" + "ACGTTGCAAGCTAGCTAGGATCCA" * 3 + "\n")
    result = run_cli("explain", str(fasta), "--model", str(pretrained),
                     "-o", str(tmp_path / "p.tsv"), "--plot",
                     "--region", "s:6-15", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "p.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 10
    np.testing.assert_allclose([float(rows[4][f"p_{b}"]) for b in "ACGT"], profile[4], rtol=1e-5)
    with Image.open(tmp_path / "p.png") as image:
        assert image.size[0] > 300


def test_explain_errors_are_one_line(motif_run, tmp_path):
    root, planted = motif_run
    name = next(iter(planted))
    fasta = root / "motif.fa"
    cases = [(["--region", "nope:1-5"], "no record named nope"),
             (["--region", f"{name}:40-60"], "passes its end"),
             (["--region", f"{name}:5"], "NAME:START-END")]
    for arguments, expected in cases:
        output = tmp_path / "x.tsv"
        result = run_cli("explain", str(fasta), "--model", str(root / "run"),
                         "-o", str(output), *arguments)
        assert result.exit_code == 1, result.output
        assert expected in result.output and "Hint:" in result.output
        assert not output.exists() and not (tmp_path / "x.bedgraph").exists()
    result = run_cli("explain", str(fasta), "--model", str(root / "run"),
                     "-o", str(fasta))
    assert result.exit_code == 1 and "would replace the input" in result.output


def test_heatmap_plot(motif_run, tmp_path):
    root, planted = motif_run
    name = next(iter(planted))
    result = run_cli("explain", str(root / "motif.fa"), "--model",
                     str(root / "run"), "--region", f"{name}:1-{LENGTH}",
                     "--method", "gradient", "--plot",
                     "-o", str(tmp_path / "g.tsv"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "g.png") as image:
        assert image.size[0] > 300 and image.size[1] > 100
    assert len((tmp_path / "g.bedgraph").read_text().splitlines()) == LENGTH


@pytest.fixture(scope="module")
def variant_model(tmp_path_factory):
    """A fine-tuned model whose label is the base DISTANCE bp upstream of each SNV."""
    from cmx_cli.pipelines import finetune
    from tests.test_finetune_pipeline import _config as finetune_config
    from tests.test_finetune_pipeline import _write_genome, _write_vcf

    root = tmp_path_factory.mktemp("explain_variants")
    rng = np.random.default_rng(7)
    sequences = _write_genome(root / "genome.fa", rng, length=8000)
    _write_vcf(root / "train.vcf", sequences, rng, per_contig=1500)
    # The paper's network, like the motif classifier's: the label's base lies at offset 8,
    # which its first block reads directly. Over seeds 1-5, this budget gives test ROC-AUC
    # 0.885, 0.976, 0.915, 0.967, 0.926, and context maps that peak at the label's base for
    # 5, 4, 5, 5, 5 of the 6 SNVs below (7-9 of 12); seed 4 passes both checks with a margin.
    result = finetune.run(finetune_config(root, root / "ft", max_tokens=2000, local_radius=0,
                                          training=TrainingSettings(epochs=14, learning_rate=3e-3,
                                                                    seed=4, patience=None)))
    assert result.metrics["model"]["test"]["roc_auc"] > 0.9, result.metrics["model"]["test"]
    lines = (root / "train.vcf").read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    c3 = [line for line in lines if line.startswith("c3\t")][:6]
    (root / "few.vcf").write_text("\n".join(header + c3) + "\n")
    return root, sequences


def _explain_variants(root, output, *extra, reference="genome.fa"):
    return run_cli("explain", str(root / "few.vcf"), "--reference",
                   str(root / reference), "--model", str(root / "ft"),
                   "--flank", "10", "-o", str(output), "--device", "cpu",
                   *extra)


def test_variant_context_map_finds_the_base_the_label_depends_on(variant_model, tmp_path):
    from tests.test_finetune_pipeline import DISTANCE

    root, sequences = variant_model
    result = _explain_variants(root, tmp_path / "ctx.tsv", "--plot")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "ctx.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 6 * 20 * 3  # 6 SNVs, 10 bp each side, 3 substitutions
    peaks = 0
    for pos in sorted({int(row["pos"]) for row in rows}):
        ours = [row for row in rows if int(row["pos"]) == pos]
        assert all(sequences["c3"][int(row["position"]) - 1] == row["context_ref"]
                   for row in ours)
        assert pos not in {int(row["position"]) for row in ours}
        top = max(ours, key=lambda row: abs(float(row["delta_log_odds"])))
        peaks += int(top["position"]) == pos - DISTANCE
    assert peaks >= 5, peaks
    bedgraph = [line.split("\t") for line in (tmp_path / "ctx.bedgraph").read_text().splitlines()]
    starts = [int(fields[1]) for fields in bedgraph]
    assert starts == sorted(set(starts)) and all(fields[0] == "c3" for fields in bedgraph)
    with Image.open(tmp_path / "ctx.png") as image:
        assert image.size[0] > 300


def test_variant_context_delta_equals_scoring_the_mutated_reference(variant_model, tmp_path):
    root, sequences = variant_model
    result = _explain_variants(root, tmp_path / "ctx.tsv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "ctx.tsv") as handle:
        row = list(csv.DictReader(handle, delimiter="\t"))[7]
    position = int(row["position"]) - 1
    mutated = dict(sequences)
    mutated["c3"] = sequences["c3"][:position] + row["context_alt"] + sequences["c3"][position + 1:]
    (root / "mutated.fa").write_text("".join(f">{name}\n{seq}\n" for name, seq in mutated.items()))

    def logit(reference):
        out = tmp_path / f"{reference}.tsv"
        outcome = run_cli("predict", str(root / "few.vcf"), "--reference",
                          str(root / reference), "--model", str(root / "ft"),
                          "--tsv", "--precision", "fp32", "--device", "cpu",
                          "-o", str(out))
        assert outcome.exit_code == 0, outcome.output
        with open(out) as handle:
            score = {int(r["pos"]): float(r["score"]) for r in csv.DictReader(
                handle, delimiter="\t")}[int(row["pos"])]
        return np.log(score / (1 - score))

    assert float(row["delta_log_odds"]) == pytest.approx(
        logit("mutated.fa") - logit("genome.fa"), abs=1e-3)


def test_explaining_a_vcf_needs_a_finetuned_model(variant_model, motif_run, tmp_path):
    root, _ = variant_model
    result = run_cli("explain", str(root / "few.vcf"), "--reference",
                     str(root / "genome.fa"), "--model",
                     str(motif_run[0] / "run"), "-o", str(tmp_path / "x.tsv"))
    assert result.exit_code == 1 and "needs a `cmx finetune` model" in result.output
    assert not (tmp_path / "x.tsv").exists()
    result = run_cli("explain", str(motif_run[0] / "motif.fa"), "--model",
                     str(root / "ft"), "-o", str(tmp_path / "x.tsv"))
    assert result.exit_code == 1 and "--reference" in result.output


def test_gradient_times_input_is_exact_for_a_linear_network_with_a_local_stem():
    """With its blocks' updates zeroed and no norms, a two-class classifier's log-odds are
    linear in the embedded input, so the estimate must equal ISM, at the sequence's ends
    too, where the stem's neighbours stop."""
    import torch

    from models import ChordMixerConfig, ClassifierConfig, SequenceClassifier

    torch.manual_seed(0)
    encoder = ChordMixerConfig(max_len=32, track_size=2, hidden_size=4, dropout=0.0,
                               norm=False, local_radius=3)
    model = SequenceClassifier(ClassifierConfig(encoder, n_classes=2)).eval()
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.mix[-1].weight.zero_()
            block.mix[-1].bias.zero_()
    tokens = encode("ACGTTGCAAGCTAGGCTTAACG")
    exact = mutagenesis(model, tokens, 0, len(tokens), max_tokens=4096)
    estimate = gradient_times_input(model, tokens, 0, len(tokens))
    np.testing.assert_allclose(estimate.delta, exact.delta, rtol=1e-4, atol=1e-5)
    assert np.abs(exact.delta).max() > 1e-3  # the stem's vectors do move the log-odds
