"""`cmx pretrain`, `cmx evaluate`, `cmx train --init` and zero-shot SNV scores."""
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from cmx_cli.alphabet import encode
from cmx_cli.cli import render
from cmx_cli.errors import CmxError
from cmx_cli.pipelines import evaluate, pretrain, train
from cmx_cli.io.checkpoint import load_checkpoint
from cmx_cli.metrics.masked_bases import beyond_local_statistics
from cmx_cli.settings import EncoderStart, TrainingSettings
from cmx_cli.tasks.masked_bases import MaskingSettings
from cmx_cli.tasks.masked_bases import ZeroShotScorer
from cmx_cli.training.job import NewModel
from models import ChordMixerConfig, MaskedAutoencoder, MaskedAutoencoderConfig
from tests.helpers import flat_config, run_cli


def _pretrain_config(data_dir, out, **overrides):
    values = dict(
        fasta=(str(data_dir / "pretrain_lambda.fa"),), out=str(out), min_length=64,
        max_length=1024, tokens_per_epoch=6000, validation_tokens=2000, track_size=4,
        hidden_size=16, decoder_track_size=2, decoder_hidden_size=8, dropout=0.0,
        markov_order=2, device="cpu", training=TrainingSettings(epochs=2, learning_rate=3e-3),
        masking=MaskingSettings(rate=0.3))
    values.update(overrides)
    return flat_config(pretrain.PretrainConfig, **values)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from tests.conftest import DATA

    out = tmp_path_factory.mktemp("pretrain") / "pre"
    result = pretrain.run(_pretrain_config(DATA, out))
    return out, result


