"""`fcs train`: DINO-WM training from an fcs store, on CPU, one GPU, or many through torchrun.

One `Trainer` runs the loop the reference runs, with what users lacked: per-part optimisers
(encoder Adam only if it trains, predictor AdamW, decoder Adam, action + proprio encoders AdamW),
gradient accumulation (no DDP sync until the last micro-batch), AMP, a decoder schedule that keeps
the decoder off the critical path (`model.decoder.schedule`), validation under `torch.no_grad()`
and `model.eval()` with the copy-last-frame baseline beside the losses (`evaluation`), exact resume
and atomic checkpoints (`run_state`), a clear stop on NaN/Inf losses and inputs and on dead or stuck
DataLoader workers (`batches`), and a checkpoint before Ctrl-C exits.

The training step never waits for the device: loss components are accumulated as device tensors
and read once every `log.every_steps` steps (and at every checkpoint).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from fcs_data.atomic import remove_stale_temporaries
from fcs_data.errors import StoreError
from fcs_data.loader import SeededSampler, make_loader
from fcs_data.windows import WindowDataset
from fcs_train import dist as fdist
from fcs_train.batches import next_batch
from fcs_train.checkpoint import RunState
from fcs_train.config import TrainConfig
from fcs_train.errors import LoaderFailure, NonFiniteLoss, TrainError
from fcs_train.evaluation import Evaluator
from fcs_train.fit.preflight import configure_allocator, preflight
from fcs_train.metrics import LPIPS
from fcs_train.models import ModelSpec, VWorldModel
from fcs_train.planning.during_training import PlanSelection, plan_eval_due, plan_eval_during_training
from fcs_train.profiling import PROFILE_STEPS, sync, time_phases
from fcs_train.rng import rng_state, set_rng_state
from fcs_train.run_dir import RunDir
from fcs_train.run_state import RunCheckpoints
from fcs_train.runlog import RunLog
from fcs_train.runs import point_latest, resolve_run_dir, write_status
from fcs_train.signals import Preempted, stop_signals
from fcs_train.stall import StallWatchdog
from fcs_train.step_inputs import DecoderWork, check_finite_inputs, window_pairs
from fcs_train.step_losses import PendingLosses
from fcs_train.training_step import TrainingStep

__all__ = ["NonFiniteLoss", "RunSummary", "TrainError", "Trainer"]


@dataclass
class RunSummary:
    run_dir: Path
    epoch: int
    global_step: int
    stopped_by: str
    best_val_loss: float
    train_history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)


class Trainer(TrainingStep):
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True):
        """`resume` continues the run in `train.run_dir`; a directory that holds a run is refused without it
        or `overwrite`; no `train.run_dir` gives a new `runs/<run_name>/<time>`."""
        self.cfg = cfg
        if cfg.data.store is None:
            raise TrainError("data.store is not set: give an fcs store (fcs convert ... --to zarr)")
        if cfg.train.device != "cpu":
            configure_allocator()  # expandable segments unless the user set PYTORCH_CUDA_ALLOC_CONF; before CUDA starts
        self.info = fdist.setup(cfg.train.device)
        self.device = self.info.device
        auto = cfg.train.run_dir is None
        if self.info.is_main:
            cfg.train.run_dir = resolve_run_dir(cfg.train.run_dir, cfg.train.run_name, resume=resume,
                                                overwrite=overwrite)
        cfg.train.run_dir = Path(fdist.broadcast_from_main(self.info, str(cfg.train.run_dir)))
        self.log = RunLog(cfg, enabled=self.info.is_main, show_progress=show_progress, resume=resume)

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
        self.spec = ModelSpec(model=cfg.model, window=self.train_ds.spec, proprio_dim=self.store.layout.proprio_dim)
        self.run = RunDir.of_config(cfg)
        self.checkpoints = RunCheckpoints(cfg, self.info, self.store, self.spec, self.train_ds.normalizer, self.log)
        preflight(cfg, self.device, self.train_ds, self.log.info)  # predicted GPU memory (fcs fit), before any is used

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = self.spec.build()
        for w in caught:
            self.log.info(f"[bold yellow]warning:[/] {w.message}")
        self.schedule = cfg.model.decoder.schedule if model.decoder is not None else "off"
        self.state = RunState(decoder_trained=model.decoder is not None and self.schedule != "off")
        if model.decoder is not None and self.schedule == "off":
            model.decoder.requires_grad_(False)  # trained afterwards by `fcs train-decoder`
        init = (self.checkpoints.init_weights(model, cfg.train.init_from, self.state)
                if cfg.train.init_from is not None else None)
        self.model: VWorldModel = model.to(self.device)
        groups = self.model.optimizer_groups(cfg.optim, decoder=self.schedule != "off")
        self.optimizers = {name: group.build(self.model) for name, group in groups.items()}
        hyper = {name: group.hyper for name, group in groups.items()}
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        lpips = LPIPS(cfg.log.lpips_vgg_weights).to(self.device) if cfg.log.lpips_vgg_weights else None
        # frames reconstructed under the `subset` schedule: a generator apart from dropout and shuffling
        generator = torch.Generator().manual_seed(cfg.train.seed * 7919 + 17 + self.info.rank)
        self.decoder_work = DecoderWork(self.schedule, cfg.model.decoder, generator)

        if resume:
            set_rng_state(self.checkpoints.resume(self.model, self.optimizers, self.scaler, self.state, hyper),
                          generator)
        else:
            torch.manual_seed(cfg.train.seed + 1000 * self.info.rank)  # dropout differs across ranks
            if init is not None and cfg.train.init_optimizers:
                self.checkpoints.continue_optimizers(init, cfg.train.init_from, self.optimizers,
                                                     hyper, self.state)
        self._boundary_rng = self._rng_snapshot()  # what an interrupted step's checkpoint restores
        self.net: torch.nn.Module = self.model
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        if self.info.distributed:
            self.net = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.schedule == "every_n")

        world, rank = self.info.world_size, self.info.rank
        self.sampler = SeededSampler(len(self.train_ds), cfg.train.seed, rank=rank, world_size=world, drop_last=True)
        loader_args = dict(batch_size=cfg.train.batch_size, num_workers=d.num_workers, seed=cfg.train.seed,
                           multiprocessing_context=d.multiprocessing_context, timeout=cfg.train.loader_timeout)
        self.train_loader = make_loader(self.train_ds, sampler=self.sampler, drop_last=True, **loader_args)
        val_loader = make_loader(self.val_ds, sampler=SeededSampler(len(self.val_ds), shuffle=False, rank=rank,
                                                                    world_size=world), drop_last=False, **loader_args)
        self.stall = StallWatchdog(cfg.train.stall_timeout, self.run,
                                   lambda: {"train": self.train_loader.watchdog, "validation": val_loader.watchdog})
        self.evaluator = Evaluator(cfg, self.model, self.net, self.val_ds, val_loader, self.info, self._autocast,
                                   lpips, self.stall)
        self._optimizer_seconds: list[float] = []
        self._last_inputs: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None
        self._profiled = False
        if self.info.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            self.run.config.write_text(cfg.to_yaml())
            for tmp in remove_stale_temporaries(self.run.root, self.run.checkpoints):
                self.log.info(f"removed {tmp}: a temporary left by a save that was killed")
            if auto:
                point_latest(self.run.root)
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

    # -- checkpoints and RNG --------------------------------------------------------------------
    def _rng_snapshot(self) -> dict[str, Any]:
        return rng_state(self.decoder_work.generator)

    def _save(self, *names: str, interrupted: bool = False) -> None:
        """Checkpoints `names`. After an interrupted step the RNG state is the one at the last step
        boundary, so a resume redoes that step with the same dropout masks and decoder frames."""
        rng = self._boundary_rng if interrupted else self._rng_snapshot()
        self.checkpoints.save(names, self.model, self.optimizers, self.scaler, self.state, rng)

    # -- steps ----------------------------------------------------------------------------------
    def _timed_optimizer_step(self) -> None:
        profiling = len(self._optimizer_seconds) < PROFILE_STEPS + 2
        if profiling:
            sync(self.device)
        t0 = time.perf_counter()
        self._optimizer_step()
        if profiling:
            sync(self.device)
            self._optimizer_seconds.append(time.perf_counter() - t0)

    def _train_epoch(self) -> bool:
        """One epoch (or what is left of it after a resume); True when max_steps is reached."""
        cfg, accum, state = self.cfg, self.cfg.train.grad_accum, self.state
        self.net.train()
        self.sampler.set_epoch(state.epoch)
        self.sampler.resume_at(state.step_in_epoch * accum * cfg.train.batch_size)
        steps_in_epoch = self.sampler.epoch_length // cfg.train.batch_size // accum
        self.log.start_epoch(state.epoch, steps_in_epoch, state.step_in_epoch)
        it = iter(self.train_loader)
        pending = PendingLosses(self.log, self.info, cfg.train.batch_size * accum * self.info.world_size,
                                cfg.log.print_every_steps)
        sums: dict[str, torch.Tensor] = {}
        windows: list[tuple[int, int]] = []
        micro, wait, wait_epoch = 0, 0.0, 0.0
        t_epoch = t_window = time.perf_counter()
        self._epoch_time = (0.0, 0.0, 0)
        try:
            while True:
                t0 = time.perf_counter()
                batch = next_batch(it, self.train_loader, self.stall)
                wait += time.perf_counter() - t0
                if batch is None:
                    break
                check_finite_inputs(batch, self.spec.window, step=state.global_step + 1, epoch=state.epoch,
                                    store=str(self.store.path))
                obs, act = self._inputs(batch)
                sync_grads = (micro + 1) % accum == 0
                ctx = self.net.no_sync() if self.info.distributed and not sync_grads else contextlib.nullcontext()
                with ctx:
                    with self._autocast():
                        out = self.net(obs, act, **self._decoder_kwargs(act.shape[0], act.shape[1]))
                    self.scaler.scale(out.loss / accum).backward()
                for k, v in out.components.items():
                    sums[k] = sums[k] + v.detach() / accum if k in sums else v.detach() / accum
                windows += window_pairs(batch)
                micro += 1
                if not sync_grads:
                    continue
                self._timed_optimizer_step()
                self.stall.beat()
                state.global_step += 1
                state.step_in_epoch += 1
                self._boundary_rng = self._rng_snapshot()
                self._last_inputs = (obs, act)
                pending.add(state.global_step, state.epoch, sums, windows)
                self.log.advance(state.step_in_epoch)
                sums, windows = {}, []
                done = cfg.train.max_steps is not None and state.global_step >= cfg.train.max_steps
                if len(pending) >= cfg.log.every_steps or done:
                    wait_epoch += wait
                    pending.flush(state.step_in_epoch, t_window, wait)
                    wait, t_window = 0.0, time.perf_counter()
                if done:
                    self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, state.step_in_epoch)
                    return True
            wait_epoch += wait
            pending.flush(state.step_in_epoch, t_window, wait)
        finally:
            if pending:  # Ctrl-C or an error: what was trained is still recorded before the checkpoint
                with contextlib.suppress(Exception):
                    pending.flush(state.step_in_epoch, t_window, wait)
        for opt in self.optimizers.values():  # micro-batches left over at the end of an epoch
            opt.zero_grad(set_to_none=True)
        self._epoch_time = (time.perf_counter() - t_epoch, wait_epoch, state.step_in_epoch)
        return False

    # -- evaluation -----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation metrics now (`Evaluator.validate`); image metrics once the decoder is trained."""
        return self.evaluator.validate(self.state.epoch, self.state.global_step, self._decoding())

    def _profile(self) -> dict[str, float] | None:
        """Where a training step's time goes: encoder, predictor, decoder (timed apart on the last batch,
        RNG and gradients restored afterwards), optimizer and data wait (measured in the epoch). Seconds
        per step."""
        if self._last_inputs is None or not self._optimizer_seconds:
            return None
        obs, act = self._last_inputs
        rng = self._rng_snapshot()
        every_n = self.schedule == "every_n"

        def work() -> dict[str, Any]:
            kwargs = self._decoder_kwargs(act.shape[0], act.shape[1])
            return {**kwargs, "reconstruct": True} if every_n else kwargs  # timed in full, counted 1 / n

        out = time_phases(self.model, obs, act, autocast=self._autocast, decoder_work=work,
                          decoder_share=1.0 / self.cfg.model.decoder.every_n if every_n else 1.0)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        set_rng_state(rng, self.decoder_work.generator)
        _seconds, wait, steps = self._epoch_time
        out["optimizer"] = float(np.median(self._optimizer_seconds[1:] or self._optimizer_seconds))
        out["data wait"] = wait / max(steps, 1)
        return out

    # -- the run --------------------------------------------------------------------------------
    def _end_epoch(self, stopped: bool) -> None:
        cfg, state = self.cfg, self.state
        seconds, wait, _steps = self._epoch_time
        row: dict[str, Any] = {"epoch": state.epoch, "step": state.global_step, "seconds": seconds,
                               "data_wait": wait / seconds if seconds else 0.0}
        train_recs = [r for r in self.log.train_history if r.get("epoch") == state.epoch]
        if train_recs:
            row["loss"] = float(np.mean([r["loss"] for r in train_recs]))
        if stopped or state.epoch % cfg.train.val_every_epochs == 0:
            val = self.validate()
            if self.info.is_main and state.epoch % cfg.train.rollout_every_epochs == 0:
                val |= self.evaluator.rollout_errors(state.epoch)
            if val:
                state.val_metrics = val
                self.log.record("val", {"step": state.global_step, "epoch": state.epoch, **val})
                row |= {f"val_{k}": v for k, v in val.items()}
        if plan_eval_due(cfg.train, state.epoch, stopped):  # does planning with the model reach goals?
            plan = plan_eval_during_training(self.model, self.store, self.train_ds.normalizer, cfg, self.device,
                                             self.info)
            self.log.record("plan", {"step": state.global_step, "epoch": state.epoch, **plan})
            row |= plan
        if self.info.is_main and (stopped or state.epoch % cfg.log.png_every_epochs == 0) and self._decoding():
            grid = self.evaluator.save_images(
                self.run.epoch_image(state.epoch),
                title=f"epoch {state.epoch}, step {state.global_step}: validation windows, frames "
                      f"{cfg.data.frameskip} steps apart")
            if grid is not None:
                self.log.image("val/predictions", grid, state.global_step, caption=f"epoch {state.epoch}")
        if self.info.is_main and not self._profiled:
            profile = self._profile()
            if profile:
                self._profiled = True
                self.log.profile(profile, state.global_step)
        if torch.cuda.is_available() and self.device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        self.log.end_epoch()
        self.log.epoch_summary(row)
        names = []
        if not stopped:
            if state.epoch % cfg.train.checkpoint_every_epochs == 0:
                names.append(self.run.epoch_name(state.epoch))
            state.epoch += 1
            state.step_in_epoch = 0
        val_loss = row.get("val_loss")
        if val_loss is not None and val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            if cfg.train.select_by == "val_loss":
                names.append("best")
        if cfg.train.select_by != "val_loss" and PlanSelection(cfg.train.select_by, state).improved(row):
            names.append("best")
        self._save("latest", *names)
        self._boundary_rng = self._rng_snapshot()
        fdist.barrier(self.info)

    def fit(self) -> RunSummary:
        state = self.state
        self._status("running")
        try:
            with stop_signals(), self.stall.watching():
                stopped_by = self._epochs()
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM / SIGUSR1 (`Preempted`)
            self.log.end_epoch()
            self._save_resumable()
            why = "interrupted" if not isinstance(e, Preempted) else f"stopped by {signal.Signals(e.signum).name}"
            self._status("interrupted", why)
            self.log.info(f"[yellow]{why}[/] at step {state.global_step}: wrote "
                          f"{self.run.latest}; continue with --resume")
            raise
        except (LoaderFailure, StoreError) as e:  # the data side failed (a worker, a shard); the model is sound
            self.log.end_epoch()
            self._save_resumable()
            self.stall.stop_culprit()
            kept = (f"wrote {self.run.latest} at step {state.global_step}: fix the cause and "
                    "continue with fcs train --resume (same config)")
            self._status("failed", str(e))
            if isinstance(e, LoaderFailure):
                raise type(e)(f"{e}; {kept}") from e
            self.log.info(f"[yellow]stopped[/]: {kept}")
            raise
        except BaseException as e:
            self._status("failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            self.log.close()
        self._status("finished", stopped_by)
        self.log.final_table()
        if self.info.is_main:
            best = f", best validation loss {state.best_val_loss:.4f}" if math.isfinite(state.best_val_loss) else ""
            self.log.info(f"done ({stopped_by}): {state.global_step} steps{best}; checkpoints in {self.run.checkpoints}")
        return RunSummary(self.run.root, state.epoch, state.global_step, stopped_by, state.best_val_loss,
                          self.log.train_history, self.log.val_history)

    def _status(self, state: str, message: str = "") -> None:
        if self.info.is_main:
            with contextlib.suppress(OSError):  # a full disk is reported by what failed, not by this
                write_status(self.cfg.train.run_dir, state, self.state.global_step, message, data={
                    "train_episodes": len(self.train_ds.episodes), "val_episodes": len(self.val_ds.episodes),
                    "train_windows": len(self.train_ds), "val_windows": len(self.val_ds)})

    def _save_resumable(self) -> None:
        """`latest.pt` as of the last completed step: the step in flight is redone on resume."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._save("latest", interrupted=True)

    def _epochs(self) -> str:
        """Train epoch after epoch; what stopped the run (`epochs`, `max_steps`)."""
        cfg, state = self.cfg, self.state
        while state.epoch <= cfg.train.epochs:
            if cfg.train.max_steps is not None and state.global_step >= cfg.train.max_steps:
                return "max_steps"
            stopped = self._train_epoch()
            self._end_epoch(stopped)
            if stopped:
                return "max_steps"
        return "epochs"

    def close(self) -> None:
        fdist.teardown()
