"""Training-step time of each decoder schedule, against the reference-equivalent step, in one run.

    python benchmarks/train_step.py [--batch 2] [--steps 3] [--presets full,tiny] [--loop-steps 60]

For each preset, on one generated store, one model with one set of initial weights and one batch
of windows: the time of a full training step (forward, backward, optimizer step) under
`model.decoder.schedule` joint (the reference's step: every frame reconstructed and every
prediction decoded), subset (the default), every_n and off, each measured after restoring the same
initial weights and optimizer states, and each schedule's ratio to joint (steps/s of the schedule /
steps/s of joint). every_n is timed over n consecutive steps (one of which decodes). The goal on CPU
with the full model: the default at least 3x the joint step throughput.

It also runs the real training loop (`Trainer.fit`, DataLoader workers) of the tiny preset with the
default schedule and prints steps/s and its data-wait share.

On CUDA it prints the peak memory of a training step and of validation per schedule at batch 8, 16
and 32, and the largest batch that fits in 16 GB and in 24 GB (found by trying, with the process
limited to that much memory), the users' question of why they are stuck at batch 4-8.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.loader import collate_windows
from fcs_data.synth import synthesize
from fcs_train.config import load_config
from fcs_train.step_inputs import model_inputs
from fcs_train.trainer import Trainer

SCHEDULES = ("joint", "subset", "every_n", "off")


def make_trainer(preset: str, store: Path, run_dir: Path, batch: int, workers: int = 0, **sets) -> Trainer:
    base = {"data.store": store, "train.run_dir": run_dir, "train.batch_size": batch, "data.num_workers": workers,
            "data.split_ratio": 0.9, "train.epochs": 1000, "log.print_every_steps": 1_000_000,
            "train.num_rollouts": 0, **sets}
    cfg = load_config(preset=preset, overrides=[f"{k}={v}" for k, v in base.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(cfg, show_progress=False)


def sync(trainer: Trainer) -> None:
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)


def step(trainer: Trainer, obs: dict, act: torch.Tensor) -> None:
    """One training step exactly as `Trainer._train_epoch` runs it (one micro-batch)."""
    with trainer._autocast():
        out = trainer.net(obs, act, **trainer._decoder_kwargs(act.shape[0], act.shape[1]))
    trainer.scaler.scale(out.loss).backward()
    trainer._optimizer_step()
    trainer.state.global_step += 1


def time_schedules(trainer: Trainer, obs: dict, act: torch.Tensor, steps: int) -> dict[str, float]:
    """Seconds per training step for each schedule, from the same weights and optimizer states."""
    model0 = copy.deepcopy(trainer.model.state_dict())
    opt0 = {k: copy.deepcopy(v.state_dict()) for k, v in trainer.optimizers.items()}
    every_n = trainer.cfg.model.decoder.every_n
    out = {}
    for schedule in SCHEDULES:
        trainer.model.load_state_dict(model0)
        for k, v in trainer.optimizers.items():
            v.load_state_dict(opt0[k])
        trainer.decoder_work.schedule = schedule
        trainer.state.global_step = 0
        step(trainer, obs, act)  # warm-up
        n = steps * (every_n if schedule == "every_n" else 1)
        trainer.state.global_step = 0
        sync(trainer)
        t0 = time.perf_counter()
        for _ in range(n):
            step(trainer, obs, act)
        sync(trainer)
        out[schedule] = (time.perf_counter() - t0) / n
    trainer.decoder_work.schedule = trainer.cfg.model.decoder.schedule
    return out


def peak_memory_gb(trainer: Trainer, batch: int, schedule: str) -> tuple[float, float]:
    """Peak CUDA memory of a training step and of validation at `batch` windows."""
    items = [trainer.train_ds[i % len(trainer.train_ds)] for i in range(batch)]
    obs, act = model_inputs(collate_windows(items), trainer.device, trainer.cfg.model.image_size)
    trainer.decoder_work.schedule = schedule
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step(trainer, obs, act)
    train_peak = torch.cuda.max_memory_allocated() / 1e9
    torch.cuda.reset_peak_memory_stats()
    trainer.model.eval()
    with torch.no_grad(), trainer._autocast():
        trainer.model(obs, act)
    trainer.model.train()
    return train_peak, torch.cuda.max_memory_allocated() / 1e9


def largest_batch(trainer: Trainer, schedule: str, limit_gb: float, upper: int = 512) -> int:
    """The largest batch whose training step fits in `limit_gb` (the process limited to that much)."""
    total = torch.cuda.get_device_properties(trainer.device).total_memory / 1e9
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gb / total), trainer.device)
    lo, hi = 0, upper
    try:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                peak_memory_gb(trainer, mid, schedule)
                lo = mid
            except torch.OutOfMemoryError:
                hi = mid - 1
            finally:
                for opt in trainer.optimizers.values():
                    opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, trainer.device)
    return lo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2, help="windows per step for the schedule comparison")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per schedule (after one warm-up)")
    ap.add_argument("--presets", default="full,tiny")
    ap.add_argument("--loop-steps", type=int, default=60, help="steps of the tiny preset's real loop")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fcs-bench-train-"))
    try:
        src = synthesize(tmp / "src", episodes=8, min_len=60, max_len=80, seed=2)
        store = convert_to_zarr(src, tmp / "s.zarr", workers=2, command=["bench"]).store
        cuda = torch.cuda.is_available()
        print(f"device {'cuda' if cuda else 'cpu'}, torch threads {torch.get_num_threads()}")
        for preset in args.presets.split(","):
            trainer = make_trainer(preset, store, tmp / preset, args.batch)
            cfg = trainer.cfg
            items = [trainer.train_ds[i] for i in range(args.batch)]
            obs, act = model_inputs(collate_windows(items), trainer.device, trainer.cfg.model.image_size)
            seconds = time_schedules(trainer, obs, act, args.steps)
            print(f"\n{preset}: batch {args.batch} windows of {cfg.data.num_hist + cfg.data.num_pred} frames, "
                  f"image {cfg.model.image_size}, subset {cfg.model.decoder.subset_frames} frame(s) per window, "
                  f"every_n {cfg.model.decoder.every_n}")
            print(f"  {'schedule':9} {'s/step':>8} {'steps/s':>8} {'x joint':>8}")
            for schedule, s in seconds.items():
                mark = "  (default)" if schedule == cfg.model.decoder.schedule else ""
                print(f"  {schedule:9} {s:8.3f} {1 / s:8.2f} {seconds['joint'] / s:8.2f}{mark}")
            print(f"  off decodes nothing, so {seconds['joint'] / seconds['off']:.2f}x is the ceiling of any schedule "
                  f"here: encoder, predictor and optimizer alone take {seconds['off'] / seconds['joint']:.0%} of the "
                  "joint step")
            if cuda:
                for schedule in ("joint", cfg.model.decoder.schedule):
                    for b in (8, 16, 32):
                        try:
                            tr, val = peak_memory_gb(trainer, b, schedule)
                            print(f"  {schedule:9} batch {b:2}: peak {tr:.2f} GB training, {val:.2f} GB validation")
                        except torch.OutOfMemoryError:
                            print(f"  {schedule:9} batch {b:2}: out of memory")
                        torch.cuda.empty_cache()
                    for limit in (16, 24):
                        print(f"  {schedule:9} largest batch in {limit} GB: {largest_batch(trainer, schedule, limit)}")
            trainer.close()
        loop = make_trainer("tiny", store, tmp / "loop", 16, args.workers, **{"train.max_steps": args.loop_steps})
        summary = loop.fit()
        hist = summary.train_history[min(10, len(summary.train_history) - 1):]  # after warm-up
        print(f"\ntiny training loop, batch 16, {args.workers} DataLoader workers, default schedule: "
              f"{np.mean([r['steps_per_s'] for r in hist]):.2f} steps/s, "
              f"{np.mean([r['samples_per_s'] for r in hist]):.1f} samples/s, "
              f"data wait {100 * np.mean([r['data_wait'] for r in hist]):.1f}%")
        loop.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
