"""`cmx predict` on FASTA: columns, order, streaming, strands, metrics, errors."""
import csv

import numpy as np
import pytest

from cmx_cli.alphabet import decode, reverse_complement
from cmx_cli.errors import CmxError
from cmx_cli.io.fasta import iter_records
from cmx_cli.pipelines import predict_fasta, train
from cmx_cli.settings import TrainingSettings
from tests.helpers import allow_compiler_warnings, check_user_error, flat_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny classifier trained once on the small capsule-gene set."""
    from tests.conftest import DATA

    capsule = DATA / "capsule_small"
    out = tmp_path_factory.mktemp("predict") / "run"
    train.run(flat_config(train.TrainConfig,
        fasta=(f"{capsule / 'klebsiella.fa'}:Klebsiella", f"{capsule / 'acinetobacter.fa'}:Acinetobacter"),
        out=str(out), track_size=4, hidden_size=16, dropout=0.0, kmer_k=3, device="cpu",
        training=TrainingSettings(epochs=1, seed=0)))
    return out


def _read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def _predict(run, fasta, out, **options):
    return predict_fasta.run(flat_config(predict_fasta.PredictFastaConfig,
        fasta=str(fasta), model=str(run), output=str(out), device="cpu", **options))


def test_rows_follow_input_order_with_probabilities(trained_run, data_dir, tmp_path):
    query = data_dir / "capsule_small" / "query.fa"
    _predict(trained_run, query, tmp_path / "p.tsv")
    rows = _read_tsv(tmp_path / "p.tsv")
    assert rows[0] == ["name", "length", "predicted", "p_Acinetobacter", "p_Klebsiella"]
    records = list(iter_records(query))
    assert [row[0] for row in rows[1:]] == [record.name for record in records]
    assert [int(row[1]) for row in rows[1:]] == [len(record) for record in records]
    for row in rows[1:]:
        probabilities = np.array(row[3:], dtype=float)
        assert abs(probabilities.sum() - 1.0) < 1e-5
        assert row[2] == ["Acinetobacter", "Klebsiella"][int(probabilities.argmax())]


def test_streaming_chunks_do_not_change_results(trained_run, data_dir, tmp_path):
    query = data_dir / "capsule_small" / "query.fa"
    _predict(trained_run, query, tmp_path / "one_chunk.tsv")
    _predict(trained_run, query, tmp_path / "many_chunks.tsv", chunk_tokens=1500, max_tokens=900)
    one, many = _read_tsv(tmp_path / "one_chunk.tsv"), _read_tsv(tmp_path / "many_chunks.tsv")
    # Names, lengths and order are exact; probabilities agree to float precision (other
    # batch companions change the matrix shapes, not the maths).
    assert [row[:2] for row in one] == [row[:2] for row in many]
    np.testing.assert_allclose(np.array([row[3:] for row in one[1:]], dtype=float),
                               np.array([row[3:] for row in many[1:]], dtype=float), atol=1e-5)


def test_rc_averages_both_strands(trained_run, data_dir, tmp_path):
    query = data_dir / "capsule_small" / "query.fa"
    reverse = tmp_path / "reverse.fa"
    reverse.write_text("".join(f">{r.name}\n{decode(reverse_complement(r.tokens))}\n"
                               for r in list(iter_records(query))))
    _predict(trained_run, query, tmp_path / "forward.tsv")
    _predict(trained_run, reverse, tmp_path / "reverse.tsv")
    _predict(trained_run, query, tmp_path / "both.tsv", average_strands=True)
    forward = np.array([row[3:] for row in _read_tsv(tmp_path / "forward.tsv")[1:]], dtype=float)
    backward = np.array([row[3:] for row in _read_tsv(tmp_path / "reverse.tsv")[1:]], dtype=float)
    both = np.array([row[3:] for row in _read_tsv(tmp_path / "both.tsv")[1:]], dtype=float)
    np.testing.assert_allclose(both, (forward + backward) / 2, atol=2e-6)
    assert not np.allclose(forward, backward, atol=1e-4), "strands should differ for this check"


@allow_compiler_warnings
def test_compile_gives_the_same_probabilities(trained_run, data_dir, tmp_path, fresh_compiler):
    query = data_dir / "capsule_small" / "query.fa"
    # In exact float32: bf16 prediction rounds fused and unfused kernels differently.
    _predict(trained_run, query, tmp_path / "eager.tsv", precision="fp32")
    _predict(trained_run, query, tmp_path / "compiled.tsv", compile_blocks=True,
             precision="fp32")
    assert fresh_compiler["stats"]["unique_graphs"] > 0
    eager, compiled = _read_tsv(tmp_path / "eager.tsv"), _read_tsv(tmp_path / "compiled.tsv")
    assert [row[:3] for row in eager] == [row[:3] for row in compiled]
    np.testing.assert_allclose(np.array([row[3:] for row in compiled[1:]], dtype=float),
                               np.array([row[3:] for row in eager[1:]], dtype=float), atol=1e-5)


def test_labels_give_metrics(trained_run, data_dir, tmp_path):
    result = _predict(trained_run, data_dir / "capsule_small" / "query.fa", tmp_path / "p.tsv",
                      label_regex=r"label=(\S+)")
    assert result.metrics["n"] == 20
    assert 0.0 <= result.metrics["roc_auc"] <= 1.0
    assert "ROC-AUC" in result.summary


def test_bad_record_leaves_no_output(trained_run, data_dir, tmp_path):
    bad = tmp_path / "bad.fa"
    good = (data_dir / "capsule_small" / "query.fa").read_text()
    bad.write_text(good + ">protein\nMKVLATTEQW\n")
    out = tmp_path / "p.tsv"
    with pytest.raises(CmxError, match="protein.*Hint:"):
        _predict(trained_run, bad, out)
    assert not out.exists()
    assert list(tmp_path.glob(".p.tsv*")) == []


def test_not_a_checkpoint(data_dir, tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_text("not a model\n")
    with pytest.raises(CmxError, match="not a cmx checkpoint.*Hint:"):
        _predict(fake, data_dir / "capsule_small" / "query.fa", tmp_path / "p.tsv")


def test_longer_than_max_len_is_said_in_the_summary(trained_run, tmp_path, capsys):
    from cmx_cli.cli import render
    from cmx_cli.console import Reporter

    fasta = tmp_path / "long.fa"
    fasta.write_text(">long\n" + "ACGT" * 2000 + "\n>short\nACGTTGCA\n")
    reporter = Reporter(quiet=True)
    result = predict_fasta.run(flat_config(predict_fasta.PredictFastaConfig,
        fasta=str(fasta), model=str(trained_run), output=str(tmp_path / "p.tsv"), device="cpu"),
        reporter)
    render.fasta_predictions(result, reporter)
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("cmx predict: 2 sequences")
    assert "warning: 1 sequence(s) are longer than the model's max_len" in last_line
    assert len(_read_tsv(tmp_path / "p.tsv")) == 3


def test_output_must_not_replace_the_input_fasta(trained_run, tmp_path):
    fasta = tmp_path / "query.fa"
    fasta.write_text(">a\nACGTACGTAC\n")
    with pytest.raises(CmxError) as error:
        predict_fasta.run(flat_config(predict_fasta.PredictFastaConfig,
            fasta=str(fasta), model=str(trained_run), output=str(fasta), device="cpu"))
    check_user_error(error.value, "replace the input")
    assert fasta.read_text() == ">a\nACGTACGTAC\n"
