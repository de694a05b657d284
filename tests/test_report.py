"""Held-out predictions, bootstrap intervals and `cmx report`: the figures' data are the runs'."""
import base64
import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from cmx_cli.errors import CmxError
from cmx_cli.io.predictions import HeldOutPredictions, read_predictions
from cmx_cli.metrics.bootstrap import (
    _average_precision_rows, _roc_auc_rows, bootstrap_intervals, stratified_resamples)
from cmx_cli.metrics.classification import binary_metrics, classification_metrics
from cmx_cli.pipelines import finetune, pretrain, train
from cmx_cli.settings import TrainingSettings
from tests.conftest import DATA
from tests.helpers import check_user_error, run_cli
from tests.test_finetune_pipeline import _config as finetune_config
from tests.test_finetune_pipeline import _write_genome, _write_vcf
from tests.test_pretrain_pipeline import _pretrain_config
from tests.test_train_pipeline import _config as train_config


def test_bulk_metrics_equal_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    for n in (7, 60, 301):
        positive = rng.random((6, n)) < 0.4
        positive[:, 0], positive[:, 1] = True, False
        scores = np.round(rng.random((6, n)), 1)  # many ties
        roc, pr = _roc_auc_rows(positive, scores), _average_precision_rows(positive, scores)
        for row in range(6):
            assert roc[row] == pytest.approx(roc_auc_score(positive[row], scores[row]), abs=1e-12)
            assert pr[row] == pytest.approx(
                average_precision_score(positive[row], scores[row]), abs=1e-12)


def test_resamples_keep_each_class_size():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    rows = stratified_resamples(labels, resamples=50, seed=1)
    assert rows.shape == (50, 12)
    for row in rows:
        assert np.bincount(labels[row]).tolist() == [5, 3, 4]


def test_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    p = np.clip(0.35 * labels + 0.65 * rng.random(400), 0, 1)
    metrics = binary_metrics(labels, p, intervals=True)
    assert metrics == binary_metrics(labels, p, intervals=True)
    for key in ("roc_auc", "pr_auc"):
        low, high = metrics[f"{key}_ci"]
        assert low < metrics[key] < high
        assert high - low < 0.2
    # Fewer items, wider intervals.
    small = binary_metrics(labels[:40], p[:40], intervals=True)
    assert np.diff(small["roc_auc_ci"]) > np.diff(metrics["roc_auc_ci"])
    # Undefined with one class, as the metric itself.
    assert bootstrap_intervals(np.zeros(5, int), np.full((5, 2), 0.5), 2) == {
        "roc_auc_ci": None, "pr_auc_ci": None}
    three = classification_metrics(rng.integers(0, 3, 90), rng.dirichlet([1, 1, 1], 90), 3,
                                   intervals=True)
    assert three["roc_auc_ci"][0] <= three["roc_auc"] <= three["roc_auc_ci"][1]


def test_predictions_round_trip_and_a_changed_file_is_named(tmp_path):
    table = HeldOutPredictions("test", ["a", "b"], ["x", "y"], np.array([10, 20]),
                               np.array([1, 0]), [".", "."],
                               np.array([[0.1, 0.9], [1 / 3, 2 / 3]]),
                               np.array([[0.5, 0.5], [0.25, 0.75]]))
    path = tmp_path / "test_predictions.tsv"
    table.write(path)
    back = read_predictions(path)
    assert back.names == ["x", "y"] and back.class_names == ["a", "b"]
    assert np.array_equal(back.cmx, table.cmx)  # every digit kept
    assert np.array_equal(back.labels, table.labels)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[2].replace("\ta\t", "\tc\t")]) + "\n")
    with pytest.raises(CmxError) as error:
        read_predictions(path)
    check_user_error(error.value, path, "line 3", "y")


def _recomputed(predictions, source):
    return classification_metrics(predictions.labels, predictions.probabilities(source),
                                  len(predictions.class_names))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    train.run(train_config(DATA, root / "train"))
    train.run(train_config(DATA, root / "train2", training=TrainingSettings(
        epochs=1, learning_rate=3e-3, seed=2)))
    rng = np.random.default_rng(7)
    sequences = _write_genome(root / "genome.fa", rng, length=4000)
    _write_vcf(root / "grouped.vcf", sequences, rng, per_contig=120, groups=True)
    finetune.run(finetune_config(root, root / "finetune", vcf=str(root / "grouped.vcf"),
                                 group_field="TISSUE"))
    pretrain.run(_pretrain_config(DATA, root / "pretrain"))
    return root


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_train_keeps_the_predictions_its_metrics_come_from(runs):
    metrics = _metrics(runs / "train")
    predictions = read_predictions(runs / "train" / "test_predictions.tsv")
    assert predictions.split == "test" and len(predictions.names) == metrics["model"]["test"]["n"]
    for source, key in (("cmx", "model"), ("baseline", "kmer_baseline")):
        expected = {k: v for k, v in metrics[key]["test"].items() if not k.endswith("_ci")}
        assert _recomputed(predictions, source) == expected
    split = {row["name"]: row["split"] for row in _tsv(runs / "train" / "split.tsv")}
    assert {split[name] for name in predictions.names} == {"test"}


def test_finetune_keeps_predictions_with_groups(runs):
    metrics = _metrics(runs / "finetune")
    predictions = read_predictions(runs / "finetune" / "test_predictions.tsv")
    assert predictions.class_names == ["0", "1"] and set(predictions.groups) == {"a", "b"}
    assert all(re.fullmatch(r"c3:\d+:[ACGT]>[ACGT]", name) for name in predictions.names)
    for source, key in (("cmx", "model"), ("baseline", "flank_baseline")):
        expected = {k: v for k, v in metrics[key]["test"].items() if not k.endswith("_ci")}
        assert _recomputed(predictions, source) == expected
        low, high = metrics[key]["test"]["roc_auc_ci"]
        assert low <= metrics[key]["test"]["roc_auc"] <= high
        for group in ("a", "b"):
            assert metrics[key]["test_by_group"][group]["roc_auc_ci"] is not None


