"""`fcs train`: DINO-WM training from an fcs store, on CPU, one GPU, or many through torchrun.

One `Trainer` runs the loop the reference runs, with what users lacked: per-part optimisers
(encoder Adam only if it trains, predictor AdamW, decoder Adam, action + proprio encoders AdamW),
gradient accumulation (no DDP sync until the last micro-batch), AMP, validation under
`torch.no_grad()` and `model.eval()`, open-loop rollouts, correct z-error slices, exact resume
(weights, optimisers, scaler, RNG, position inside the epoch), atomic checkpoints, a clear stop on
NaN/Inf losses and on dead or stuck DataLoader workers, and a checkpoint before Ctrl-C exits.
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
from fcs_train.plots import save_prediction_grid
from fcs_train.runlog import RunLog


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
        common = dict(num_hist=d.num_hist, num_pred=d.num_pred, frameskip=d.frameskip, split_ratio=d.split_ratio,
                      seed=d.split_seed)
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
        if cfg.train.init_from is not None:
            self._init_from(model, cfg.train.init_from)
        self.model: VWorldModel = model.to(self.device)
        self.optimizers = self._make_optimizers()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.lpips = LPIPS(cfg.log.lpips_vgg_weights).to(self.device) if cfg.log.lpips_vgg_weights else None

        self.epoch, self.global_step, self.step_in_epoch = 1, 0, 0
        self.best_val_loss = math.inf
        if resume:
            self._resume()
        else:
            torch.manual_seed(cfg.train.seed + 1000 * self.info.rank)  # dropout differs across ranks
        self.net: torch.nn.Module = self.model
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        if self.info.distributed:
            self.net = DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None)

        world, rank = self.info.world_size, self.info.rank
        self.sampler = _ResumeSampler(DistributedSampler(self.train_ds, num_replicas=world, rank=rank, shuffle=True,
                                                         seed=cfg.train.seed, drop_last=True))
        loader_args = dict(batch_size=cfg.train.batch_size, num_workers=d.num_workers, seed=cfg.train.seed,
                           multiprocessing_context=d.multiprocessing_context, timeout=cfg.train.loader_timeout)
        self.train_loader = make_loader(self.train_ds, sampler=self.sampler, drop_last=True, **loader_args)
        self.val_loader = make_loader(self.val_ds, sampler=_ShardSampler(len(self.val_ds), rank, world),
                                      drop_last=False, **loader_args)
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
        return (f"[bold]fcs train[/] -> {c.train.run_dir}\n"
                f"  data: {self.train_ds.describe()}\n        {self.val_ds.describe()}\n"
                f"  model: {sum(v['total'] for v in counts.values()):,} parameters, {trainable:,} trainable; "
                f"device {self.device}, {n} process(es), amp {self.amp_dtype or 'off'}\n"
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
        if m.decoder is not None:
            opts["decoder"] = torch.optim.Adam(m.decoder.parameters(), lr=o.decoder_lr)
        opts["action_encoder"] = torch.optim.AdamW(
            [*m.action_encoder.parameters(), *m.proprio_encoder.parameters()], lr=o.action_encoder_lr,
            weight_decay=o.weight_decay)
        return opts

    def _init_from(self, model: VWorldModel, path: Path) -> None:
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
        self.log.info(f"initialised {', '.join(loaded)} from {path}")

    def _checkpoint_payload(self) -> dict[str, Any]:
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
            "rng": rng_state(),
            "config": self.cfg.model_dump(mode="json"),
            "store": {"path": str(self.store.path), "fingerprint": self.fingerprint},
            "norm_stats": {k: v.model_dump() for k, v in stats.items()},
            "best_val_loss": self.best_val_loss,
        }

    def _save(self, *names: str) -> None:
        if not self.info.is_main:
            return
        payload = self._checkpoint_payload()
        for name in names:
            save_checkpoint(payload, self.ckpt_dir / f"{name}.pt")

    def _resume(self) -> None:
        path = self.ckpt_dir / "latest.pt"
        if not path.exists():
            raise TrainError(f"nothing to resume: {path} does not exist")
        ckpt = load_checkpoint(path)
        if ckpt["store"]["fingerprint"] != self.fingerprint:
            raise TrainError(f"{path} was trained on a different store ({ckpt['store']['path']}); not resuming")
        old = ckpt["config"]
        for section in ("model", "data"):
            if old[section] != self.cfg.model_dump(mode="json")[section]:
                raise TrainError(f"the {section} section differs from the run being resumed ({path}); "
                                 "only train/optim/log settings may change on --resume")
        for name, sd in ckpt["model"].items():
            getattr(self.model, name).load_state_dict(sd, strict=True)
        for name, sd in ckpt["optimizers"].items():
            self.optimizers[name].load_state_dict(sd)
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.step_in_epoch, self.best_val_loss = ckpt["step_in_epoch"], ckpt["best_val_loss"]
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

    def _train_epoch(self) -> bool:
        """One epoch (or what is left of it after a resume); True when max_steps is reached."""
        cfg, accum = self.cfg, self.cfg.train.grad_accum
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip = self.step_in_epoch * accum * cfg.train.batch_size
        steps_in_epoch = len(self.sampler.base) // cfg.train.batch_size // accum
        self.log.start_epoch(self.epoch, steps_in_epoch, self.step_in_epoch)
        samples_per_step = cfg.train.batch_size * accum * self.info.world_size
        it = iter(self.train_loader)
        sums: dict[str, float] = {}
        micro, t_step, wait = 0, time.perf_counter(), 0.0
        t_epoch, steps_done, wait_epoch = time.perf_counter(), 0, 0.0
        while True:
            t0 = time.perf_counter()
            batch = _next_batch(it, cfg.train.loader_timeout)
            wait += time.perf_counter() - t0
            if batch is None:
                break
            obs, act = self._inputs(batch)
            sync = (micro + 1) % accum == 0
            ctx = self.net.no_sync() if self.info.distributed and not sync else contextlib.nullcontext()
            with ctx:
                with self._autocast():
                    _, _, _, loss, comps = self.net(obs, act)
                if not torch.isfinite(loss):
                    pairs = sorted(zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True))
                    raise NonFiniteLoss(
                        f"loss is {loss.item()} at step {self.global_step + 1} (epoch {self.epoch}); the batch holds "
                        f"(episode, start) windows {pairs[:16]}{' ...' if len(pairs) > 16 else ''}; check those "
                        "episodes with `fcs validate STORE` and lower the learning rates if they are clean"
                    )
                self.scaler.scale(loss / accum).backward()
            for k, v in comps.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
            micro += 1
            if not sync:
                continue
            self._optimizer_step()
            self.global_step += 1
            self.step_in_epoch += 1
            steps_done += 1
            now = time.perf_counter()
            step_time = now - t_step
            means = fdist.mean_across(sums, self.info)
            stats = {"steps_per_s": 1 / step_time, "samples_per_s": samples_per_step / step_time,
                     "data_wait": wait / step_time}
            wait_epoch += wait
            self.log.record("train", {"step": self.global_step, "epoch": self.epoch, **means, **stats})
            self.log.update(self.step_in_epoch, {**means, **stats})
            if self.global_step % cfg.log.print_every_steps == 0 and not self.log.show_progress:
                self.log.info(f"step {self.global_step}: loss {means['loss']:.4f}, {stats['steps_per_s']:.2f} steps/s, "
                              f"data wait {100 * stats['data_wait']:.0f}%")
            sums, wait, t_step = {}, 0.0, time.perf_counter()
            if cfg.train.max_steps is not None and self.global_step >= cfg.train.max_steps:
                self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, steps_done)
                return True
        for opt in self.optimizers.values():  # micro-batches left over at the end of an epoch
            opt.zero_grad(set_to_none=True)
        self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, steps_done)
        return False

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses, z errors and image metrics over the validation windows (all ranks)."""
        model = self.model
        self.net.eval()
        totals: dict[str, float] = {}
        count = 0
        it = iter(self.val_loader)
        while (batch := _next_batch(it, self.cfg.train.loader_timeout)) is not None:
            obs, act = self._inputs(batch)
            with self._autocast():
                z_pred, visual_pred, visual_rec, _, comps = model(obs, act)
                z_tgt = model.encode(obs, act)[:, model.num_pred :]
            values = {k: float(v) for k, v in comps.items()}
            values |= {k: float(v) for k, v in z_errors(model, z_pred.float(), z_tgt.float()).items()}
            target = obs["visual"][:, model.num_pred :]
            if visual_pred is not None:
                values |= {k: float(v) for k, v in image_metrics(visual_pred, target, "pred").items()}
                values |= {k: float(v) for k, v in image_metrics(visual_rec, obs["visual"], "rec").items()}
                if self.lpips is not None:
                    values["pred_lpips"] = float(self.lpips(visual_pred, target))
                    values["rec_lpips"] = float(self.lpips(visual_rec, obs["visual"]))
            n = len(batch["episode"])
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v * n
            count += n
        means = {k: v / count for k, v in totals.items()} if count else {}
        means = fdist.mean_across(means, self.info, weight=float(count))
        self.net.train()
        return means

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
        if n == 0:
            return
        batch = collate_windows([self.val_ds[i] for i in np.linspace(0, len(self.val_ds) - 1, n).astype(int)])
        obs, act = self._inputs(batch)
        self.model.eval()
        with torch.no_grad(), self._autocast():
            _, visual_pred, visual_rec, _, _ = self.model(obs, act)
        self.model.train()
        save_prediction_grid(self.cfg.train.run_dir / "images" / f"epoch_{self.epoch:04d}.png", obs["visual"],
                             visual_pred, visual_rec, self.model.num_pred)

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
                self.log.record("val", {"step": self.global_step, "epoch": self.epoch, **val})
                row |= {f"val_{k}": v for k, v in val.items()}
        if self.info.is_main and (stopped or self.epoch % cfg.log.png_every_epochs == 0):
            self._save_images()
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
            names.append("best")
        self._save("latest", *names)
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
            self._save("latest")
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
