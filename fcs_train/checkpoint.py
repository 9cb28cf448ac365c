"""`RunCheckpoint`: the one checkpoint format of fcs, written and read in this module only.

A checkpoint is a `torch.save` file of plain containers and tensors, loadable with
`weights_only=True` (no pickled module or class: loading one never runs code, and a refactor never
breaks one), written atomically. Format 2:

    {"fcs_checkpoint": 2,
     "spec": ModelSpec          the model's shape, once: architecture, WindowSpec, proprio width
     "weights": {part: state_dict},
     "state": RunState          epoch, step, position in the epoch, best loss, last validation, decoder_trained
     "optimizers": {name: state_dict with param_names}, "scaler", "rng", "world_size",
     "normalizer": Normalizer   the training statistics the inputs were normalised with
     "layout": Layout, "split": EpisodeSplit, "store": StoreRef (path and identity), "image_stats",
     "config": the run's TrainConfig without what the fields above hold (`RunCheckpoint.train_config`),
     "imported_from": where `fcs import-checkpoint` read it}

(the pydantic models as their JSON dicts). Format 1 (fcs 0.1 and 0.2: the shape in `model_config`,
`dims` and `config`, the store's creation-time fingerprint) still loads, converted on reading; any
other file is a `CheckpointError` saying what it is.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fcs_data.atomic import write_atomic
from fcs_data.errors import UnsafePickleError
from fcs_data.safe_io import load_failure
from fcs_data.schemas import Layout
from fcs_data.schemas.store import ImageStats
from fcs_data.splits import EpisodeSplit
from fcs_data.stats import Normalizer
from fcs_data.store import Store
from fcs_data.window_spec import WindowSpec
from fcs_train.config import ModelConfig, TrainConfig
from fcs_train.errors import CheckpointError
from fcs_train.models import ModelSpec, RandomEncoderWarning, VWorldModel

FORMAT = 2
READABLE_FORMATS = (1, 2)
# what `config` leaves out because `spec`, `split` and `store` hold it
_HELD_ELSEWHERE: dict[str, Any] = {"model": True,
                                   "data": {"num_hist", "num_pred", "frameskip", "split_ratio", "split_seed", "store"}}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunState(_Model):
    """Where a run stands: what a checkpoint restores besides weights, optimizers and RNG state."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epoch: int = Field(default=1, ge=0, description="the epoch being trained (the last one done when imported)")
    global_step: int = Field(default=0, ge=0)
    step_in_epoch: int = Field(default=0, ge=0)
    best_val_loss: float = math.inf
    val_metrics: dict[str, float] = Field(default_factory=dict, description="the last validation's")
    decoder_trained: bool = False
    plan_best: list[float] | None = Field(default=None, description="the best planning score so far, lower is "
                                                                    "better (train.select_by)")


class StoreRef(_Model):
    """The store a model was trained on: where it was, and what it held (`Store.identity`)."""

    path: str
    identity: str | None = None
    fingerprint: str | None = Field(default=None, description="format 1 only: `Store.legacy_fingerprint`")

    @classmethod
    def of(cls, store: Store) -> StoreRef:
        return cls(path=str(store.path), identity=store.identity)

    def matches(self, store: Store) -> bool:
        """Whether `store` holds what the run's store held. A format-1 checkpoint knows only the store's
        creation-time fingerprint, and is accepted on it, so old runs still resume on the same store."""
        if self.identity is not None:
            return self.identity == store.identity
        return self.fingerprint is not None and self.fingerprint == store.legacy_fingerprint


class RunCheckpoint(_Model):
    """A world model and, for a run of `fcs train`, everything that continues it (module docstring)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    spec: ModelSpec
    weights: dict[str, dict[str, Any]] = Field(description="part -> state dict (tensors)")
    state: RunState = Field(default_factory=RunState)
    optimizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    world_size: int = Field(default=1, ge=1)
    normalizer: Normalizer | None = None
    layout: Layout | None = None
    split: EpisodeSplit | None = None
    store: StoreRef | None = None
    image_stats: ImageStats | None = None
    config: dict[str, Any] | None = Field(default=None, description="TrainConfig JSON less what spec/split/store hold")
    imported_from: dict[str, Any] | None = None

    @staticmethod
    def config_rest(cfg: TrainConfig) -> dict[str, Any]:
        """`cfg` as stored: without the model, the window, the split and the store, which have fields of their own."""
        return cfg.model_dump(mode="json", exclude=_HELD_ELSEWHERE)

    def train_config(self) -> TrainConfig | None:
        """The run's whole `TrainConfig` (None for an imported checkpoint)."""
        if self.config is None:
            return None
        w, split = self.spec.window, self.split or EpisodeSplit()
        data = {**self.config.get("data", {}), "num_hist": w.num_hist, "num_pred": w.num_pred, "frameskip": w.frameskip,
                "split_ratio": split.ratio, "split_seed": split.seed, "store": self.store.path if self.store else None}
        return TrainConfig.model_validate({**self.config, "model": self.spec.model.model_dump(mode="json"),
                                           "data": data})

    def payload(self) -> dict[str, Any]:
        """What `torch.save` writes: JSON dicts and tensors only."""
        out: dict[str, Any] = {"fcs_checkpoint": FORMAT}
        for name in type(self).model_fields:
            value = getattr(self, name)
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return out


