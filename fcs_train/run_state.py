"""A run's checkpoints as the trainer uses them: saving, exact resume, starting from another run's weights.

A resume continues to the same weights, bit for bit on CPU, as a run that was never stopped: the
checkpoint (`RunCheckpoint`) holds every part, the optimizers, the scaler, the `RunState` (position
inside the epoch included) and every rank's RNG state as it was at the last step boundary (rank 0's
in the checkpoint, the others beside it, `RunDir.rank_rng`). Optimizer moments are matched to
parameters by name wherever the saved state names them, never by position alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fcs_data.splits import EpisodeSplit
from fcs_data.stats import Normalizer
from fcs_data.store import Store
from fcs_train import dist as fdist
from fcs_train.checkpoint import (
    RunCheckpoint,
    RunState,
    StoreRef,
    load_checkpoint,
    load_rank_rng,
    save_checkpoint,
    save_rank_rng,
)
from fcs_train.config import TrainConfig
from fcs_train.errors import TrainError
from fcs_train.models import PARTS, ModelSpec, VWorldModel
from fcs_train.run_dir import RunDir
from fcs_train.runlog import RunLog


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load `state` into `opt`: each parameter's moments by name when `state` names its parameters
    (`param_names`: fcs checkpoints of format 2 and imported ones), by position otherwise (format 1).
    `ValueError` when the names are not this optimizer's."""
    groups = state["param_groups"]
    if not all("param_names" in g for g in groups):
        opt.load_state_dict(state)
        return
    own = [g.get("param_names") or [] for g in opt.param_groups]
    if len(groups) != len(own) or any(set(g["param_names"]) != set(names)
                                      for g, names in zip(groups, own, strict=True)):
        differ = sorted({n for g in groups for n in g["param_names"]} ^ {n for names in own for n in names})
        raise ValueError(f"the saved state is of other parameters (differing: {differ[:5]})")
    saved_id = {n: i for g in groups for n, i in zip(g["param_names"], g["params"], strict=True)}
    remapped = [{**g, "params": [saved_id[n] for n in names], "param_names": list(names)}
                for g, names in zip(groups, own, strict=True)]
    opt.load_state_dict({**state, "param_groups": remapped})


# settings of the data and model sections that change neither the windows nor the model, so `--resume`
# may change them: how the data is read, where the store lives (it is matched by content), how the
# decoder is scheduled, where the frozen encoder's weights file lies
RESUMABLE = ("data.store", "data.num_workers", "data.cache", "data.multiprocessing_context", "model.decoder.schedule",
             "model.decoder.subset_frames", "model.decoder.every_n", "model.encoder.weights")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """`(refused, allowed)`: the keys whose values differ between two resolved configs, as
    `key: old -> new`; refused are those of the data and model sections that define the run."""
    a, b = _flat(old), _flat(new)
    refused, allowed = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or key == "train.run_dir":
            continue
        line = f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
        defines = key.startswith(("data.", "model.")) and key not in RESUMABLE
        (refused if defines else allowed).append(line)
    return refused, allowed


