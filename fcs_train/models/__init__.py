"""The DINO-WM model: encoder, predictor, decoder, proprio/action encoders, `VWorldModel`, and the
`ModelSpec` that rebuilds one (`build_model` from a config and a window)."""

from __future__ import annotations

from fcs_train.models.build import RandomEncoderWarning, build_model
from fcs_train.models.decoder import VQVAE
from fcs_train.models.encoder import DinoV2Encoder, interpolate_pos_encoding, load_encoder_weights
from fcs_train.models.predictor import ViTPredictor, frame_causal_mask
from fcs_train.models.proprio import ProprioceptiveEmbedding
from fcs_train.models.spec import ModelSpec
from fcs_train.models.world_model import (
    DECODER_LATENT_LOSS_WEIGHT,
    DECODER_SCALE,
    PARTS,
    VWorldModel,
    WorldModelOutput,
    to_model_input,
)

__all__ = [
    "DECODER_LATENT_LOSS_WEIGHT",
    "DECODER_SCALE",
    "PARTS",
    "VQVAE",
    "DinoV2Encoder",
    "ModelSpec",
    "ProprioceptiveEmbedding",
    "RandomEncoderWarning",
    "VWorldModel",
    "ViTPredictor",
    "WorldModelOutput",
    "build_model",
    "frame_causal_mask",
    "interpolate_pos_encoding",
    "load_encoder_weights",
    "to_model_input",
]