def _from_format1(d: dict[str, Any]) -> RunCheckpoint:
    """A format-1 checkpoint (fcs 0.1, 0.2) as a `RunCheckpoint`."""
    dims, config = d["dims"], d.get("config")
    data = (config or {}).get("data", {})
    store = d.get("store")
    return RunCheckpoint(
        spec=ModelSpec(model=ModelConfig.model_validate(d["model_config"]),
                       window=WindowSpec(num_hist=dims["num_hist"], num_pred=dims.get("num_pred", 1),
                                         frameskip=dims["frameskip"], action_dim=dims["action_dim"]),
                       proprio_dim=dims["proprio_dim"]),
        weights=d["model"],
        state=RunState(epoch=d.get("epoch", 0), global_step=d.get("global_step", 0),
                       step_in_epoch=d.get("step_in_epoch", 0), best_val_loss=d.get("best_val_loss", math.inf),
                       val_metrics=d.get("val_metrics") or {}, decoder_trained=d.get("decoder_trained", True)),
        optimizers=d.get("optimizers") or {}, scaler=d.get("scaler"), rng=d.get("rng"),
        world_size=d.get("world_size", 1),
        normalizer=Normalizer.model_validate(d["norm_stats"]) if d.get("norm_stats") else None,
        layout=d.get("layout"),
        split=EpisodeSplit(ratio=data["split_ratio"], seed=data["split_seed"]) if "split_ratio" in data else None,
        store=StoreRef(path=store["path"], fingerprint=store.get("fingerprint")) if store else None,
        image_stats=d.get("image_stats"),
        config=TrainConfig.model_validate(config).model_dump(mode="json", exclude=_HELD_ELSEWHERE) if config else None,
        imported_from=d.get("imported_from"))


def _atomic_save(obj: dict[str, Any], path: Path) -> Path:
    """`torch.save` whole or not at all (`write_atomic`); a full disk is an `OSError` naming `path`."""
    return write_atomic(path, lambda f: torch.save(obj, f))


def _read(path: Path) -> dict[str, Any]:
    """The file's dict, read weights-only, of a format this fcs reads."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to decode is reported with the file, in words (never torch's advice)
        why = load_failure(path, e)
        if isinstance(why, UnsafePickleError):
            raise CheckpointError(f"{path}: cannot be loaded as an fcs checkpoint: it pickles {why.what} (a reference "
                                  "DINO-WM checkpoint? convert it with `fcs import-checkpoint`)") from e
        raise CheckpointError(f"{path}: cannot be loaded as an fcs checkpoint: {why.reason}") from e
    version = d.get("fcs_checkpoint") if isinstance(d, dict) else None
    if version is None:
        what = f"a dict of {', '.join(map(str, list(d)[:6]))}" if isinstance(d, dict) else f"a {type(d).__name__}"
        raise CheckpointError(f"{path}: not an fcs checkpoint (it holds {what})")
    if version not in READABLE_FORMATS:
        newer = "; it was written by a newer fcs: upgrade fcs" if isinstance(version, int) and version > FORMAT else ""
        raise CheckpointError(f"{path}: fcs checkpoint format {version}; this fcs reads formats "
                              f"{', '.join(map(str, READABLE_FORMATS))}{newer}")
    return d


def save_checkpoint(ckpt: RunCheckpoint, path: str | Path) -> Path:
    """Write `ckpt` to `path` atomically (a crash leaves the old file or none, never half of one)."""
    return _atomic_save(ckpt.payload(), Path(path))


def load_checkpoint(path: str | Path) -> RunCheckpoint:
    """Read an fcs checkpoint (format 1 or 2) with `weights_only=True`; `CheckpointError` says what is wrong."""
    path = Path(path)
    d = _read(path)
    try:
        if d["fcs_checkpoint"] == 1:
            return _from_format1(d)
        return RunCheckpoint.model_validate({k: v for k, v in d.items() if k != "fcs_checkpoint"})
    except (KeyError, TypeError, ValidationError) as e:
        raise CheckpointError(f"{path}: a damaged fcs checkpoint (format {d['fcs_checkpoint']}): "
                              f"{type(e).__name__}: {str(e).splitlines()[0]}") from None


def save_rank_rng(path: str | Path, rank: int, global_step: int, rng: dict[str, Any]) -> Path:
    """A DDP rank's own RNG state at `global_step`, beside its run's checkpoint."""
    return _atomic_save({"fcs_checkpoint": FORMAT, "rank": rank, "global_step": global_step, "rng": rng}, Path(path))


def load_rank_rng(path: str | Path) -> tuple[int, dict[str, Any]]:
    """`(global_step, rng)` of a file `save_rank_rng` wrote."""
    d = _read(Path(path))
    if "rng" not in d or "global_step" not in d:
        raise CheckpointError(f"{path}: not a rank's RNG file")
    return int(d["global_step"]), d["rng"]


def load_world_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VWorldModel, RunCheckpoint]:
    """`(model in eval mode, checkpoint)`: the model its spec describes, every saved part loaded strictly.

    A checkpoint without the encoder (imported from a reference run whose encoder was frozen) takes
    it from `model.encoder.weights` of its spec when that file exists, else the encoder stays random
    and a `RandomEncoderWarning` says so.
    """
    ckpt = load_checkpoint(path)
    spec = ckpt.spec
    weights = spec.model.encoder.weights
    if "encoder" in ckpt.weights or (weights is not None and not Path(weights).is_file()):
        spec = spec.model_copy(update={"model": spec.model.model_copy(
            update={"encoder": spec.model.encoder.model_copy(update={"weights": None})})})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = spec.build()
    for name, sd in ckpt.weights.items():
        part = getattr(model, name, None)
        if part is None:
            raise CheckpointError(f"{path}: part {name!r} is not in the model its spec describes")
        try:
            part.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: part {name!r} does not load: {str(e).splitlines()[0]}") from None
    if "encoder" not in ckpt.weights:
        for w in caught:
            if issubclass(w.category, RandomEncoderWarning):
                warnings.warn(f"{path} holds no encoder and model.encoder.weights is not a file: the encoder is "
                              "RANDOM", RandomEncoderWarning, stacklevel=2)
    return model.to(device).eval(), ckpt
