"""`build_model`: the DINO-WM world model from a `ModelConfig` and the window it takes."""

from __future__ import annotations

import warnings

from fcs_train.config import ModelConfig
from fcs_train.models.decoder import VQVAE
from fcs_train.models.encoder import DinoV2Encoder, load_encoder_weights
from fcs_train.models.predictor import ViTPredictor
from fcs_train.models.proprio import ProprioceptiveEmbedding
from fcs_train.models.world_model import DECODER_SCALE, VWorldModel


class RandomEncoderWarning(UserWarning):
    """The encoder has no pretrained weights: its features are random."""


def build_model(cfg: ModelConfig, *, proprio_dim: int, action_dim: int, num_hist: int, num_pred: int,
                frameskip: int) -> VWorldModel:
    """The world model for windows of `num_hist + num_pred` frames and `frameskip * action_dim` actions.

    Loads the encoder weights from `cfg.encoder.weights` when given; warns loudly otherwise.
    """
    encoder = DinoV2Encoder(cfg.encoder.preset)
    if cfg.encoder.weights is not None:
        for note in load_encoder_weights(encoder, cfg.encoder.weights):
            warnings.warn(f"{cfg.encoder.weights}: {note}", stacklevel=2)
    elif cfg.encoder.preset != "tiny":
        warnings.warn(
            "NO ENCODER WEIGHTS: model.encoder.weights is not set, so the DINOv2 encoder is RANDOM and the world "
            "model learns on meaningless features. Set it to dinov2_vits14_pretrain.pth (nothing is downloaded).",
            RandomEncoderWarning, stacklevel=2,
        )
    side = cfg.image_size // DECODER_SCALE
    patches = side * side
    # concat_dim 0 appends proprio and action as tokens, so they live in the encoder's dimension
    p_emb = cfg.proprio_emb_dim if cfg.concat_dim == 1 else encoder.emb_dim
    a_emb = cfg.action_emb_dim if cfg.concat_dim == 1 else encoder.emb_dim
    proprio_encoder = ProprioceptiveEmbedding(proprio_dim, p_emb, num_frames=num_hist + num_pred)
    action_encoder = ProprioceptiveEmbedding(action_dim * frameskip, a_emb, num_frames=num_hist + num_pred)
    dim = encoder.emb_dim + (p_emb * cfg.num_proprio_repeat + a_emb * cfg.num_action_repeat) * cfg.concat_dim
    p = cfg.predictor
    predictor = ViTPredictor(
        num_patches=patches + (2 if cfg.concat_dim == 0 else 0), num_frames=num_hist, dim=dim, depth=p.depth,
        heads=p.heads, mlp_dim=p.mlp_dim, dim_head=p.dim_head, dropout=p.dropout, emb_dropout=p.emb_dropout,
    )
    d = cfg.decoder
    decoder = VQVAE(channel=d.channel, n_res_block=d.n_res_block, n_res_channel=d.n_res_channel,
                    emb_dim=encoder.emb_dim, n_embed=d.n_embed, quantize=d.quantize) if d.enabled else None
    return VWorldModel(
        image_size=cfg.image_size, num_hist=num_hist, num_pred=num_pred, encoder=encoder,
        proprio_encoder=proprio_encoder, action_encoder=action_encoder, predictor=predictor, decoder=decoder,
        concat_dim=cfg.concat_dim, num_action_repeat=cfg.num_action_repeat,
        num_proprio_repeat=cfg.num_proprio_repeat, train_encoder=cfg.encoder.train,
    )
