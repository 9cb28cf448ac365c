"""`TrainConfig`: everything a training run needs, validated, from YAML plus `--set` overrides.

Defaults are the reference `train.yaml` and the DINO-WM paper (frameskip 5, num_hist 3,
num_pred 1, image 224, batch 32, 100 epochs, Adam(W) learning rates 1e-6 / 5e-4 / 3e-4 / 5e-4,
embedding dims 10, concat_dim 1). Presets: `full` (those defaults) and `tiny` (the same model
code at toy sizes, for the CPU demo and tests).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fcs_data.mappings import merge_mappings
from fcs_train.overrides import (
    REFERENCE_KEYS,
    apply_overrides,
    check_keys,
    load_yaml_mapping,
    parse_overrides,
)

M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    store: Path | None = Field(default=None, description="fcs store (fcs convert ... --to zarr)")
    frameskip: int = Field(default=5, ge=1)
    num_hist: int = Field(default=3, ge=1)
    num_pred: int = Field(default=1, ge=1)
    split_ratio: float = Field(default=0.9, gt=0, le=1)
    split_seed: int = 42
    num_workers: int = Field(default=4, ge=0)
    cache: bool = Field(default=False, description="keep the store's frames in shared memory")
    cameras: list[str] | None = Field(default=None, description="the store's cameras to train on (None: the first)")
    fuse: Literal["side_by_side", "channel_stack"] | None = Field(
        default=None, description="how several cameras become the one image per frame the model takes")
    multiprocessing_context: Literal["fork", "forkserver", "spawn"] | None = None


class EncoderConfig(_Section):
    preset: Literal["dinov2_vits14", "tiny"] = "dinov2_vits14"
    weights: Path | None = Field(default=None, description="DINOv2 weights file (official or timm keys)")
    train: bool = False


class PredictorConfig(_Section):
    depth: int = Field(default=6, ge=1)
    heads: int = Field(default=16, ge=1)
    dim_head: int = Field(default=64, ge=1)
    mlp_dim: int = Field(default=2048, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    emb_dropout: float = Field(default=0.0, ge=0, lt=1)


DecoderSchedule = Literal["joint", "subset", "every_n", "off"]


class DecoderConfig(_Section):
    """The VQ-VAE-style decoder, and how much of each training step it gets.

    The decoder learns from detached embeddings, so the schedule never changes what the world model
    learns (tests check the predictor's weights bit for bit); it only changes how fast the decoder
    learns and how fast a step is:

    - `joint`: every frame of every window reconstructed, and predictions decoded, in every step
      (the reference's step, for exact comparison).
    - `subset` (default): the reconstruction loss on `subset_frames` frames per window, drawn from a
      generator of their own; predictions are decoded only when their loss is logged (validation).
    - `every_n`: the reconstruction loss on every frame, in one training step of `every_n`.
    - `off`: no decoding while training; `fcs train-decoder RUN` trains the decoder afterwards on the
      frozen encoder's embeddings (until then no images or image metrics are reported).
    """

    enabled: bool = True
    channel: int = Field(default=384, ge=2)
    n_res_block: int = Field(default=4, ge=0)
    n_res_channel: int = Field(default=128, ge=1)
    n_embed: int = Field(default=2048, ge=1)
    quantize: bool = False
    schedule: DecoderSchedule = "subset"
    subset_frames: int = Field(default=1, ge=1, description="frames per window reconstructed (schedule subset)")
    every_n: int = Field(default=4, ge=1, description="one decoder step every n training steps (schedule every_n)")

    @field_validator("schedule", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class ModelConfig(_Section):
    image_size: int = Field(default=224, ge=16, description="decoder output size; the encoder sees S // 16 * 14")
    encoder: EncoderConfig = EncoderConfig()
    predictor: PredictorConfig = PredictorConfig()
    decoder: DecoderConfig = DecoderConfig()
    action_emb_dim: int = Field(default=10, ge=1)
    proprio_emb_dim: int = Field(default=10, ge=1)
    num_action_repeat: int = Field(default=1, ge=1)
    num_proprio_repeat: int = Field(default=1, ge=1)
    concat_dim: Literal[0, 1] = 1

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.image_size % 16:
            raise ValueError(f"image_size {self.image_size} must be a multiple of 16 (the decoder upsamples x16)")
        return self


class OptimConfig(_Section):
    encoder_lr: float = Field(default=1e-6, ge=0, description="Adam, only if the encoder trains")
    predictor_lr: float = Field(default=5e-4, ge=0, description="AdamW (reference 5e-4; paper Table 12: 5e-5)")
    decoder_lr: float = Field(default=3e-4, ge=0, description="Adam")
    action_encoder_lr: float = Field(default=5e-4, ge=0, description="AdamW, action + proprio encoders")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay")
    grad_clip: float | None = Field(default=None, gt=0, description="max gradient norm per part")


class TrainSection(_Section):
    run_dir: Path | None = Field(default=None, description="None: a new runs/<run_name>/<YYYY-MM-DD_HH-MM-SS> per run "
                                                             "(with --resume: the one runs/<run_name>/latest is)")
    run_name: str = Field(default="dino_wm", pattern=r"^[A-Za-z0-9_.-]+$", description="runs/<run_name>/...")
    epochs: int = Field(default=100, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(default=32, ge=1, description="per process")
    grad_accum: int = Field(default=1, ge=1, description="effective batch = batch_size x grad_accum x world size")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(default="auto", description="auto: bf16 on CUDA, off on CPU")
    compile: bool = False
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
    val_every_epochs: int = Field(default=1, ge=1)
    rollout_every_epochs: int = Field(default=1, ge=1)
    num_rollouts: int = Field(default=10, ge=0)
    checkpoint_every_epochs: int = Field(default=1, ge=1)
    init_from: Path | None = Field(default=None, description="fcs checkpoint whose model weights start the run")
    init_optimizers: bool = Field(default=False, description="with init_from: also continue its optimizer states "
                                                             "and epoch count (fcs train --resume-from-reference)")
    loader_timeout: float = Field(default=300.0, ge=0, description="seconds to wait for a batch (0: forever)")
    memory_check: Literal["stop", "warn", "off"] = Field(
        default="stop", description="predict the GPU memory peak before the first step (fcs fit); stop, warn or "
                                    "skip when it does not fit")
    memory_limit: str | None = Field(default=None, pattern=r"^\s*[0-9]*\.?[0-9]+\s*[a-zA-Z]*\s*$",
                                     description="GPU memory to check against instead of the device's, e.g. 16GiB")
    stall_timeout: float = Field(default=900.0, ge=0, description="seconds without a batch or a step before the run "
                                                                 "is stopped with a diagnosis and a checkpoint "
                                                                 "(0: never)")
    # planning evaluation during training (fcs_train.planning.during_training)
    plan_eval_every: int | None = Field(
        default=None, ge=1, description="epochs between planning evaluations: closed loop in the reference world for "
                                        "a store made by fcs synth, offline on the validation episodes otherwise")
    plan_eval_episodes: int = Field(default=8, ge=1, description="closed-loop episodes (offline: pairs) per evaluation")
    plan_eval_set: list[str] = Field(default_factory=lambda: ["cem.samples=100", "cem.iterations=5"],
                                     description="planning settings, as fcs plan-eval --set (e.g. horizon=3)")
    select_by: Literal["val_loss", "plan_success_rate", "plan_ee_distance"] = Field(
        default="val_loss", description="what keeps best.pt: the lowest validation loss, the highest planning success "
                                        "rate (ties: the lower EE distance) or the lowest final EE distance")

    @model_validator(mode="after")
    def _check_planning(self) -> TrainSection:
        if self.select_by != "val_loss" and self.plan_eval_every is None:
            raise ValueError(f"select_by {self.select_by} needs plan_eval_every (the planning evaluation it reads)")
        return self


class LogConfig(_Section):
    png_every_epochs: int = Field(default=1, ge=1)
    num_reconstruct_samples: int = Field(default=6, ge=1)
    lpips_vgg_weights: Path | None = Field(default=None, description="torchvision vgg16 weights for LPIPS")
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "fcs"
    wandb_entity: str | None = Field(default=None, description="W&B team or user (None: your default)")
    wandb_name: str | None = Field(default=None, description="W&B run name (None: W&B picks one)")
    wandb_group: str | None = Field(default=None, description="W&B group, e.g. one per experiment")
    wandb_tags: list[str] = Field(default_factory=list, description="W&B tags")
    print_every_steps: int = Field(default=10, ge=1)
    every_steps: int = Field(default=10, ge=1, description="read the training losses from the device (one sync) "
                                                           "and record them every k steps")


class TrainConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainSection = TrainSection()
    log: LogConfig = LogConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


PRESETS = ("full", "tiny")


def _preset_data(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return yaml.safe_load(resources.files("fcs_train").joinpath("presets", f"{name}.yaml").read_text()) or {}


def load_config(path: str | Path | None = None, *, preset: str | None = None,
                overrides: list[str] | tuple[str, ...] = (), notes: list[str] | None = None) -> TrainConfig:
    """Preset (if any), then the YAML file (if any), then `key=value` overrides, validated.

    Overrides may use the reference DINO-WM's names (`frameskip=5`, `training.batch_size=8`); each
    mapping is appended to `notes` as `frameskip -> data.frameskip`. `ConfigInputError` (a ValueError)
    for a malformed file or override or a key that names no setting, with the nearest valid key.
    """
    return load_validated(TrainConfig, _preset_data(preset) if preset else {}, path, overrides,
                          aliases=REFERENCE_KEYS, notes=notes)


def load_validated(model: type[M], base: dict[str, Any], path: str | Path | None,
                   overrides: list[str] | tuple[str, ...], *, aliases: dict[str, str | None] | None = None,
                   notes: list[str] | None = None) -> M:
    """`base`, then the YAML file (if any), then `key=value` overrides, validated as `model`."""
    data = base
    if path is not None:
        loaded = load_yaml_mapping(path)
        check_keys(loaded, model, str(path))
        data = merge_mappings(data, loaded)
    parsed = parse_overrides(overrides, model, aliases)
    if notes is not None:
        for o in parsed:
            if o.renamed:
                notes.append(f"{o.given_as}={o.text} -> {o.key}={o.text} (the reference's name)" if o.key else
                             f"{o.given_as}={o.text}: ignored, fcs reads the layout from the store")
    return model.model_validate(apply_overrides(data, parsed, model))