def test_pretrain_run_directory_and_metrics(pretrained):
    out, result = pretrained
    for name in ("model.pt", "last.pt", "config.json", "metrics.json", "log.tsv", "baselines.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for source in ("model", "unigram", "markov"):
        values = metrics[source]
        assert values["n"] > 0
        assert values["bits_per_base"] > 0
        assert values["perplexity"] == pytest.approx(2 ** values["bits_per_base"])
        assert set(values["by_corruption"]) == {"mask", "random", "kept"}
    # The same masked positions are scored for the model and both baselines.
    assert metrics["model"]["n"] == metrics["unigram"]["n"] == metrics["markov"]["n"]
    assert "last 10%" in metrics["sources"]
    assert "bits/base" in result.summary


def test_the_summary_says_whether_the_model_learnt_more_than_local_statistics(pretrained):
    out, result = pretrained
    metrics = json.loads((out / "metrics.json").read_text())
    expected = beyond_local_statistics(metrics["model"], metrics["markov"], 2)
    assert f": {expected};" in result.summary
    rows = (out / "log.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    tokens = [int(row.split("\t")[header.index("tokens")]) for row in rows[1:]]
    assert len(tokens) == 2 and all(count >= 6000 for count in tokens)  # tokens_per_epoch


def test_an_encoder_learning_rate_share_applies_to_pretrained_encoders_only():
    model = torch.nn.Linear(1, 1)
    start = EncoderStart(init="pre", encoder_lr_scale=0.25)
    assert NewModel.started(model, {"weight": None}, start).encoder_lr_scale == 0.25
    assert NewModel.started(model, None, start).encoder_lr_scale == 1.0


def test_checkpoint_keeps_encoder_decoder_and_masking(pretrained):
    out, _ = pretrained
    checkpoint = load_checkpoint(out, "mlm")
    assert checkpoint.extra["masking"] == {"rate": 0.3, "scheme": "80-10-10", "lowercase_weight": 1.0}
    config = MaskedAutoencoderConfig.from_dict(checkpoint.model_config)
    assert config.encoder.max_len == 1024 and config.decoder.vocab_size == 0
    assert any(key.startswith("encoder.") for key in checkpoint.state_dict)
    assert any(key.startswith("decoder.") for key in checkpoint.state_dict)


def test_evaluate_prints_one_json_object(pretrained, data_dir, capsys):
    out, _ = pretrained
    result = evaluate.run(flat_config(evaluate.EvaluateConfig,
        model=str(out), fasta=str(data_dir / "pretrain_umaydis_genes.fa"), mask=0.3,
        device="cpu"))
    render.evaluation(result, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result.metrics))
    assert set(printed) == {"model", "unigram", "markov"}
    for values in printed.values():
        assert {"bits_per_base", "accuracy", "perplexity", "n"} <= set(values)


def test_evaluate_through_the_cli(pretrained, data_dir):
    out, _ = pretrained
    result = run_cli("evaluate", "--model", str(out), "--fasta",
                     str(data_dir / "pretrain_umaydis_genes.fa"), "--json",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"model", "unigram", "markov"}


def test_classifier_model_is_refused_by_evaluate(data_dir, tmp_path):
    fake = tmp_path / "model.pt"
    torch.save({"format": "cmx-checkpoint", "format_version": 1, "kind": "classifier",
                "model_config": {}, "state_dict": {}}, fake)
    refused = "made by `cmx train`; this needs a model made by `cmx pretrain`.*Hint:"
    with pytest.raises(CmxError, match=refused):
        evaluate.run(flat_config(evaluate.EvaluateConfig, model=str(fake), fasta=str(data_dir / "pretrain_lambda.fa")))


def test_train_init_loads_and_freezes_the_encoder(pretrained, data_dir, tmp_path):
    out, _ = pretrained
    capsule = data_dir / "capsule_small"
    result = train.run(flat_config(train.TrainConfig,
        fasta=(f"{capsule / 'klebsiella.fa'}:Klebsiella", f"{capsule / 'acinetobacter.fa'}:Acinetobacter"),
        out=str(tmp_path / "run"), init=str(out), freeze_encoder=True, kmer_k=3, device="cpu",
        training=TrainingSettings(epochs=1, seed=0)))
    encoder = {key[len("encoder."):]: value for key, value
               in load_checkpoint(out, "mlm").state_dict.items() if key.startswith("encoder.")}
    classifier = load_checkpoint(tmp_path / "run", "classifier")
    trunk = {key[len("encoder."):]: value for key, value in classifier.state_dict.items()
             if key.startswith("encoder.")}
    assert trunk.keys() == encoder.keys()
    assert all(torch.equal(trunk[key], encoder[key]) for key in encoder)
    assert classifier.model_config["encoder"]["max_len"] == 1024
    # Genes longer than the encoder's max_len are flagged.
    assert any("max_len" in warning for warning in result.metrics["warnings"])


def test_init_rejects_shape_flags(pretrained, data_dir, tmp_path):
    out, _ = pretrained
    result = run_cli("train", "--fasta", str(data_dir / "capsule_small" / "query.fa"),
                     "--init", str(out), "--track-size", "8",
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--track-size" in result.stderr


def test_a_reversible_encoder_pretrains_and_initialises_a_classifier(data_dir, tmp_path):
    pretrain.run(_pretrain_config(data_dir, tmp_path / "pre", reversible=True, dropout=0.1,
                                  training=TrainingSettings(epochs=1, learning_rate=3e-3)))
    config = load_checkpoint(tmp_path / "pre", "mlm").model_config
    assert config["encoder"]["reversible"] and config["decoder"]["reversible"]
    capsule = data_dir / "capsule_small"
    train.run(flat_config(train.TrainConfig,
        fasta=(f"{capsule / 'klebsiella.fa'}:Klebsiella", f"{capsule / 'acinetobacter.fa'}:Acinetobacter"),
        out=str(tmp_path / "run"), init=str(tmp_path / "pre"), kmer_k=3, device="cpu",
        training=TrainingSettings(epochs=1, max_steps=2, seed=0)))
    assert load_checkpoint(tmp_path / "run", "classifier").model_config["encoder"]["reversible"]


@pytest.mark.parametrize("arguments, expected", [
    (["--reversible", "--decoder-track-size", "3"], "even --decoder-track-size"),
    (["--reversible", "--track-size", "5"], "even --track-size"),
    (["--reversible", "--checkpointing"], "drop --checkpointing"),
])
def test_reversible_option_mistakes_are_usage_errors(data_dir, tmp_path, arguments, expected):
    result = run_cli("pretrain", "--fasta", str(data_dir / "pretrain_lambda.fa"),
                     "--out", str(tmp_path / "pre"), *arguments)
    assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not (tmp_path / "pre").exists()


@dataclass
class _Window:
    ref_tokens: np.ndarray
    alt_tokens: np.ndarray
    ref_span: tuple
    alt_span: tuple


def _snv(sequence: str, position: int, alt: str) -> _Window:
    ref_tokens = encode(sequence)
    alt_tokens = ref_tokens.copy()
    alt_tokens[position] = encode(alt)[0]
    return _Window(ref_tokens, alt_tokens, (position, position + 1), (position, position + 1))


def test_zero_shot_score_is_the_two_strand_log_likelihood_ratio():
    torch.manual_seed(0)
    config = MaskedAutoencoderConfig.build(
        ChordMixerConfig(max_len=64, track_size=4, hidden_size=16, dropout=0.0), 2, 8)
    model = MaskedAutoencoder(config).eval()
    scorer = ZeroShotScorer(model, 4096, torch.device("cpu"), "fp32")
    context = "ACGTTGCAACGGTACCATGCAAGTCCGATGCA"
    window = _snv(context, 9, "T")  # REF C at 9
    score = scorer([window])[0]

    def log_probabilities(tokens, position):
        inputs = tokens.copy()
        inputs[position] = 5
        with torch.no_grad():
            logits = model(torch.from_numpy(inputs.astype(np.int64)), torch.tensor([0, len(inputs)]))
        return torch.log_softmax(logits, dim=1)[position].numpy()

    assert context[9] == "C"
    forward = log_probabilities(window.ref_tokens, 9)
    backward_tokens = encode(context.translate(str.maketrans("ACGT", "TGCA"))[::-1])
    backward = log_probabilities(backward_tokens, len(context) - 1 - 9)
    expected = ((forward[3] - forward[1]) + (backward[0] - backward[2])) / 2  # T-C, then A-G
    assert score == pytest.approx(expected, abs=1e-5)
    # The masked input does not depend on which allele is called REF: swapping them negates.
    swapped = _snv(context[:9] + "T" + context[10:], 9, "C")
    assert scorer([swapped])[0] == pytest.approx(-score, abs=1e-5)


def test_zero_shot_vcf_keeps_every_record(pretrained, data_dir, tmp_path):
    import pysam

    from cmx_cli.pipelines import predict_vcf

    out, _ = pretrained
    vcf = data_dir / "vcf" / "DWV_3genomes_vs_NC_004830.vcf.gz"
    scored = tmp_path / "scored.vcf.gz"
    summary = predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
        vcf=str(vcf), reference=str(data_dir / "vcf" / "DWV_NC_004830.2.fa"), model=str(out),
        output=str(scored), window=101, device="cpu"))
    assert (tmp_path / "scored.vcf.gz.tbi").is_file()
    with pysam.VariantFile(str(vcf)) as original, pysam.VariantFile(str(scored)) as annotated:
        assert annotated.header.info["CMX"].number == "A"
        pairs = list(zip(original, annotated, strict=True))
    n_scored = 0
    for before, after in pairs:
        assert (before.chrom, before.pos, before.ref, before.alts) == (after.chrom, after.pos, after.ref, after.alts)
        values = after.info.get("CMX", (None,) * len(after.alts))
        for alt, value in zip(after.alts, values):
            is_snv = len(after.ref) == 1 and len(alt) == 1
            if not is_snv:
                assert value is None, (after.pos, alt)
            n_scored += value is not None
    assert n_scored == summary.scored > 0
    assert summary.outcomes["indel"] > 0


