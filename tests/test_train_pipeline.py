"""`cmx train` as a pipeline: run directory, metrics, determinism, resume, errors."""
import csv
import json
from dataclasses import replace

import pytest
import torch

from cmx_cli import interrupts
from cmx_cli.console import Reporter
from cmx_cli.errors import CmxError
from cmx_cli.pipelines import train
from cmx_cli.training.loop import TrainingInterrupted
from cmx_cli.settings import TrainingSettings
from tests.helpers import flat_config


def _config(data_dir, out, **overrides):
    capsule = data_dir / "capsule_small"
    values = dict(
        fasta=(f"{capsule / 'klebsiella.fa'}:Klebsiella", f"{capsule / 'acinetobacter.fa'}:Acinetobacter"),
        out=str(out), val_fraction=0.2, test_fraction=0.2, track_size=4, hidden_size=16,
        dropout=0.0, max_tokens=4096, kmer_k=3, device="cpu",
        training=TrainingSettings(epochs=2, learning_rate=3e-3, seed=1),
    )
    values.update(overrides)
    return flat_config(train.TrainConfig, **values)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_run_directory_holds_everything_needed(data_dir, tmp_path):
    result = train.run(_config(data_dir, tmp_path / "run"))
    run_dir = tmp_path / "run"
    for name in ("model.pt", "last.pt", "config.json", "split.tsv", "metrics.json", "log.tsv"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["classes"] == ["Acinetobacter", "Klebsiella"]
    # 40 + 40 sequences, 20% of each class to validation and to test.
    assert metrics["data"]["test"] == {"Acinetobacter": 8, "Klebsiella": 8}
    assert metrics["data"]["val"] == {"Acinetobacter": 8, "Klebsiella": 8}
    for source in ("model", "kmer_baseline"):
        test = metrics[source]["test"]
        assert test["n"] == 16
        assert 0.0 <= test["roc_auc"] <= 1.0
        assert sum(b["n"] for b in metrics[source]["test_by_length"]) == 16
    with open(run_dir / "log.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    with open(run_dir / "split.tsv") as handle:
        split_rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(split_rows) == 80
    assert train.read_config(run_dir) == _config(data_dir, run_dir)
    assert "test ROC-AUC" in result.summary


def test_same_seed_gives_identical_weights(data_dir, tmp_path):
    train.run(_config(data_dir, tmp_path / "a"))
    torch.manual_seed(12345)  # the caller's random state must not matter
    train.run(_config(data_dir, tmp_path / "b"))
    first, second = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(first[key], second[key]) for key in first)


class _InterruptAfterFirstEpoch(Reporter):
    def note(self, message):
        if message.startswith("epoch 1:"):
            raise KeyboardInterrupt


def test_resume_replays_an_uninterrupted_run(data_dir, tmp_path):
    settings = TrainingSettings(epochs=3, learning_rate=3e-3, seed=1)
    train.run(_config(data_dir, tmp_path / "whole", training=settings))
    with pytest.raises(KeyboardInterrupt):
        train.run(_config(data_dir, tmp_path / "cut", training=settings),
                  _InterruptAfterFirstEpoch(quiet=True))
    assert not (tmp_path / "cut" / "metrics.json").exists()
    result = train.run(train.read_config(tmp_path / "cut"), resume=True)
    assert result.metrics["training"]["epochs_completed"] == 3
    whole, resumed = _weights(tmp_path / "whole" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    with open(tmp_path / "cut" / "log.tsv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle, delimiter="\t")] == ["1", "2", "3"]


def test_max_steps_bounds_the_run(data_dir, tmp_path):
    result = train.run(_config(data_dir, tmp_path / "run",
                               training=TrainingSettings(epochs=5, max_steps=3, seed=1)))
    assert result.metrics["training"]["steps"] == 3
    assert result.metrics["training"]["stopped_because"] == "max-steps"


def test_explicit_test_fasta_with_regex_labels(data_dir, tmp_path):
    capsule = data_dir / "capsule_small"
    config = _config(data_dir, tmp_path / "run", label_regex=r"label=(\S+)",
                     fasta=(str(capsule / "klebsiella.fa"), str(capsule / "acinetobacter.fa")),
                     test_fasta=(str(capsule / "query.fa"),))
    result = train.run(config)
    assert result.metrics["data"]["test"] == {"Acinetobacter": 10, "Klebsiella": 10}


def test_duplicates_of_held_out_sequences_leave_training(data_dir, tmp_path):
    capsule = data_dir / "capsule_small"
    records = (capsule / "klebsiella.fa").read_text().split(">")[1:6]  # 5 records
    copy = tmp_path / "klebsiella_held_out.fa"
    copy.write_text("".join(">copy_" + record for record in records))
    config = _config(data_dir, tmp_path / "run", test_fraction=0.0, val_fraction=0.0,
                     test_fasta=(f"{copy}:Klebsiella",))
    result = train.run(config)
    assert result.metrics["data"]["test"] == {"Acinetobacter": 0, "Klebsiella": 5}
    assert result.metrics["data"]["train"] == {"Acinetobacter": 40, "Klebsiella": 35}
    assert any("5 exact duplicate" in warning for warning in result.metrics["warnings"])


def test_one_class_is_an_error(data_dir, tmp_path):
    capsule = data_dir / "capsule_small"
    with pytest.raises(CmxError, match="at least two.*Hint:"):
        train.run(_config(data_dir, tmp_path / "run", fasta=(str(capsule / "klebsiella.fa"),)))
    assert not (tmp_path / "run").exists(), "a failed run must not leave a run directory"


def test_existing_run_is_not_overwritten(data_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(CmxError, match="not empty.*Hint:"):
        train.run(_config(data_dir, tmp_path / "run"))
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_a_run_stopped_before_its_first_checkpoint_can_start_over(data_dir, tmp_path):
    settings = TrainingSettings(epochs=1, learning_rate=3e-3, seed=1)

    class InterruptAtFirstStep(Reporter):
        def progress(self, *arguments, **keywords):
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="before any checkpoint"):
        train.run(_config(data_dir, tmp_path / "run", training=settings),
                  InterruptAtFirstStep(quiet=True))
    assert not (tmp_path / "run" / "last.pt").exists()
    assert (tmp_path / "run" / "config.json").exists()  # the run had started
    train.run(_config(data_dir, tmp_path / "run", training=settings))  # the same command
    assert (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(CmxError, match="not empty"):  # a run with checkpoints is kept
        train.run(_config(data_dir, tmp_path / "run", training=settings))


def test_a_swallowed_ctrl_c_stops_training_at_its_next_step(data_dir, tmp_path, monkeypatch):
    # Pressed, and its KeyboardInterrupt lost in some __del__: only the record of it is left.
    monkeypatch.setattr(interrupts, "_state", {"interrupted": True})
    with pytest.raises(TrainingInterrupted, match="before any checkpoint"):
        train.run(_config(data_dir, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_needs_a_last_checkpoint(data_dir, tmp_path):
    with pytest.raises(CmxError, match="last.pt.*Hint:"):
        train.run(_config(data_dir, tmp_path / "run"), resume=True)


def test_resume_refuses_changed_data(data_dir, tmp_path):
    # Stopped by --max-time, so that it has something left to resume (a finished run says so).
    train.run(_config(data_dir, tmp_path / "run",
                      training=TrainingSettings(epochs=3, max_time_minutes=1e-9, seed=1)))
    saved = train.read_config(tmp_path / "run")
    changed = replace(saved, held_out=replace(saved.held_out, test_fraction=0.3))
    with pytest.raises(CmxError, match="split.*Hint:"):
        train.run(changed, resume=True)


def test_max_time_stops_after_the_current_step_and_stays_resumable(data_dir, tmp_path):
    # A deadline already passed: one optimizer step, then a clean stop with checkpoints.
    result = train.run(_config(data_dir, tmp_path / "run",
                               training=TrainingSettings(epochs=3, max_time_minutes=1e-9, seed=1)))
    assert result.metrics["training"]["stopped_because"] == "max-time"
    assert result.metrics["training"]["steps"] == 1
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "model.pt").is_file()
    with open(tmp_path / "run" / "log.tsv") as handle:
        assert [row["complete"] for row in csv.DictReader(handle, delimiter="\t")] == ["False"]


def test_group_regex_keeps_each_locus_in_one_split(data_dir, tmp_path):
    train.run(_config(data_dir, tmp_path / "run", group_regex=r"^([^|]+)",
                      training=TrainingSettings(epochs=1, seed=1)))
    with open(tmp_path / "run" / "split.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    split_of_locus = {}
    for row in rows:
        locus = (row["label"], row["name"].split("|")[0])
        assert split_of_locus.setdefault(locus, row["split"]) == row["split"], locus
    assert {row["split"] for row in rows} == {"train", "val", "test"}


def test_bad_group_regex_is_a_user_error(data_dir, tmp_path):
    with pytest.raises(CmxError, match="--group-regex.*Hint:"):
        train.run(_config(data_dir, tmp_path / "run", group_regex="(unclosed"))
    assert not (tmp_path / "run").exists()


def test_the_attention_baseline_trains_and_predicts(data_dir, tmp_path):
    from cmx_cli.pipelines import predict_fasta
    # A small max_len keeps the baseline shallow (its depth follows ⌈log2 max_len⌉).
    result = train.run(_config(data_dir, tmp_path / "run", arch="transformer", max_len=64,
                               training=TrainingSettings(epochs=1, max_steps=2, seed=1)))
    model_config = result.metrics["training"]["model_config"]
    assert model_config["arch"] == "transformer"
    chordmixer = train.run(_config(data_dir, tmp_path / "cm", max_len=64,
                                   training=TrainingSettings(epochs=1, max_steps=1, seed=1)))
    # Same width and depth as the ChordMixer the same flags build.
    trunk = chordmixer.metrics["training"]["model_config"]["encoder"]
    from models import ChordMixerConfig
    cm = ChordMixerConfig.from_dict(trunk)
    assert model_config["encoder"]["d_model"] == cm.d_model
    assert model_config["encoder"]["n_layers"] == cm.n_blocks
    predicted = predict_fasta.run(flat_config(predict_fasta.PredictFastaConfig,
        fasta=str(data_dir / "capsule_small" / "klebsiella.fa"), model=str(tmp_path / "run"),
        output=str(tmp_path / "p.tsv"), device="cpu"))
    assert predicted.n_sequences == 40



def test_a_reversible_network_trains_resumes_and_predicts(data_dir, tmp_path):
    from cmx_cli.pipelines import predict_fasta
    settings = TrainingSettings(epochs=2, learning_rate=3e-3, seed=1)
    whole = train.run(_config(data_dir, tmp_path / "whole", reversible=True, max_len=256,
                              dropout=0.1, training=settings))
    assert whole.metrics["training"]["model_config"]["encoder"]["reversible"] is True
    with pytest.raises(KeyboardInterrupt):
        train.run(_config(data_dir, tmp_path / "cut", reversible=True, max_len=256, dropout=0.1,
                          training=settings), _InterruptAfterFirstEpoch(quiet=True))
    train.run(train.read_config(tmp_path / "cut"), resume=True)
    weights = _weights(tmp_path / "whole" / "last.pt")
    resumed = _weights(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(weights[key], resumed[key]) for key in weights)
    predicted = predict_fasta.run(flat_config(predict_fasta.PredictFastaConfig,
        fasta=str(data_dir / "capsule_small" / "query.fa"), model=str(tmp_path / "cut"),
        output=str(tmp_path / "p.tsv"), device="cpu"))
    assert predicted.n_sequences == 20
