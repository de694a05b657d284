"""`cmx finetune` and `cmx predict` with its models: learning, splits, groups, resume, errors."""
import csv
import json

import numpy as np
import pysam
import pytest
import torch

from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.pipelines import finetune, predict_vcf
from cmx_cli.settings import TrainingSettings
from tests.conftest import DATA
from tests.helpers import allow_compiler_warnings, check_user_error, flat_config, run_cli

BASES = "ACGT"
CONTIGS = ("c1", "c2", "c3")
DISTANCE = 8  # the label depends on the base this far upstream: beyond the ±5 bp baseline


def _write_genome(path, rng, length=6000):
    sequences = {name: "".join(rng.choice(list(BASES), length)) for name in CONTIGS}
    with open(path, "w") as handle:
        for name, sequence in sequences.items():
            handle.write(f">{name}\n")
            handle.writelines(sequence[i:i + 60] + "\n" for i in range(0, length, 60))
    return sequences


def _write_vcf(path, sequences, rng, per_contig=300, groups=False):
    """SNVs labelled 1 when the base DISTANCE bp upstream is G or C (flipped in group 'b')."""
    lines = ["##fileformat=VCFv4.2",
             '##INFO=<ID=LABEL,Number=1,Type=Integer,Description="label">',
             '##INFO=<ID=TISSUE,Number=1,Type=String,Description="group">']
    lines += [f"##contig=<ID={name},length={len(seq)}>" for name, seq in sequences.items()]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    truth = []
    for name, sequence in sequences.items():
        positions = np.sort(rng.choice(np.arange(40, len(sequence) - 40), per_contig, replace=False))
        for position in positions:
            ref = sequence[position]
            alt = rng.choice([b for b in BASES if b != ref])
            label = int(sequence[position - DISTANCE] in "GC")
            info = f"LABEL={label}"
            if groups:
                group = "a" if rng.random() < 0.5 else "b"
                label = label if group == "a" else 1 - label
                info = f"LABEL={label};TISSUE={group}"
            lines.append(f"{name}\t{position + 1}\t.\t{ref}\t{alt}\t.\t.\t{info}")
            truth.append((name, int(position) + 1, ref, alt, label))
    path.write_text("\n".join(lines) + "\n")
    return truth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(7)
    sequences = _write_genome(root / "genome.fa", rng, length=20000)
    truth = _write_vcf(root / "train.vcf", sequences, rng)
    grouped = _write_vcf(root / "grouped.vcf", sequences, rng, groups=True)
    _write_vcf(root / "learn.vcf", sequences, rng, per_contig=1500)
    return root, truth, grouped


