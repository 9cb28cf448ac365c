"""`fcs train`: DINO-WM training from an fcs store, on CPU, one GPU, or many through torchrun.

One `Trainer` runs the loop the reference runs, with what users lacked: per-part optimisers
(encoder Adam only if it trains, predictor AdamW, decoder Adam, action + proprio encoders AdamW),
gradient accumulation (no DDP sync until the last micro-batch), AMP, a decoder schedule that keeps
the decoder off the critical path (`model.decoder.schedule`), validation under `torch.no_grad()`
and `model.eval()` with the copy-last-frame baseline beside the losses, open-loop rollouts,
correct z-error slices, exact resume (weights, optimisers, scaler, every rank's RNG state as it was
at the last step boundary, position inside the epoch), atomic checkpoints, a clear stop on NaN/Inf
losses and inputs and on dead or stuck DataLoader workers, and a checkpoint before Ctrl-C exits.

The training step never waits for the device: loss components are accumulated as device tensors
and read once every `log.every_steps` steps (and at every checkpoint).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Sampler

from fcs_data.errors import FcsError
from fcs_data.loader import collate_windows, make_loader
from fcs_data.windows import WindowDataset
from fcs_train import dist as fdist
from fcs_train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fcs_train.config import TrainConfig
from fcs_train.metrics import LPIPS, image_metrics, z_errors
from fcs_train.models import PARTS, VWorldModel, build_model, to_model_input
from fcs_train.planning.during_training import PlanSelection, plan_eval_due, plan_eval_during_training
from fcs_train.plots import save_prediction_grid
from fcs_train.runlog import RunLog

PROFILE_STEPS = 3  # steps timed phase by phase at the end of the first epoch (fcs train prints where time went)


class TrainError(FcsError):
    """The run cannot go on; the message says why and where."""


class NonFiniteLoss(TrainError):
    pass


@dataclass
class RunSummary:
    run_dir: Path
    epoch: int
    global_step: int
    stopped_by: str
    best_val_loss: float
    train_history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)


@dataclass
class _Pending:
    """One optimizer step whose losses are still on the device."""

    step: int
    epoch: int
    components: dict[str, torch.Tensor]
    windows: list[tuple[int, int]]


class _ResumeSampler(Sampler[int]):
    """Wraps the epoch sampler; the first epoch after a resume skips the samples already trained on."""

    def __init__(self, base: DistributedSampler):
        self.base = base
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) - self.skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            next(it)
        self.skip = 0
        return it


class _ShardSampler(Sampler[int]):
    """Validation windows `rank, rank + world, ...` in order: every window once over all ranks."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def _worker_error(message: str) -> str:
    """The original error line of an exception a DataLoader worker raised (torch re-raises it with the
    worker's traceback as its message): `StoreDataError: /s.zarr: data/rgb/...: shard file is missing`."""
    lines = [line for line in message.splitlines() if line.strip()]
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(\w+: )", r"\1", lines[-1].strip()) if lines else message


def _next_batch(it: Iterator, timeout: float) -> dict | None:
    """`next(it)`, turning DataLoader worker deaths, timeouts and worker errors into messages that name them."""
    try:
        return next(it)
    except StopIteration:
        return None
    except Exception as e:
        msg = str(e)
        if "Original Traceback" in msg:
            raise TrainError(f"a DataLoader worker failed: {_worker_error(msg)}") from None
        if not isinstance(e, RuntimeError):
            raise
        if "timed out" in msg:
            worker = getattr(it, "_task_info", {}).get(getattr(it, "_rcvd_idx", -1), (None,))[0]
            workers = getattr(it, "_workers", [])
            pid = workers[worker].pid if worker is not None and worker < len(workers) else "?"
            raise TrainError(
                f"DataLoader worker {worker} (pid {pid}) sent no batch for {timeout:.0f} s "
                "(train.loader_timeout); it is stuck or the storage is unreachable"
            ) from e
        if "DataLoader worker" in msg:
            raise TrainError(
                f"{msg.splitlines()[0]}: a DataLoader worker died, most often killed for memory (see dmesg) or by a "
                "crash in a native library; lower data.num_workers or train.batch_size and resume with --resume"
            ) from e
        raise


def _architecture(section: dict) -> dict:
    """A config section without the decoder schedule (which changes how a run trains, not what it is)."""
    decoder = section.get("decoder")
    if not isinstance(decoder, dict):
        return section
    return {**section, "decoder": {k: v for k, v in decoder.items() if k not in ("schedule", "subset_frames",
                                                                                   "every_n")}}