def test_vcf_with_a_classifier_model_is_refused(data_dir, tmp_path):
    from cmx_cli.pipelines import predict_vcf
    from cmx_cli.io.checkpoint import Checkpoint, save_checkpoint
    from models import ClassifierConfig, SequenceClassifier

    config = ClassifierConfig(ChordMixerConfig(max_len=8, track_size=1, hidden_size=2), 2)
    save_checkpoint(Checkpoint("classifier", config.to_dict(),
                               SequenceClassifier(config).state_dict(), ["a", "b"]),
                    tmp_path / "model.pt")
    with pytest.raises(CmxError, match="cannot score variants.*Hint:"):
        predict_vcf.run(flat_config(predict_vcf.PredictVcfConfig,
            vcf=str(data_dir / "vcf" / "DWV_3genomes_vs_NC_004830.vcf.gz"),
            reference=str(data_dir / "vcf" / "DWV_NC_004830.2.fa"), model=str(tmp_path),
            output=str(tmp_path / "out.vcf")))
    assert not (tmp_path / "out.vcf").exists()


def test_pretrain_resumes_after_an_interruption(data_dir, tmp_path):
    from cmx_cli.console import Reporter

    class InterruptAfterFirstEpoch(Reporter):
        def note(self, message):
            if message.startswith("epoch 1:"):
                raise KeyboardInterrupt

    config = _pretrain_config(data_dir, tmp_path / "pre")
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(config, InterruptAfterFirstEpoch(quiet=True))
    assert not (tmp_path / "pre" / "metrics.json").exists()
    result = run_cli("pretrain", "--resume", "--out", str(tmp_path / "pre"),
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert metrics["training"]["epochs_completed"] == 2
    assert pretrain.read_config(tmp_path / "pre") == config


def test_damaged_pretrained_checkpoint_is_a_user_error(pretrained, data_dir, tmp_path):
    from cmx_cli.io.checkpoint import Checkpoint, save_checkpoint

    out, _ = pretrained
    good = load_checkpoint(out, "mlm")
    damaged = {key: value for key, value in good.state_dict.items() if not key.startswith("decoder.")}
    save_checkpoint(Checkpoint("mlm", good.model_config, damaged, extra=good.extra), tmp_path / "model.pt")
    with pytest.raises(CmxError, match="weights do not fit.*Hint:"):
        evaluate.run(flat_config(evaluate.EvaluateConfig, model=str(tmp_path), fasta=str(data_dir / "pretrain_lambda.fa")))
