"""TrainConfig: reference defaults, presets, YAML files and overrides, errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fcs_train.config import TrainConfig, load_config


def test_defaults_are_the_reference_and_the_paper() -> None:
    c = TrainConfig()
    assert (c.data.frameskip, c.data.num_hist, c.data.num_pred) == (5, 3, 1)
    assert (c.model.image_size, c.train.batch_size, c.train.epochs) == (224, 32, 100)
    assert (c.optim.encoder_lr, c.optim.predictor_lr, c.optim.decoder_lr, c.optim.action_encoder_lr) == (
        1e-6, 5e-4, 3e-4, 5e-4)
    assert (c.model.action_emb_dim, c.model.proprio_emb_dim, c.model.concat_dim) == (10, 10, 1)
    p = c.model.predictor
    assert (p.depth, p.heads, p.dim_head, p.mlp_dim, p.dropout) == (6, 16, 64, 2048, 0.1)
    d = c.model.decoder
    assert (d.channel, d.n_res_block, d.n_res_channel, d.quantize) == (384, 4, 128, False)
    assert load_config(preset="full") == c


def test_preset_file_and_overrides_apply_in_order(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  batch_size: 8\n  grad_accum: 4\nmodel:\n  image_size: 128\n")
    c = load_config(tmp_path / "c.yaml", preset="tiny", overrides=["train.batch_size=6", "data.store=/x.zarr"])
    assert c.model.encoder.preset == "tiny" and c.model.image_size == 128
    assert (c.train.batch_size, c.train.grad_accum) == (6, 4) and str(c.data.store) == "/x.zarr"
    assert load_config(tmp_path / "c.yaml", preset="tiny").to_yaml() != c.to_yaml()
    assert TrainConfig.model_validate(__import__("yaml").safe_load(c.to_yaml())) == c


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=0", "greater than or equal to 1"),
    ("model.image_size=100", "multiple of 16"),
    ("train.amp=fp8", "bf16"),
])
def test_bad_values_are_explained(override: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_config(overrides=[override])


def test_override_syntax_errors() -> None:
    with pytest.raises(ValueError, match=r"section\.key=value"):
        load_config(overrides=["train.batch_size"])
    with pytest.raises(KeyError, match="presets"):
        load_config(preset="huge")