class RunCheckpoints:
    """The checkpoints of one run, as one process of it sees them."""

    def __init__(self, cfg: TrainConfig, info: fdist.DistInfo, store: Store, spec: ModelSpec, normalizer: Normalizer,
                 log: RunLog):
        self.cfg, self.info, self.store, self.spec, self.normalizer, self.log = cfg, info, store, spec, normalizer, log
        self.run = RunDir.of_config(cfg)

    def _image_stats(self) -> dict[str, Any] | None:
        """Channel statistics of the frames the model takes (planning checks a client's channel order)."""
        d, stats, layout = self.cfg.data, self.store.stats, self.store.layout
        if d.fuse is not None:
            return None
        camera = d.cameras[0] if d.cameras else layout.observation.camera
        chosen = stats.rgb if camera == layout.observation.camera else stats.cameras.get(camera)
        return chosen.model_dump() if chosen is not None else None

    def _checkpoint(self, model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer],
                    scaler: torch.amp.GradScaler, state: RunState, rng: dict[str, Any]) -> RunCheckpoint:
        return RunCheckpoint(
            spec=self.spec, weights={name: getattr(model, name).state_dict() for name in PARTS if getattr(model, name) is not None},
            state=state, optimizers={k: v.state_dict() for k, v in optimizers.items()}, scaler=scaler.state_dict(),
            rng=rng, world_size=self.info.world_size, normalizer=self.normalizer, layout=self.store.layout,
            split=EpisodeSplit(ratio=self.cfg.data.split_ratio, seed=self.cfg.data.split_seed),
            store=StoreRef.of(self.store),
            image_stats=self._image_stats(), config=RunCheckpoint.config_rest(self.cfg))

    def save(self, names: tuple[str, ...], model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer],
             scaler: torch.amp.GradScaler, state: RunState, rng: dict[str, Any]) -> None:
        """Checkpoints `names` (rank 0), and each other rank's own RNG state beside them."""
        if not self.info.is_main:
            for name in names:
                save_rank_rng(self.run.rank_rng(name, self.info.rank), self.info.rank, state.global_step, rng)
            return
        ckpt = self._checkpoint(model, optimizers, scaler, state, rng)
        for name in names:
            save_checkpoint(ckpt, self.run.checkpoint(name))

    def resume(self, model: VWorldModel, optimizers: dict[str, torch.optim.Optimizer], scaler: torch.amp.GradScaler,
               state: RunState, hyperparameters: dict[str, dict[str, float]]) -> dict[str, Any]:
        """Load `latest.pt` into the run (refusing another store's content, or a change of a setting that
        defines the windows or the model, naming each); settings that may change take effect (the
        optimizers take this config's `hyperparameters`) and are recorded. Returns the RNG state this
        rank restores."""
        path = self.run.latest
        if not path.exists():
            raise TrainError(f"nothing to resume: {path} does not exist")
        ckpt = load_checkpoint(path)
        if ckpt.store is None or not ckpt.store.matches(self.store):
            where = ckpt.store.path if ckpt.store else "no store recorded"
            raise TrainError(f"{path} was trained on a different store ({where}): the store given holds other "
                             "episodes; not resuming")
        refused, allowed = config_changes(ckpt.train_config().model_dump(mode="json"), self.cfg.model_dump(mode="json"))
        if refused:
            sections = " and ".join(s for s in ("model", "data") if any(r.startswith(s + ".") for r in refused))
            raise TrainError(f"the {sections} section differs from the run being resumed ({path}): "
                             f"{'; '.join(refused)}; "
                             "only how data is read (data.num_workers, data.cache, ...), the decoder schedule and the "
                             "train/optim/log sections may change on --resume")
        for name, sd in ckpt.weights.items():
            getattr(model, name).load_state_dict(sd, strict=True)
        for name, sd in ckpt.optimizers.items():
            if name in optimizers:  # e.g. a decoder trained by `fcs train-decoder` under schedule `off`
                load_optimizer_state(optimizers[name], sd)
                for group in optimizers[name].param_groups:  # the moments go on; the rates are this config's
                    group.update(hyperparameters.get(name, {}))
        scaler.load_state_dict(ckpt.scaler)
        for field in ("epoch", "global_step", "step_in_epoch", "best_val_loss", "val_metrics", "decoder_trained",
                      "plan_best"):
            setattr(state, field, getattr(ckpt.state, field))
        rng = ckpt.rng
        if self.info.rank > 0:
            own = self.run.rank_rng("latest", self.info.rank)
            if ckpt.world_size != self.info.world_size or not own.exists():
                raise TrainError(f"{path} was written by {ckpt.world_size} process(es) and has no RNG state "
                                 f"for rank {self.info.rank} ({own}); resume with the same number of processes")
            step, rng = load_rank_rng(own)
            if step != state.global_step:
                raise TrainError(f"{own} is from step {step}, {path} from step {state.global_step}")
        self.log.load_history(state.global_step)
        self.log.info(f"resumed from {path}: epoch {state.epoch}, step {state.global_step}"
                      + (f"; changed: {'; '.join(allowed)}" if allowed else ""))
        if allowed:
            self.log.record("resume", {"step": state.global_step, "changed": allowed})
        return rng

    def init_weights(self, model: VWorldModel, path: Path, state: RunState) -> RunCheckpoint:
        """`train.init_from`: every part of the checkpoint at `path` that this model has, loaded strictly."""
        ckpt = load_checkpoint(path)
        loaded = []
        for name, sd in ckpt.weights.items():
            part = getattr(model, name, None)
            if part is None:
                continue
            try:
                part.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise TrainError(f"{path}: part {name!r} does not fit this model: {str(e).splitlines()[0]}") from e
            loaded.append(name)
        if "decoder" in loaded:
            state.decoder_trained = ckpt.state.decoder_trained
        self.log.info(f"initialised {', '.join(loaded)} from {path}")
        return ckpt

    def continue_optimizers(self, ckpt: RunCheckpoint, path: Path, optimizers: dict[str, torch.optim.Optimizer],
                            hyperparameters: dict[str, dict[str, float]], state: RunState) -> None:
        """`train.init_optimizers`: the optimizers' moments and the epoch count of `ckpt` go on, with the
        learning rates of this config (`hyperparameters`, per optimizer)."""
        kept, notes = [], []
        for name, opt in optimizers.items():
            sd = ckpt.optimizers.get(name)
            if sd is None:
                notes.append(f"{name}: no state in the checkpoint, starts fresh")
                continue
            try:
                load_optimizer_state(opt, sd)
            except (ValueError, KeyError, RuntimeError) as e:
                notes.append(f"{name}: its state does not fit ({e}), starts fresh")
                opt.state.clear()
                continue
            for group in opt.param_groups:
                group.update(hyperparameters[name])
            kept.append(name)
        state.epoch = ckpt.state.epoch + 1
        state.global_step = ckpt.state.global_step
        self.log.info(f"continuing from {path}: optimizer states of {', '.join(kept) or 'none'}"
                      + (f" ({'; '.join(notes)})" if notes else "") + f"; epoch {state.epoch} next")
