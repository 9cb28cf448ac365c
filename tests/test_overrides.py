"""Overrides as the users write them: reference names, bare key=value, typos with suggestions, YAML errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcs_train.config import TrainConfig, load_config
from fcs_train.overrides import ConfigInputError, setting_keys


def test_reference_names_map_to_fcs_keys_and_each_mapping_is_reported() -> None:
    notes: list[str] = []
    cfg = load_config(preset="tiny", overrides=["frameskip=2", "num_hist=4", "training.batch_size=8",
                                                "training.predictor_lr=5e-5", "img_size=128",
                                                "env=franka_cube_stack"], notes=notes)
    assert (cfg.data.frameskip, cfg.data.num_hist, cfg.train.batch_size) == (2, 4, 8)
    assert cfg.optim.predictor_lr == 5e-5 and cfg.model.image_size == 128
    assert "frameskip=2 -> data.frameskip=2 (the reference's name)" in notes
    assert "training.batch_size=8 -> train.batch_size=8 (the reference's name)" in notes
    assert any(n.startswith("env=franka_cube_stack: ignored") for n in notes)
    assert len(notes) == 6


def test_fcs_keys_win_over_reference_names_and_are_not_reported() -> None:
    notes: list[str] = []
    cfg = load_config(overrides=["data.frameskip=3", "+train.seed=7", "++log.wandb_project=x"], notes=notes)
    assert (cfg.data.frameskip, cfg.train.seed, cfg.log.wandb_project) == (3, 7, "x")
    assert notes == []


def test_values_parse_as_hydra_parses_them() -> None:
    cfg = load_config(overrides=["data.cameras=[cam_0,cam_1]", "data.fuse=side_by_side", "model.encoder.weights=null",
                                 "train.max_steps=${train.epochs}", "model.decoder.schedule=off", "data.store="])
    assert cfg.data.cameras == ["cam_0", "cam_1"] and cfg.model.encoder.weights is None
    assert cfg.train.max_steps == cfg.train.epochs and cfg.model.decoder.schedule == "off"
    assert cfg.data.store is None


@pytest.mark.parametrize("override,suggestion", [
    ("train.batchsize=8", "train.batch_size"),
    ("optim.predictor_l=1e-4", "optim.predictor_lr"),
    ("data.framskip=5", "data.frameskip"),
    ("batch_size=8", "train.batch_size"),
])
def test_a_typo_is_refused_with_the_nearest_key(override: str, suggestion: str) -> None:
    with pytest.raises(ConfigInputError, match=f"unknown key .*did you mean {suggestion}"):
        load_config(overrides=[override])


def test_a_key_far_from_every_setting_points_at_print_config() -> None:
    with pytest.raises(ConfigInputError, match="print-config"):
        load_config(overrides=["zzz.qqq=1"])


def test_a_section_given_a_value_is_refused_naming_one_of_its_keys() -> None:
    with pytest.raises(ConfigInputError, match="train is a section"):
        load_config(overrides=["train=3"])


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: 8\n  epochs: [1, 2\nlog: {}\n")
    with pytest.raises(ConfigInputError, match=r"bad\.yaml:\d+:\d+: "):
        load_config(bad)
    bad.write_text("train:\n  batch_size: 8\n    epochs: 3\n")
    with pytest.raises(ConfigInputError, match=r"bad\.yaml:3:\d+: mapping values are not allowed"):
        load_config(bad)


def test_a_config_file_key_that_names_nothing_is_refused_naming_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batchsize: 8\n")
    with pytest.raises(ConfigInputError, match=r"c\.yaml: unknown key 'train.batchsize'; did you mean train.batch_size"):
        load_config(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigInputError, match="one mapping"):
        load_config(f)


def test_setting_keys_are_the_leaves_of_the_config() -> None:
    keys = setting_keys(TrainConfig)
    assert {"train.batch_size", "model.encoder.weights", "model.predictor.depth", "data.store"} <= set(keys)
    assert "model" not in keys and "model.encoder" not in keys