def _pairs(batch: dict) -> list[tuple[int, int]]:
    return list(zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True))


def _listed(pairs: list, limit: int = 16) -> str:
    return f"{pairs[:limit]}{' ...' if len(pairs) > limit else ''}"


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True):
        self.cfg = cfg
        if cfg.data.store is None:
            raise TrainError("data.store is not set: give an fcs store (fcs convert ... --to zarr)")
        self.info = fdist.setup(cfg.train.device)
        self.device = self.info.device
        self.log = RunLog(cfg, enabled=self.info.is_main, show_progress=show_progress)
        self.ckpt_dir = cfg.train.run_dir / "checkpoints"

        d = cfg.data
        if d.cameras is not None and len(d.cameras) > 1 and d.fuse is None:
            raise TrainError(f"data.cameras {d.cameras}: the model takes one image per frame; set data.fuse to "
                             "side_by_side or channel_stack")
        common = dict(num_hist=d.num_hist, num_pred=d.num_pred, frameskip=d.frameskip, split_ratio=d.split_ratio,
                      seed=d.split_seed, cameras=d.cameras, fuse=d.fuse)
        self.train_ds = WindowDataset(d.store, split="train", cache=d.cache, **common)
        self.val_ds = WindowDataset(d.store, split="val", cache=d.cache, **common)
        need = (d.num_hist + d.num_pred) * d.frameskip
        if len(self.train_ds) == 0:
            raise TrainError(f"no training windows: every training episode is shorter than (num_hist + num_pred) * "
                             f"frameskip = {need} frames; lower data.num_hist or data.frameskip")
        self.store = self.train_ds.store
        self.fingerprint = self.store.fingerprint

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        layout = self.store.layout
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = build_model(cfg.model, proprio_dim=layout.proprio_dim, action_dim=layout.action_dim,
                                num_hist=d.num_hist, num_pred=d.num_pred, frameskip=d.frameskip)
        for w in caught:
            self.log.info(f"[bold yellow]warning:[/] {w.message}")
        self.schedule = cfg.model.decoder.schedule if model.decoder is not None else "off"
        self.decoder_trained = model.decoder is not None and self.schedule != "off"
        if model.decoder is not None and self.schedule == "off":
            model.decoder.requires_grad_(False)  # trained afterwards by `fcs train-decoder`
        init = self._init_from(model, cfg.train.init_from) if cfg.train.init_from is not None else None
        self.model: VWorldModel = model.to(self.device)
        self.optimizers = self._make_optimizers()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.lpips = LPIPS(cfg.log.lpips_vgg_weights).to(self.device) if cfg.log.lpips_vgg_weights else None
        # frames reconstructed under the `subset` schedule: a generator apart from dropout and shuffling
        self.decoder_gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + 17 + self.info.rank)

        self.epoch, self.global_step, self.step_in_epoch = 1, 0, 0
        self.best_val_loss = math.inf
        self.val_metrics: dict[str, float] = {}  # the last validation's, kept in checkpoints
        self.plan_best = PlanSelection(cfg.train.select_by)  # planning hook (issue 20): best.pt by a planning figure
        if resume:
            self._resume()
        else:
            torch.manual_seed(cfg.train.seed + 1000 * self.info.rank)  # dropout differs across ranks
            if init is not None and cfg.train.init_optimizers:
                self._continue_from(init, cfg.train.init_from)
        self._boundary_rng = self._rng_snapshot()  # what an interrupted step's checkpoint restores
        self.net: torch.nn.Module = self.model
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        if self.info.distributed:
            self.net = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.schedule == "every_n")

        world, rank = self.info.world_size, self.info.rank
        self.sampler = _ResumeSampler(DistributedSampler(self.train_ds, num_replicas=world, rank=rank, shuffle=True,
                                                         seed=cfg.train.seed, drop_last=True))
        loader_args = dict(batch_size=cfg.train.batch_size, num_workers=d.num_workers, seed=cfg.train.seed,
                           multiprocessing_context=d.multiprocessing_context, timeout=cfg.train.loader_timeout)
        self.train_loader = make_loader(self.train_ds, sampler=self.sampler, drop_last=True, **loader_args)
        self.val_loader = make_loader(self.val_ds, sampler=_ShardSampler(len(self.val_ds), rank, world),
                                      drop_last=False, **loader_args)
        self._optimizer_seconds: list[float] = []
        self._last_inputs: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        self._profiled = False
        if self.info.is_main:
            cfg.train.run_dir.mkdir(parents=True, exist_ok=True)
            (cfg.train.run_dir / "config.yaml").write_text(cfg.to_yaml())
            self.log.info(self._banner())

    # -- set-up ---------------------------------------------------------------------------------
    def _banner(self) -> str:
        c, n = self.cfg, self.info.world_size
        eff = c.train.batch_size * c.train.grad_accum * n
        counts = self.model.parameter_counts()
        trainable = sum(v["trainable"] for v in counts.values())
        dec = c.model.decoder
        schedule = {"subset": f"subset ({dec.subset_frames} frame(s) per window)",
                    "every_n": f"every_n (one step in {dec.every_n})"}.get(self.schedule, self.schedule)
        return (f"[bold]fcs train[/] -> {c.train.run_dir}\n"
                f"  data: {self.train_ds.describe()}\n        {self.val_ds.describe()}\n"
                f"  model: {sum(v['total'] for v in counts.values()):,} parameters, {trainable:,} trainable; "
                f"decoder schedule {schedule}; device {self.device}, {n} process(es), amp {self.amp_dtype or 'off'}\n"
                f"  batch {c.train.batch_size} x accum {c.train.grad_accum} x {n} = {eff} windows per step")

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.train.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "off"
        if amp == "fp16" and self.device.type != "cuda":
            raise TrainError("train.amp=fp16 needs CUDA; use bf16 or off on the CPU")
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o, m = self.cfg.optim, self.model
        opts: dict[str, torch.optim.Optimizer] = {}
        if self.cfg.model.encoder.train:
            opts["encoder"] = torch.optim.Adam(m.encoder.parameters(), lr=o.encoder_lr)
        opts["predictor"] = torch.optim.AdamW(m.predictor.parameters(), lr=o.predictor_lr, weight_decay=o.weight_decay)
        if m.decoder is not None and self.schedule != "off":
            opts["decoder"] = torch.optim.Adam(m.decoder.parameters(), lr=o.decoder_lr)
        opts["action_encoder"] = torch.optim.AdamW(
            [*m.action_encoder.parameters(), *m.proprio_encoder.parameters()], lr=o.action_encoder_lr,
            weight_decay=o.weight_decay)
        return opts

    def _configured_hyperparameters(self) -> dict[str, dict[str, float]]:
        o = self.cfg.optim
        return {"encoder": {"lr": o.encoder_lr}, "predictor": {"lr": o.predictor_lr, "weight_decay": o.weight_decay},
                "decoder": {"lr": o.decoder_lr},
                "action_encoder": {"lr": o.action_encoder_lr, "weight_decay": o.weight_decay}}

    def _init_from(self, model: VWorldModel, path: Path) -> dict[str, Any]:
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
            self.decoder_trained = bool(ckpt.get("decoder_trained", True))
        self.log.info(f"initialised {', '.join(loaded)} from {path}")
        return ckpt

    def _continue_from(self, ckpt: dict[str, Any], path: Path) -> None:
        """`train.init_optimizers`: the optimizers' moments and the epoch count of `ckpt` go on."""
        kept, notes = [], []
        hyper = self._configured_hyperparameters()
        for name, opt in self.optimizers.items():
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
            for group in opt.param_groups:  # the moments go on; the learning rates are this config's
                group.update(hyper[name])
            kept.append(name)
        self.epoch = int(ckpt.get("epoch", 0)) + 1
        self.global_step = int(ckpt.get("global_step", 0))
        self.log.info(f"continuing from {path}: optimizer states of {', '.join(kept) or 'none'}"
                      + (f" ({'; '.join(notes)})" if notes else "") + f"; epoch {self.epoch} next")

    # -- checkpoints and RNG --------------------------------------------------------------------
    def _rng_snapshot(self) -> dict[str, Any]:
        return {**rng_state(), "decoder": self.decoder_gen.get_state()}

    def _restore_rng(self, state: dict[str, Any]) -> None:
        set_rng_state(state)
        if "decoder" in state:
            self.decoder_gen.set_state(state["decoder"])

    def _checkpoint_payload(self, rng: dict[str, Any]) -> dict[str, Any]:
        stats = self.train_ds.stats or {}
        return {
            "model": {name: getattr(self.model, name).state_dict() for name in PARTS
                      if getattr(self.model, name) is not None},
            "model_config": self.cfg.model.model_dump(mode="json"),
            "dims": {"proprio_dim": self.store.layout.proprio_dim, "action_dim": self.store.layout.action_dim,
                     "num_hist": self.cfg.data.num_hist, "num_pred": self.cfg.data.num_pred,
                     "frameskip": self.cfg.data.frameskip},
            "epoch": self.epoch,
            "global_step": self.global_step,
            "step_in_epoch": self.step_in_epoch,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "world_size": self.info.world_size,
            "config": self.cfg.model_dump(mode="json"),
            "store": {"path": str(self.store.path), "fingerprint": self.fingerprint},
            "norm_stats": {k: v.model_dump() for k, v in stats.items()},
            "best_val_loss": self.best_val_loss,
            "plan_best": self.plan_best.score,  # planning hook (issue 20)
            "decoder_trained": self.decoder_trained,
            "layout": self.store.layout.model_dump(mode="json"),
            "image_stats": self._image_stats(),
            "val_metrics": self.val_metrics,
        }

    def _image_stats(self) -> dict[str, Any] | None:
        """Channel statistics of the frames the model takes (planning checks a client's channel order)."""
        d, stats = self.cfg.data, self.store.stats
        if d.fuse is not None:
            return None
        camera = d.cameras[0] if d.cameras else self.store.layout.observation.camera
        chosen = stats.rgb if camera == self.store.layout.observation.camera else stats.cameras.get(camera)
        return chosen.model_dump() if chosen is not None else None

    def _rank_rng_file(self, name: str, rank: int) -> Path:
        return self.ckpt_dir / f"{name}.rank{rank}.rng.pt"

    def _save(self, *names: str, interrupted: bool = False) -> None:
        """Checkpoints `names` (rank 0), and each other rank's own RNG state beside them.

        After an interrupted step the RNG state is the one at the last step boundary, so a resume redoes
        that step with the same dropout masks and decoder frames.
        """
        rng = self._boundary_rng if interrupted else self._rng_snapshot()
        if not self.info.is_main:
            for name in names:
                save_checkpoint({"rank": self.info.rank, "global_step": self.global_step, "rng": rng},
                                self._rank_rng_file(name, self.info.rank))
            return
        payload = self._checkpoint_payload(rng)
        for name in names:
            save_checkpoint(payload, self.ckpt_dir / f"{name}.pt")

    def _resume(self) -> None:
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
            getattr(self.model, name).load_state_dict(sd, strict=True)
        for name, sd in ckpt["optimizers"].items():
            if name in self.optimizers:  # e.g. a decoder trained by `fcs train-decoder` under schedule `off`
                self.optimizers[name].load_state_dict(sd)
        self.scaler.load_state_dict(ckpt["scaler"])
        self.decoder_trained = bool(ckpt.get("decoder_trained", self.decoder_trained))
        self.epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.step_in_epoch, self.best_val_loss = ckpt["step_in_epoch"], ckpt["best_val_loss"]
        self.plan_best.score = ckpt.get("plan_best")  # planning hook (issue 20)
        self.val_metrics = dict(ckpt.get("val_metrics") or {})
        rng = ckpt["rng"]
        if self.info.rank > 0:
            own = self._rank_rng_file("latest", self.info.rank)
            if ckpt.get("world_size", 1) != self.info.world_size or not own.exists():
                raise TrainError(f"{path} was written by {ckpt.get('world_size', 1)} process(es) and has no RNG state "
                                 f"for rank {self.info.rank} ({own}); resume with the same number of processes")
            mine = load_checkpoint(own)
            if mine["global_step"] != self.global_step:
                raise TrainError(f"{own} is from step {mine['global_step']}, {path} from step {self.global_step}")
            rng = mine["rng"]
        self._restore_rng(rng)
        self.log.load_history(self.global_step)
        self.log.info(f"resumed from {path}: epoch {self.epoch}, step {self.global_step}")

    # -- steps ----------------------------------------------------------------------------------
    def _inputs(self, batch: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        visual = batch["visual"].to(self.device, non_blocking=True)
        obs = {"visual": to_model_input(visual, self.cfg.model.image_size),
               "proprio": batch["proprio"].to(self.device, non_blocking=True)}
        return obs, batch["action"].to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _decoder_work(self, batch_size: int, frames: int) -> dict[str, Any]:
        """What the decoder does in this training step (`model.decoder.schedule`)."""
        dec = self.cfg.model.decoder
        if self.schedule == "joint":
            return {"decode_pred": True, "reconstruct": True}
        if self.schedule == "subset":
            k = min(dec.subset_frames, frames)
            picks = torch.rand(batch_size, frames, generator=self.decoder_gen).argsort(dim=1)[:, :k]
            return {"decode_pred": False, "reconstruct": True, "recon_frames": picks.to(self.device)}
        if self.schedule == "every_n":
            return {"decode_pred": False, "reconstruct": self.global_step % dec.every_n == 0}
        return {"decode_pred": False, "reconstruct": False}

    def _check_inputs(self, batch: dict) -> None:
        """Refuse non-finite inputs before they reach the model (a CPU check: no device sync)."""
        bad = ~(torch.isfinite(batch["action"]).flatten(1).all(1) & torch.isfinite(batch["proprio"]).flatten(1).all(1))
        if not bad.any():
            return
        fs, a = self.cfg.data.frameskip, self.store.layout.action_dim
        where = []
        for i in torch.nonzero(bad).flatten().tolist():
            start = int(batch["start"][i])
            act = torch.nonzero(~torch.isfinite(batch["action"][i]))
            if len(act):
                row, col = act[0].tolist()
                where.append(f"episode {int(batch['episode'][i])} step {start + row * fs + col // a} (action)")
            else:
                row = int(torch.nonzero(~torch.isfinite(batch["proprio"][i]))[0, 0])
                where.append(f"episode {int(batch['episode'][i])} step {start + row * fs} (proprio)")
        raise NonFiniteLoss(f"non-finite inputs at step {self.global_step + 1} (epoch {self.epoch}): "
                            f"{_listed(where, 8)}; check them with `fcs validate {self.store.path}`")

    def _optimizer_step(self) -> None:
        clip = self.cfg.optim.grad_clip
        for opt in self.optimizers.values():
            if clip is not None:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
            self.scaler.step(opt)
        self.scaler.update()
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _flush(self, pending: list[_Pending], t_window: float, wait: float) -> dict[str, float] | None:
        """Read the pending steps' losses from the device (one sync), check them, record one line per step."""
        if not pending:
            return None
        keys = [(i, k) for i, p in enumerate(pending) for k in sorted(p.components)]  # every_n: keys vary by step
        values = torch.stack([pending[i].components[k].float() for i, k in keys])
        values = fdist.mean_tensor(values, self.info).cpu().tolist()
        rows: list[dict[str, float]] = [{} for _ in pending]
        for (i, k), v in zip(keys, values, strict=True):
            rows[i][k] = v
        elapsed = time.perf_counter() - t_window
        samples = self.cfg.train.batch_size * self.cfg.train.grad_accum * self.info.world_size
        stats = {"steps_per_s": len(pending) / elapsed, "samples_per_s": samples * len(pending) / elapsed,
                 "data_wait": wait / elapsed}
        for p, means in zip(pending, rows, strict=True):
            if not all(math.isfinite(v) for v in means.values()):
                raise NonFiniteLoss(
                    f"loss is {means['loss']} at step {p.step} (epoch {p.epoch}); the inputs were finite, so the model "
                    f"diverged: lower the learning rates (optim.*_lr) or set optim.grad_clip. The step's (episode, "
                    f"start) windows: {_listed(p.windows)}")
            self.log.record("train", {"step": p.step, "epoch": p.epoch, **means, **stats})
        last = rows[-1]
        self.log.update(self.step_in_epoch, {**last, **stats})
        if not self.log.show_progress and any(p.step % self.cfg.log.print_every_steps == 0 for p in pending):
            self.log.info(f"step {pending[-1].step}: loss {last['loss']:.4f}, {stats['steps_per_s']:.2f} steps/s, "
                          f"data wait {100 * stats['data_wait']:.0f}%")
        return last

    def _train_epoch(self) -> bool:
        """One epoch (or what is left of it after a resume); True when max_steps is reached."""
        cfg, accum = self.cfg, self.cfg.train.grad_accum
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.step_in_epoch * accum * cfg.train.batch_size
        steps_in_epoch = len(self.sampler.base) // cfg.train.batch_size // accum
        self.log.start_epoch(self.epoch, steps_in_epoch, self.step_in_epoch)
        it = iter(self.train_loader)
        pending: list[_Pending] = []
        sums: dict[str, torch.Tensor] = {}
        windows: list[tuple[int, int]] = []
        micro, wait, wait_epoch = 0, 0.0, 0.0
        t_epoch = t_window = time.perf_counter()
        self._epoch_time = (0.0, 0.0, 0)
        try:
            while True:
                t0 = time.perf_counter()
                batch = _next_batch(it, cfg.train.loader_timeout)
                wait += time.perf_counter() - t0
                if batch is None:
                    break
                self._check_inputs(batch)
                obs, act = self._inputs(batch)
                sync = (micro + 1) % accum == 0
                ctx = self.net.no_sync() if self.info.distributed and not sync else contextlib.nullcontext()
                with ctx:
                    with self._autocast():
                        out = self.net(obs, act, **self._decoder_work(act.shape[0], act.shape[1]))
                    self.scaler.scale(out.loss / accum).backward()
                for k, v in out.components.items():
                    sums[k] = sums[k] + v.detach() / accum if k in sums else v.detach() / accum
                windows += _pairs(batch)
                micro += 1
                if not sync:
                    continue
                self._timed_optimizer_step()
                self.global_step += 1
                self.step_in_epoch += 1
                self._boundary_rng = self._rng_snapshot()
                self._last_inputs = (obs, act)
                pending.append(_Pending(self.global_step, self.epoch, sums, windows))
                self.log.advance(self.step_in_epoch)
                sums, windows = {}, []
                done = cfg.train.max_steps is not None and self.global_step >= cfg.train.max_steps
                if len(pending) >= cfg.log.every_steps or done:
                    wait_epoch += wait
                    self._flush(pending, t_window, wait)
                    pending, wait, t_window = [], 0.0, time.perf_counter()
                if done:
                    self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, self.step_in_epoch)
                    return True
            wait_epoch += wait
            self._flush(pending, t_window, wait)
            pending = []
        finally:
            if pending:  # Ctrl-C or an error: what was trained is still recorded before the checkpoint
                with contextlib.suppress(Exception):
                    self._flush(pending, t_window, wait)
        for opt in self.optimizers.values():  # micro-batches left over at the end of an epoch
            opt.zero_grad(set_to_none=True)
        self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, self.step_in_epoch)
        return False

    def _timed_optimizer_step(self) -> None:
        profiling = len(self._optimizer_seconds) < PROFILE_STEPS + 2
        if profiling:
            self._sync()
        t0 = time.perf_counter()
        self._optimizer_step()
        if profiling:
            self._sync()
            self._optimizer_seconds.append(time.perf_counter() - t0)

    # -- evaluation -----------------------------------------------------------------------------
    def _decoding(self) -> bool:
        return self.model.decoder is not None and self.decoder_trained

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses, the copy-last-frame baseline, z errors and image metrics over the validation
        windows (all ranks). A non-finite loss stops the run naming the windows that produced it."""
        model = self.model
        self.net.eval()
        decode = self._decoding()
        totals: dict[str, float] = {}
        count = 0
        bad: list[tuple[int, int]] = []
        it = iter(self.val_loader)
        while (batch := _next_batch(it, self.cfg.train.loader_timeout)) is not None:
            obs, act = self._inputs(batch)
            with self._autocast():
                out = model(obs, act, decode_pred=decode, reconstruct=decode)
            values = {k: float(v) for k, v in out.components.items()}
            if not math.isfinite(values["loss"]):
                bad += self._nonfinite_windows(batch, obs, act)
                continue
            values |= {k: float(v) for k, v in model.copy_last_frame_losses(out.z.float()).items()}
            z_tgt = out.z[:, model.num_pred :]
            values |= {k: float(v) for k, v in z_errors(model, out.z_pred.float(), z_tgt.float()).items()}
            target = obs["visual"][:, model.num_pred :]
            if out.visual_pred is not None:
                values |= {k: float(v) for k, v in image_metrics(out.visual_pred, target, "pred").items()}
                values |= {k: float(v) for k, v in image_metrics(out.visual_rec, obs["visual"], "rec").items()}
                if self.lpips is not None:
                    values["pred_lpips"] = float(self.lpips(out.visual_pred, target))
                    values["rec_lpips"] = float(self.lpips(out.visual_rec, obs["visual"]))
            n = len(batch["episode"])
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v * n
            count += n
        means = {k: v / count for k, v in totals.items()} if count else {}
        means = fdist.mean_across({**means, "_bad": float(len(bad))}, self.info, weight=float(max(count, 1)))
        self.net.train()
        if means.pop("_bad", 0.0) > 0:
            raise NonFiniteLoss(
                f"the validation loss is not finite at epoch {self.epoch} (step {self.global_step}); the validation "
                f"windows (episode, start) that produce it{' on this rank' if self.info.distributed else ''}: "
                f"{_listed(bad)}")
        for part in ("visual", "proprio"):
            loss, copy = means.get(f"z_{part}_loss"), means.get(f"z_{part}_loss_copy")
            if loss is not None and copy:
                means[f"z_{part}_skill"] = 1.0 - loss / copy
        return means

    def _nonfinite_windows(self, batch: dict, obs: dict[str, torch.Tensor], act: torch.Tensor) -> list[tuple[int, int]]:
        """The windows of a batch whose loss is not finite (each evaluated alone)."""
        out = []
        for i, pair in enumerate(_pairs(batch)):
            one = {k: v[i : i + 1] for k, v in obs.items()}
            with self._autocast():
                loss = self.model(one, act[i : i + 1], decode_pred=False, reconstruct=self._decoding()).loss
            if not torch.isfinite(loss):
                out.append(pair)
        return out

    @torch.no_grad()
    def rollout_errors(self) -> dict[str, float]:
        """Open-loop rollouts on validation episodes (the reference's protocol): from num_hist and
        from 1 context frame, predict to the end of a random horizon; z error of the last frame."""
        model, ds, cfg = self.model, self.val_ds, self.cfg
        fs, num_hist = ds.frameskip, model.num_hist
        min_h = 2 + num_hist
        lengths = self.store.episode_lengths
        eligible = [int(e) for e in ds.episodes if lengths[e] >= (min_h + 1) * fs]
        if not eligible or cfg.train.num_rollouts == 0:
            return {}
        model.eval()
        errs: dict[str, list[float]] = {}
        for i in range(cfg.train.num_rollouts):
            rng = np.random.default_rng([cfg.train.seed, self.epoch, i])  # never the global RNG
            ep = eligible[int(rng.integers(len(eligible)))]
            max_h = int(lengths[ep]) // fs - 1
            horizon = int(rng.integers(min_h, max_h + 1))
            start = int(rng.integers(0, int(lengths[ep]) - (horizon + 1) * fs + 1))
            w = ds.window(ep, start, horizon + 1)
            visual = to_model_input(w["visual"].unsqueeze(0).to(self.device), cfg.model.image_size)
            proprio = w["proprio"].unsqueeze(0).to(self.device)
            actions = w["action"][:horizon].unsqueeze(0).to(self.device)
            goal = model.encode_obs({"visual": visual[:, -1:], "proprio": proprio[:, -1:]})
            for n_ctx, suffix in ((num_hist, ""), (1, "_1framestart")):
                z_obses, _ = model.rollout({"visual": visual[:, :n_ctx], "proprio": proprio[:, :n_ctx]}, actions)
                for part in ("visual", "proprio"):
                    err = F.mse_loss(z_obses[part][:, -1:], goal[part]).item()
                    errs.setdefault(f"z_{part}_err_rollout{suffix}", []).append(err)
        model.train()
        return {k: float(np.mean(v)) for k, v in errs.items()}

    def _save_images(self) -> None:
        n = min(self.cfg.log.num_reconstruct_samples, len(self.val_ds))
        if n == 0 or not self._decoding():
            return
        batch = collate_windows([self.val_ds[i] for i in np.linspace(0, len(self.val_ds) - 1, n).astype(int)])
        obs, act = self._inputs(batch)
        self.model.eval()
        with torch.no_grad(), self._autocast():
            out = self.model(obs, act)
        self.model.train()
        save_prediction_grid(self.cfg.train.run_dir / "images" / f"epoch_{self.epoch:04d}.png", obs["visual"],
                             out.visual_pred, out.visual_rec, self.model.num_pred)

    def _profile(self) -> dict[str, float] | None:
        """Where a training step's time goes: encoder, predictor, decoder (timed apart on the last batch,
        forward and backward, RNG and gradients restored afterwards), optimizer and data wait (measured
        in the epoch). Seconds per step."""
        if self._last_inputs is None or not self._optimizer_seconds:
            return None
        obs, act = self._last_inputs
        model, rng = self.model, self._rng_snapshot()
        phases: dict[str, list[float]] = {"encoder": [], "predictor": [], "decoder": []}
        model.train()
        share = 1.0 / self.cfg.model.decoder.every_n if self.schedule == "every_n" else 1.0
        for _ in range(PROFILE_STEPS + 1):  # the first is a warm-up
            work = self._decoder_work(act.shape[0], act.shape[1])
            if self.schedule == "every_n":
                work["reconstruct"] = True  # timed in full, counted as one step in every_n
            self._sync()
            t0 = time.perf_counter()
            with self._autocast():
                z = model.encode(obs, act)
            self._sync()
            t1 = time.perf_counter()
            with self._autocast():
                z_pred = model.predict(z[:, : model.num_hist])
                z_loss = model._z_losses(z_pred, z[:, model.num_pred :])["z_loss"]
            z_loss.backward()
            self._sync()
            t2 = time.perf_counter()
            with self._autocast():
                decoded, _, _ = model.decoder_losses(z, z_pred, obs["visual"], **work)
            if "decoder_loss_reconstructed" in decoded:
                decoded["decoder_loss_reconstructed"].backward()
            self._sync()
            t3 = time.perf_counter()
            for name, seconds in (("encoder", t1 - t0), ("predictor", t2 - t1), ("decoder", (t3 - t2) * share)):
                phases[name].append(seconds)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._restore_rng(rng)
        seconds, wait, steps = self._epoch_time
        out = {name: float(np.median(v[1:])) for name, v in phases.items()}
        out["optimizer"] = float(np.median(self._optimizer_seconds[1:] or self._optimizer_seconds))
        out["data wait"] = wait / max(steps, 1)
        return out

    # -- the run --------------------------------------------------------------------------------
    def _end_epoch(self, stopped: bool) -> None:
        cfg = self.cfg
        seconds, wait, _steps = self._epoch_time
        row: dict[str, Any] = {"epoch": self.epoch, "step": self.global_step, "seconds": seconds,
                               "data_wait": wait / seconds if seconds else 0.0}
        train_recs = [r for r in self.log.train_history if r.get("epoch") == self.epoch]
        if train_recs:
            row["loss"] = float(np.mean([r["loss"] for r in train_recs]))
        is_val = stopped or self.epoch % cfg.train.val_every_epochs == 0
        if is_val:
            val = self.validate()
            if self.info.is_main and self.epoch % cfg.train.rollout_every_epochs == 0:
                val |= self.rollout_errors()
            if val:
                self.val_metrics = val
                self.log.record("val", {"step": self.global_step, "epoch": self.epoch, **val})
                row |= {f"val_{k}": v for k, v in val.items()}
        if plan_eval_due(cfg.train, self.epoch, stopped):  # planning hook (issue 20): figures into the row and logs
            plan = plan_eval_during_training(self.model, self.store, self.train_ds.stats, cfg, self.device, self.info)
            self.log.record("plan", {"step": self.global_step, "epoch": self.epoch, **plan})
            row |= plan
        if self.info.is_main and (stopped or self.epoch % cfg.log.png_every_epochs == 0):
            self._save_images()
        if self.info.is_main and not self._profiled:
            profile = self._profile()
            if profile:
                self._profiled = True
                self.log.profile(profile, self.global_step)
        if torch.cuda.is_available() and self.device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        self.log.end_epoch()
        self.log.epoch_summary(row)
        names = []
        if not stopped:
            if self.epoch % cfg.train.checkpoint_every_epochs == 0:
                names.append(f"epoch_{self.epoch:04d}")
            self.epoch += 1
            self.step_in_epoch = 0
        val_loss = row.get("val_loss")
        if val_loss is not None and val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            if cfg.train.select_by == "val_loss":
                names.append("best")
        if cfg.train.select_by != "val_loss" and self.plan_best.improved(row):  # planning hook (issue 20)
            names.append("best")
        self._save("latest", *names)
        self._boundary_rng = self._rng_snapshot()
        fdist.barrier(self.info)

    def fit(self) -> RunSummary:
        cfg = self.cfg
        stopped_by = "epochs"
        try:
            while self.epoch <= cfg.train.epochs:
                if cfg.train.max_steps is not None and self.global_step >= cfg.train.max_steps:
                    stopped_by = "max_steps"
                    break
                stopped = self._train_epoch()
                self._end_epoch(stopped)
                if stopped:
                    stopped_by = "max_steps"
                    break
        except KeyboardInterrupt:
            self.log.end_epoch()
            for opt in self.optimizers.values():  # the interrupted step is redone on resume
                opt.zero_grad(set_to_none=True)
            self._save("latest", interrupted=True)
            self.log.info(f"[yellow]interrupted[/] at step {self.global_step}: wrote {self.ckpt_dir / 'latest.pt'}; "
                          "continue with --resume")
            raise
        finally:
            self.log.close()
        self.log.final_table()
        if self.info.is_main:
            best = f", best validation loss {self.best_val_loss:.4f}" if math.isfinite(self.best_val_loss) else ""
            self.log.info(f"done ({stopped_by}): {self.global_step} steps{best}; checkpoints in {self.ckpt_dir}")
        return RunSummary(cfg.train.run_dir, self.epoch, self.global_step, stopped_by, self.best_val_loss,
                          self.log.train_history, self.log.val_history)

    def close(self) -> None:
        fdist.teardown()