def _tsv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_report_html_embeds_figures_whose_data_match_the_runs(runs, tmp_path):
    output = tmp_path / "report.html"
    result = run_cli("report", str(runs / "train"), str(runs / "train2"),
                     str(runs / "finetune"), str(runs / "pretrain"),
                     "-o", str(output))
    assert result.exit_code == 0, result.output
    page = output.read_text()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    names = ["training", "roc", "pr", "length", "groups", "pretraining", "pretraining_detail"]
    assert len(images) == len(names)
    for image in images:
        width, height = Image.open(io.BytesIO(base64.b64decode(image))).size
        assert width > 300 and height > 200
    for name in names:
        assert (tmp_path / f"report.{name}.tsv").is_file(), name

    roc = _tsv(tmp_path / "report.roc.tsv")
    for run, key, model in (("train", "model", "cmx"), ("train", "kmer_baseline", "k-mer baseline"),
                            ("finetune", "flank_baseline", "flank baseline")):
        metrics = _metrics(runs / run)
        rows = [row for row in roc if row["run"] == str(runs / run) and row["model"] == model]
        assert len(rows) == 101
        assert {float(row["roc_auc"]) for row in rows} == {metrics[key]["test"]["roc_auc"]}
        assert [float(rows[0]["roc_auc_low"]), float(rows[0]["roc_auc_high"])] == \
            metrics[key]["test"]["roc_auc_ci"]
        tpr = [float(row["true_positive_rate"]) for row in rows]
        assert tpr == sorted(tpr) and tpr[-1] == 1.0
        assert all(float(row["true_positive_rate_low"]) <= float(row["true_positive_rate_high"])
                   for row in rows)
    pr = _tsv(tmp_path / "report.pr.tsv")
    ft_pr = {float(row["pr_auc"]) for row in pr if row["run"] == str(runs / "finetune")
             and row["model"] == "cmx"}
    assert ft_pr == {_metrics(runs / "finetune")["model"]["test"]["pr_auc"]}

    length = _tsv(tmp_path / "report.length.tsv")
    bins = _metrics(runs / "train")["model"]["test_by_length"]
    ours = [row for row in length if row["run"] == str(runs / "train") and row["model"] == "cmx"]
    assert [(row["percentiles"], int(row["n"]), float(row["roc_auc"]),
             [float(row["roc_auc_low"]), float(row["roc_auc_high"])]) for row in ours] == \
        [(b["percentiles"], b["n"], b["roc_auc"], b["roc_auc_ci"]) for b in bins]

    groups = _tsv(tmp_path / "report.groups.tsv")
    by_group = _metrics(runs / "finetune")["model"]["test_by_group"]
    assert {row["group"]: float(row["roc_auc"]) for row in groups if row["model"] == "cmx"} == \
        {group: values["roc_auc"] for group, values in by_group.items()}

    training = _tsv(tmp_path / "report.training.tsv")
    log = _tsv(runs / "train" / "log.tsv")
    losses = [float(row["value"]) for row in training
              if row["run"] == str(runs / "train") and row["quantity"] == "train_loss"]
    assert losses == [float(row["train_loss"]) for row in log]
    assert {row["run"] for row in training} == {str(runs / name) for name in
                                               ("train", "train2", "finetune", "pretrain")}

    pretraining = _tsv(tmp_path / "report.pretraining.tsv")
    metrics = _metrics(runs / "pretrain")
    assert {float(row["bits_per_base"]) for row in pretraining if row["model"] == "Markov"} == \
        {metrics["markov"]["bits_per_base"]}
    assert [float(row["bits_per_base"]) for row in pretraining if row["model"] == "cmx"] == \
        [float(row["val_bits_per_base"]) for row in _tsv(runs / "pretrain" / "log.tsv")]
    detail = _tsv(tmp_path / "report.pretraining_detail.tsv")
    for model, key in (("cmx", "model"), ("Markov", "markov")):
        for split_by in ("by_corruption", "by_position"):
            rows = [row for row in detail if row["model"] == model and row["split_by"] == split_by]
            assert {row["category"]: (int(row["n"]), float(row["bits_per_base"]))
                    for row in rows} == {category: (values["n"], values["bits_per_base"])
                                         for category, values in metrics[key][split_by].items()}


def test_report_as_pngs(runs, tmp_path):
    result = run_cli("report", str(runs / "train"), "-o",
                     str(tmp_path / "fig.png"))
    assert result.exit_code == 0, result.output
    for name in ("training", "roc", "pr", "length"):
        with Image.open(tmp_path / f"fig.{name}.png") as image:
            assert image.size[0] > 300
    assert not (tmp_path / "fig.png").exists()


def test_report_errors_are_one_line(runs, tmp_path):
    cases = [([str(tmp_path), "-o", str(tmp_path / "r.html")], "metrics.json"),
             ([str(runs / "train"), "-o", str(tmp_path / "r.pdf")], ".html"),
             ([str(runs / "train"), "-o", str(runs / "train" / "metrics.json")], ".html")]
    for arguments, expected in cases:
        result = run_cli("report", *arguments)
        assert result.exit_code == 1, result.output
        assert expected in result.output and "Hint:" in result.output
        assert "Traceback" not in result.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    result = run_cli("report", str(tmp_path / "broken"), "-o",
                     str(tmp_path / "r.html"))
    assert result.exit_code == 1 and "not readable JSON" in result.output
    assert not (tmp_path / "r.html").exists()