def _config(root, out, **overrides):
    values = dict(
        reference=str(root / "genome.fa"), out=str(out), vcf=str(root / "train.vcf"),
        label_field="LABEL", window=33, val_contigs=("c2",), test_contigs=("c3",),
        track_size=8, hidden_size=32, head_hidden=32, dropout=0.0, max_tokens=4096,
        device="cpu", training=TrainingSettings(epochs=2, learning_rate=3e-3, seed=1))
    values.update(overrides)
    return flat_config(finetune.FinetuneConfig, **values)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A short run on few variants, for the mechanics."""
    root, _, _ = dataset
    out = tmp_path_factory.mktemp("runs") / "ft"
    result = finetune.run(_config(root, out, training=TrainingSettings(
        epochs=3, learning_rate=3e-3, seed=1)))
    return out, result


def test_learns_what_the_flank_baseline_cannot_see(dataset, tmp_path):
    root, _, _ = dataset
    result = finetune.run(_config(root, tmp_path / "ft", vcf=str(root / "learn.vcf"),
                                  max_tokens=2000, training=TrainingSettings(
                                      epochs=8, learning_rate=3e-3, seed=1, patience=None)))
    test = result.metrics["model"]["test"]
    baseline = result.metrics["flank_baseline"]["test"]
    assert test["n"] == 1500 and baseline["n"] == 1500
    assert test["roc_auc"] > 0.85, test
    assert baseline["roc_auc"] < 0.65, baseline


def test_run_directory_and_contig_split(trained, dataset):
    out, result = trained
    root, truth, _ = dataset
    for name in ("model.pt", "last.pt", "config.json", "split.tsv", "metrics.json", "log.tsv"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    with open(out / "split.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    expected = {f"{c}:{p}:{r}>{a}": {"c1": "train", "c2": "val", "c3": "test"}[c]
                for c, p, r, a, _ in truth}
    assert {row["name"]: row["split"] for row in rows} == expected
    labels_1 = sum(label for c, *_, label in truth if c == "c3")
    assert result.metrics["data"]["test"] == {"variants": 300, "label_1": labels_1}
    assert finetune.read_config(out) == _config(
        root, out, training=TrainingSettings(epochs=3, learning_rate=3e-3, seed=1))


def test_predict_writes_the_probability_of_every_allele(trained, dataset, tmp_path):
    out, result = trained
    root, truth, _ = dataset
    output = tmp_path / "scored.vcf.gz"
    summary = predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
        vcf=str(root / "train.vcf"), reference=str(root / "genome.fa"), model=str(out),
        output=str(output), device="cpu"))
    assert summary.records == len(truth) and summary.scored == len(truth)
    with pysam.VariantFile(str(output)) as scored:
        assert "CMX" in scored.header.info
        records = list(scored)
    scores = np.array([record.info["CMX"][0] for record in records])
    labels = np.array([label for *_, label in truth])
    assert ((scores >= 0) & (scores <= 1)).all()
    test = np.array([c == "c3" for c, *_ in truth])
    from sklearn.metrics import roc_auc_score
    # The model's window comes from the checkpoint, so the scores match the run's own test.
    assert roc_auc_score(labels[test], scores[test]) == pytest.approx(
        result.metrics["model"]["test"]["roc_auc"], abs=1e-3)


def test_background_percentiles_rank_each_score_among_random_snvs(trained, dataset, tmp_path):
    from cmx_cli.io.checkpoint import load_checkpoint
    from cmx_cli.io.reference import ReferenceGenome
    from cmx_cli.variants.background import draw_background, score_background

    out, _ = trained
    root, truth, _ = dataset
    with ReferenceGenome(root / "genome.fa") as reference:
        drawn = draw_background(reference, 200, 33)
        again = draw_background(reference, 200, 33)
        assert [w.ref_tokens.tobytes() for w in drawn] == [w.ref_tokens.tobytes() for w in again]
        for window in drawn:
            assert len(window.ref_tokens) == 33 and (window.ref_tokens < 4).all()
            assert window.ref_tokens[window.ref_span[0]] != window.alt_tokens[window.alt_span[0]]
        config = flat_config(predict_vcf.PredictVcfConfig, vcf=str(root / "train.vcf"),
                             reference=str(root / "genome.fa"), model=str(out),
                             output=str(tmp_path / "scored.vcf"), device="cpu", background=200)
        scorer, window = predict_vcf.build_scorer(load_checkpoint(out), config)
        expected = score_background(scorer, reference, 200, window, 1).scores[0]
    predict_vcf.run(config)
    with pysam.VariantFile(str(tmp_path / "scored.vcf")) as scored:
        assert "random SNVs" in scored.header.info["CMX_PCT"].description
        pairs = [(record.info["CMX"][0], record.info["CMX_PCT"][0]) for record in scored]
    assert len(pairs) == len(truth)
    for score, percentile in pairs:
        assert 0 <= percentile <= 100
        assert percentile == pytest.approx(
            100 * np.mean(expected <= score), abs=100 / 200 + 1e-3)
    ordered = sorted(pairs)
    assert all(a[1] <= b[1] + 1e-6 for a, b in zip(ordered, ordered[1:]))
    tsv = tmp_path / "scored.tsv"
    predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig, vcf=str(root / "train.vcf"),
                                reference=str(root / "genome.fa"), model=str(out),
                                output=str(tsv), tsv=True, device="cpu", background=200))
    with open(tsv) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [float(row["percentile"]) for row in rows] == pytest.approx(
        [percentile for _, percentile in pairs], abs=1e-3)


def test_background_needs_room_in_the_reference(trained, tmp_path):
    out, _ = trained
    (tmp_path / "short.fa").write_text(">s\nACGTNNNNNNACGT\n")
    from cmx_cli.io.reference import ReferenceGenome
    from cmx_cli.variants.background import draw_background

    with ReferenceGenome(tmp_path / "short.fa") as reference, pytest.raises(CmxError) as error:
        draw_background(reference, 10, 33)
    check_user_error(error.value, "short.fa", "--background")


def test_predict_rc_averages_strands_and_a_window_can_be_overridden(trained, dataset, tmp_path):
    out, _ = trained
    root, _, _ = dataset

    def scores(**options):
        path = tmp_path / f"{len(options)}-{options.get('window')}.tsv"
        predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
            vcf=str(root / "train.vcf"), reference=str(root / "genome.fa"), model=str(out),
            output=str(path), tsv=True, device="cpu", **options))
        with open(path) as handle:
            return np.array([float(row["score"]) for row in csv.DictReader(handle, delimiter="\t")])

    forward, both, wider = scores(), scores(average_strands=True), scores(window=65)
    assert not np.allclose(forward, both) and not np.allclose(forward, wider)
    assert np.corrcoef(forward, both)[0, 1] > 0.5


@allow_compiler_warnings
def test_predict_with_compile_scores_as_without(trained, dataset, tmp_path, fresh_compiler):
    out, _ = trained
    root, _, _ = dataset

    def scores(name, **options):
        predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
            vcf=str(root / "train.vcf"), reference=str(root / "genome.fa"), model=str(out),
            output=str(tmp_path / name), tsv=True, device="cpu", **options))
        with open(tmp_path / name) as handle:
            return np.array([float(row["score"]) for row in csv.DictReader(handle, delimiter="\t")])

    # In exact float32: bf16 prediction rounds fused and unfused kernels differently.
    eager = scores("eager.tsv", precision="fp32")
    compiled = scores("compiled.tsv", compile_blocks=True, precision="fp32")
    assert fresh_compiler["stats"]["unique_graphs"] > 0
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_resume_replays_an_uninterrupted_run(dataset, tmp_path):
    root, _, _ = dataset

    class InterruptAfterFirstEpoch(Reporter):
        def note(self, message):
            if message.startswith("epoch 1:"):
                raise KeyboardInterrupt

    settings = TrainingSettings(epochs=2, learning_rate=3e-3, seed=1)
    finetune.run(_config(root, tmp_path / "whole", training=settings))
    with pytest.raises(KeyboardInterrupt):
        finetune.run(_config(root, tmp_path / "cut", training=settings),
                     InterruptAfterFirstEpoch(quiet=True))
    # As a user resumes: the run directory alone, no other flag.
    resumed = run_cli("finetune", "--resume", "--out", str(tmp_path / "cut"),
                      "--quiet")
    assert resumed.exit_code == 0, resumed.output
    whole, resumed = _weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)


def test_groups_get_their_own_outputs_and_metrics(dataset, tmp_path):
    root, _, grouped = dataset
    result = finetune.run(_config(root, tmp_path / "ft", vcf=str(root / "grouped.vcf"),
                                  group_field="TISSUE"))
    assert result.metrics["groups"] == ["a", "b"]
    by_group = result.metrics["model"]["test_by_group"]
    test_groups = [g for g in ("a", "b")]
    assert sum(by_group[g]["n"] for g in test_groups) == 300
    # Predict reads each record's group from the INFO field the model was trained with.
    output = tmp_path / "scored.tsv"
    summary = predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
        vcf=str(root / "grouped.vcf"), reference=str(root / "genome.fa"),
        model=str(tmp_path / "ft"), output=str(output), tsv=True, device="cpu"))
    assert summary.scored == len(grouped)
    fixed = tmp_path / "fixed.tsv"
    predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
        vcf=str(root / "grouped.vcf"), reference=str(root / "genome.fa"),
        model=str(tmp_path / "ft"), output=str(fixed), tsv=True, group="a", device="cpu"))

    def read(path):
        with open(path) as handle:
            return [float(row["score"]) for row in csv.DictReader(handle, delimiter="\t")]

    own, all_a = read(output), read(fixed)
    text = (root / "grouped.vcf").read_text().splitlines()
    groups = [line.split("TISSUE=")[1] for line in text if not line.startswith("#")]
    assert [o == a for o, a in zip(own, all_a)] == [g == "a" for g in groups]
    with pytest.raises(CmxError) as error:
        predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
            vcf=str(root / "grouped.vcf"), reference=str(root / "genome.fa"),
            model=str(tmp_path / "ft"), output=str(tmp_path / "x.tsv"), tsv=True, group="z",
            device="cpu"))
    check_user_error(error.value, "z", "a, b")
    # Records without the group field are kept, unscored, and counted.
    records = [line for line in text if not line.startswith("#")]
    partial = tmp_path / "partial.vcf"
    partial.write_text("\n".join([line for line in text if line.startswith("#")] + [
        line.split(";TISSUE=")[0] if index % 2 else line
        for index, line in enumerate(records)]) + "\n")
    summary = predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
        vcf=str(partial), reference=str(root / "genome.fa"),
        model=str(tmp_path / "ft"), output=str(tmp_path / "partial.out.vcf"), device="cpu"))
    assert summary.outcomes["no_group"] == len(records) // 2
    assert summary.written_records == len(records)
    # A VCF whose header lacks the field altogether is an error, not 0 variants scored.
    undeclared = tmp_path / "undeclared.vcf"
    undeclared.write_text("\n".join(line.split(";TISSUE=")[0] for line in text
                                    if "ID=TISSUE" not in line) + "\n")
    with pytest.raises(CmxError) as error:
        predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
            vcf=str(undeclared), reference=str(root / "genome.fa"),
            model=str(tmp_path / "ft"), output=str(tmp_path / "none.vcf"), device="cpu"))
    check_user_error(error.value, "undeclared.vcf", "TISSUE", "--group")
    assert not (tmp_path / "none.vcf").exists()


def test_default_split_keeps_window_blocks_whole(dataset, tmp_path):
    root, _, _ = dataset
    finetune.run(_config(root, tmp_path / "ft", val_contigs=(), test_contigs=(),
                         training=TrainingSettings(epochs=1, seed=1)))
    with open(tmp_path / "ft" / "split.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    split_of_block = {}
    for row in rows:
        contig, position = row["name"].split(":")[:2]
        block = (contig, int(position) // 33)
        assert split_of_block.setdefault(block, row["split"]) == row["split"]
    counts = {s: sum(row["split"] == s for row in rows) for s in ("train", "val", "test")}
    assert counts["test"] > 50 and counts["val"] > 50 and counts["train"] > 600


@pytest.mark.parametrize("overrides, names", [
    ({"test_contigs": ("chrX",)}, ["chrX", "c1, c2, c3"]),
    # Everything held out: the message says so (not "the training variants all have label").
    ({"val_contigs": ("c1",), "test_contigs": ("c2", "c3")},
     ["c1, c2, c3", "leave no variants for training"]),
])
def test_held_out_contig_errors(dataset, tmp_path, overrides, names):
    root, _, _ = dataset
    with pytest.raises(CmxError) as error:
        finetune.run(_config(root, tmp_path / "ft", **overrides))
    check_user_error(error.value, *names)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("arguments, expected", [
    ([], "--label-field"),  # no labels at all
    (["--label-field", "LABEL", "--labels", "genome.fa"], "--label-field"),
    (["--label-field", "LABEL", "--freeze-encoder"], "--freeze-encoder needs --init"),
    (["--label-field", "LABEL", "--init", ".", "--track-size", "4"], "drop --track-size"),
    (["--label-field", "LABEL", "--init", ".", "--reversible"], "drop --reversible"),
    (["--label-field", "LABEL", "--init", ".", "--local-context", "2"], "drop --local-context"),
    (["--label-field", "LABEL", "--encoder-lr-scale", "0.5"], "--encoder-lr-scale needs --init"),
    (["--label-field", "LABEL", "--init", ".", "--freeze-encoder", "--encoder-lr-scale", "0.5"],
     "drop --encoder-lr-scale"),
    (["--label-field", "LABEL", "--reversible", "--track-size", "5"], "even --track-size"),
])
def test_command_line_mistakes_are_usage_errors(dataset, tmp_path, arguments, expected):
    root, _, _ = dataset
    arguments = [str(root / a) if a in ("genome.fa", ".") else a for a in arguments]
    result = run_cli(
        "finetune", "--vcf", str(root / "train.vcf"), "--reference", str(root / "genome.fa"),
        "--out", str(tmp_path / "ft"), *arguments)
    assert result.exit_code == 2 and expected in result.output, result.output
    assert not (tmp_path / "ft").exists()


def test_a_sequence_classifier_cannot_score_variants(dataset, tmp_path, data_dir):
    root, _, _ = dataset
    capsule = data_dir / "capsule_small"
    trained = run_cli(
        "train", "--fasta", f"{capsule / 'klebsiella.fa'}:K", "--fasta",
        f"{capsule / 'acinetobacter.fa'}:A", "--out", str(tmp_path / "run"), "--track-size", "4",
        "--hidden-size", "16", "--max-steps", "1", "--kmer-k", "3")
    assert trained.exit_code == 0, trained.output
    result = run_cli(
        "predict", str(root / "train.vcf"), "--reference", str(root / "genome.fa"),
        "--model", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "classifier model cannot score variants" in result.output
    assert "cmx finetune" in result.output


ROBUSTNESS = sorted(path.name for path in (DATA / "vcf").iterdir()
                    if path.name not in ("MANIFEST.tsv",) and "DWV" not in path.name
                    and not path.name.endswith((".tbi", ".csi")))


@pytest.mark.parametrize("name", ROBUSTNESS)
def test_malformed_and_edge_case_vcfs_give_one_line_errors(name, dataset, tmp_path):
    # Each file is malformed or has no usable labelled variant on this reference: a clear
    # error, exit status 1, no traceback, and no run directory left behind.
    root, _, _ = dataset
    table = tmp_path / "labels.tsv"
    table.write_text("chrom\tpos\tref\talt\tlabel\n20\t14370\tG\tA\t1\n")
    result = run_cli(
        "finetune", "--vcf", str(DATA / "vcf" / name), "--labels", str(table),
        "--reference", str(root / "genome.fa"), "--out", str(tmp_path / "ft"))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None or \
        isinstance(result.exception, CmxError)
    message = result.output.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("Error: ") and "Hint:" in message[0]
    assert name in message[0] or "labels.tsv" in message[0]
    assert not (tmp_path / "ft").exists()


def test_a_group_only_in_held_out_data_is_an_error(dataset, tmp_path):
    root, _, _ = dataset
    lines = (root / "grouped.vcf").read_text().splitlines()
    # Group "c" only on the test contig c3.
    lines = [line.replace("TISSUE=a", "TISSUE=c") if line.startswith("c3\t") else line
             for line in lines]
    vcf = tmp_path / "unseen.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    with pytest.raises(CmxError) as error:
        finetune.run(_config(root, tmp_path / "ft", vcf=str(vcf), group_field="TISSUE"))
    check_user_error(error.value, "c", "training never sees")
    assert not (tmp_path / "ft").exists()
