"""Starting a downstream model from a pretrained encoder (`--init PRETRAIN_RUN`)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from torch import nn

from cmx_cli.errors import CmxError
from cmx_cli.training.checkpoint import load_checkpoint
from cmx_cli.training.masked_bases import KIND as MLM_KIND
from models import ChordMixerConfig, MaskedAutoencoderConfig

ENCODER_PREFIX = "encoder."


def load_encoder(path: Union[str, Path]) -> tuple[ChordMixerConfig, dict]:
    """Read the encoder of a `cmx pretrain` run.

    Args:
        path: The pretraining run directory or its model.pt.

    Returns:
        The encoder's config and its state dict (keys without the ``encoder.`` prefix).

    Raises:
        CmxError: When the checkpoint is not a pretrained model.
    """
    checkpoint = load_checkpoint(path, MLM_KIND)
    config = MaskedAutoencoderConfig.from_dict(checkpoint.model_config).encoder
    state = {key[len(ENCODER_PREFIX):]: value for key, value in checkpoint.state_dict.items()
             if key.startswith(ENCODER_PREFIX)}
    if not state:
        raise CmxError(f"{checkpoint.path}: holds no encoder weights",
                       "pass the run directory of `cmx pretrain`.")
    return config, state


def freeze_(module: nn.Module) -> nn.Module:
    """Stop training ``module``'s parameters (in place)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
