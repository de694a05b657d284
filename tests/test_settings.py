"""The settings groups and job configs: saved as plain dicts, rebuilt exactly."""
import json

import pytest

from cmx_cli.pipelines import finetune, pretrain, train
from cmx_cli.settings import (
    EncoderShape, Runtime, TrainingSettings, VariantInput, from_dict, to_dict)
from cmx_cli.tasks.masked_bases import MaskingSettings


@pytest.mark.parametrize("config", [
    train.TrainConfig(fasta=("a.fa:A", "b.fa"), out="run", val_fasta=("v.fa",),
                      shape=EncoderShape(max_len=300, reversible=True),
                      training=TrainingSettings(max_time_minutes=1.5, patience=None),
                      runtime=Runtime(device="cpu", compile_blocks=True)),
    finetune.FinetuneConfig(variants=VariantInput("ref.fa", regions=("chr1:1-10", "chr2"),
                                                  window=33),
                            out="ft", vcf="calls.vcf", label_field="LABEL",
                            test_contigs=("chr4",)),
    pretrain.PretrainConfig(fasta=("genome.fa",), out="pre",
                            masking=MaskingSettings(0.2, "mask-only", 0.5)),
])
def test_configs_survive_config_json(config):
    saved = json.loads(json.dumps(to_dict(config)))
    assert from_dict(type(config), saved) == config
    assert isinstance(saved["training"], dict)  # groups nest, they are not flattened


def test_unknown_and_missing_settings_are_refused():
    with pytest.raises(TypeError, match="unknown TrainConfig settings: colour"):
        from_dict(train.TrainConfig, {"fasta": ["a.fa"], "out": "run", "colour": "red"})
    with pytest.raises(TypeError):
        from_dict(train.TrainConfig, {"out": "run"})  # no fasta


def test_missing_groups_and_fields_take_their_defaults():
    config = from_dict(train.TrainConfig, {"fasta": ["a.fa"], "out": "run",
                                           "training": {"epochs": 3}})
    assert config.training == TrainingSettings(epochs=3) and config.runtime == Runtime()
    assert config.fasta == ("a.fa",)
