"""Where a run stands and its checkpoints: saving, exact resume, and starting from another run's weights.

A resume continues to the same weights, bit for bit on CPU, as a run that was never stopped: the
checkpoint holds every part, the optimizers, the scaler, the position inside the epoch and every
rank's RNG state as it was at the last step boundary (rank 0's in the checkpoint, the others beside
it in `NAME.rankR.rng.pt`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcs_data.schemas.store import ArrayStats
from fcs_data.store import Store
from fcs_train import dist as fdist
from fcs_train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fcs_train.config import TrainConfig
from fcs_train.errors import TrainError
from fcs_train.models import PARTS, VWorldModel
from fcs_train.runlog import RunLog


@dataclass
class RunState:
    """The counters a checkpoint restores besides weights, optimizers and RNG state."""

    epoch: int = 1
    global_step: int = 0
    step_in_epoch: int = 0
    best_val_loss: float = math.inf
    val_metrics: dict[str, float] = field(default_factory=dict)  # the last validation's
    decoder_trained: bool = False


def rng_snapshot(decoder_gen: torch.Generator) -> dict[str, Any]:
    """Every global RNG and the decoder schedule's generator."""
    return {**rng_state(), "decoder": decoder_gen.get_state()}


def restore_rng(state: dict[str, Any], decoder_gen: torch.Generator) -> None:
    set_rng_state(state)
    if "decoder" in state:
        decoder_gen.set_state(state["decoder"])


def _architecture(section: dict) -> dict:
    """A config section without the decoder schedule (which changes how a run trains, not what it is)."""
    decoder = section.get("decoder")
    if not isinstance(decoder, dict):
        return section
    return {**section, "decoder": {k: v for k, v in decoder.items() if k not in ("schedule", "subset_frames",
                                                                                   "every_n")}}


class RunCheckpoints:
    """The checkpoints of one run (`train.run_dir/checkpoints`), as one process of it sees them."""

    def __init__(self, cfg: TrainConfig, info: fdist.DistInfo, store: Store, stats: dict[str, ArrayStats] | None,
                 log: RunLog):
        self.cfg, self.info, self.store, self.stats, self.log = cfg, info, store, stats or {}, log
        self.ckpt_dir = cfg.train.run_dir / "checkpoints"
        self.fingerprint = store.fingerprint

    def _rank_rng_file(self, name: str, rank: int) -> Path:
        return self.ckpt_dir / f"{name}.rank{rank}.rng.pt"

    def _image_stats(self) -> dict[str, Any] | None:
        """Channel statistics of the frames the model takes (planning checks a client's channel order)."""
        d, stats, layout = self.cfg.data, self.store.stats, self.store.layout
        if d.fuse is not None:
            return None
        camera = d.cameras[0] if d.cameras else layout.observation.camera
        chosen = stats.rgb if camera == layout.observation.camera else stats.cameras.get(camera)
        return chosen.model_dump() if chosen is not None else None

    def _payload(self, model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer],
                 scaler: torch.amp.GradScaler, state: RunState, rng: dict[str, Any]) -> dict[str, Any]:
        layout = self.store.layout
        return {
            "model": {name: getattr(model, name).state_dict() for name in PARTS if getattr(model, name) is not None},
            "model_config": self.cfg.model.model_dump(mode="json"),
            "dims": {"proprio_dim": layout.proprio_dim, "action_dim": layout.action_dim,
                     "num_hist": self.cfg.data.num_hist, "num_pred": self.cfg.data.num_pred,
                     "frameskip": self.cfg.data.frameskip},
            "epoch": state.epoch,
            "global_step": state.global_step,
            "step_in_epoch": state.step_in_epoch,
            "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
            "scaler": scaler.state_dict(),
            "rng": rng,
            "world_size": self.info.world_size,
            "config": self.cfg.model_dump(mode="json"),
            "store": {"path": str(self.store.path), "fingerprint": self.fingerprint},
            "norm_stats": {k: v.model_dump() for k, v in self.stats.items()},
            "best_val_loss": state.best_val_loss,
            "decoder_trained": state.decoder_trained,
            "layout": layout.model_dump(mode="json"),
            "image_stats": self._image_stats(),
            "val_metrics": state.val_metrics,
        }

    def save(self, names: tuple[str, ...], model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer],
             scaler: torch.amp.GradScaler, state: RunState, rng: dict[str, Any]) -> None:
        """Checkpoints `names` (rank 0), and each other rank's own RNG state beside them."""
        if not self.info.is_main:
            for name in names:
                save_checkpoint({"rank": self.info.rank, "global_step": state.global_step, "rng": rng},
                                self._rank_rng_file(name, self.info.rank))
            return
        payload = self._payload(model, optimizers, scaler, state, rng)
        for name in names:
            save_checkpoint(payload, self.ckpt_dir / f"{name}.pt")

    def resume(self, model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler,
               state: RunState) -> dict[str, Any]:
        """Load `latest.pt` into the run (refusing another store, model or data section); returns the RNG
        state this rank restores."""
        path = self.ckpt_dir / "latest.pt"
        if not path.exists():
            raise TrainError(f"nothing to resume: {path} does not exist")
        ckpt = load_checkpoint(path)
        if ckpt["store"]["fingerprint"] != self.fingerprint:
            raise TrainError(f"{path} was trained on a different store ({ckpt['store']['path']}); not resuming")
        old, new = ckpt["config"], self.cfg.model_dump(mode="json")
        for section in ("model", "data"):
            if _architecture(old[section]) != _architecture(new[section]):
                raise TrainError(f"the {section} section differs from the run being resumed ({path}); "
                                 "only train/optim/log settings and the decoder schedule may change on --resume")
        for name, sd in ckpt["model"].items():
            getattr(model, name).load_state_dict(sd, strict=True)
        for name, sd in ckpt["optimizers"].items():
            if name in optimizers:  # e.g. a decoder trained by `fcs train-decoder` under schedule `off`
                optimizers[name].load_state_dict(sd)
        scaler.load_state_dict(ckpt["scaler"])
        state.decoder_trained = bool(ckpt.get("decoder_trained", state.decoder_trained))
        state.epoch, state.global_step = ckpt["epoch"], ckpt["global_step"]
        state.step_in_epoch, state.best_val_loss = ckpt["step_in_epoch"], ckpt["best_val_loss"]
        state.val_metrics = dict(ckpt.get("val_metrics") or {})
        rng = ckpt["rng"]
        if self.info.rank > 0:
            own = self._rank_rng_file("latest", self.info.rank)
            if ckpt.get("world_size", 1) != self.info.world_size or not own.exists():
                raise TrainError(f"{path} was written by {ckpt.get('world_size', 1)} process(es) and has no RNG state "
                                 f"for rank {self.info.rank} ({own}); resume with the same number of processes")
            mine = load_checkpoint(own)
            if mine["global_step"] != state.global_step:
                raise TrainError(f"{own} is from step {mine['global_step']}, {path} from step {state.global_step}")
            rng = mine["rng"]
        self.log.load_history(state.global_step)
        self.log.info(f"resumed from {path}: epoch {state.epoch}, step {state.global_step}")
        return rng

    def init_weights(self, model: VWorldModel, path: Path, state: RunState) -> dict[str, Any]:
        """`train.init_from`: every part of the checkpoint at `path` that this model has, loaded strictly."""
        ckpt = load_checkpoint(path)
        loaded = []
        for name, sd in ckpt["model"].items():
            part = getattr(model, name, None)
            if part is None:
                continue
            try:
                part.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise TrainError(f"{path}: part {name!r} does not fit this model: {str(e).splitlines()[0]}") from e
            loaded.append(name)
        if "decoder" in loaded:
            state.decoder_trained = bool(ckpt.get("decoder_trained", True))
        self.log.info(f"initialised {', '.join(loaded)} from {path}")
        return ckpt

    def continue_optimizers(self, ckpt: dict[str, Any], path: Path, optimizers: dict[str, torch.optim.Optimizer],
                            hyperparameters: dict[str, dict[str, float]], state: RunState) -> None:
        """`train.init_optimizers`: the optimizers' moments and the epoch count of `ckpt` go on, with the
        learning rates of this config (`hyperparameters`, per optimizer)."""
        kept, notes = [], []
        for name, opt in optimizers.items():
            sd = (ckpt.get("optimizers") or {}).get(name)
            if sd is None:
                notes.append(f"{name}: no state in the checkpoint, starts fresh")
                continue
            try:
                opt.load_state_dict(sd)
            except (ValueError, KeyError, RuntimeError) as e:
                notes.append(f"{name}: its state does not fit ({e}), starts fresh")
                opt.state.clear()
                continue
            for group in opt.param_groups:
                group.update(hyperparameters[name])
            kept.append(name)
        state.epoch = int(ckpt.get("epoch", 0)) + 1
        state.global_step = int(ckpt.get("global_step", 0))
        self.log.info(f"continuing from {path}: optimizer states of {', '.join(kept) or 'none'}"
                      + (f" ({'; '.join(notes)})" if notes else "") + f"; epoch {state.epoch} next")
