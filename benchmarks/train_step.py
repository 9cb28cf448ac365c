"""Training-step throughput of `fcs train` for the tiny preset and the full model.

    python benchmarks/train_step.py [--steps-tiny 60] [--steps-full 4] [--workers 2]

For each preset, on one generated store: steps/s and samples/s of the real training loop
(`Trainer.fit`, DataLoader with workers, no validation), its data-wait share (time blocked on the
loader / step time), and the same model's step on one batch already in memory (the compute-only
baseline measured in the same run) with the ratio loop / baseline. The full model runs at batch 1.
On CUDA it also prints the peak memory of a training step and of validation.
"""

from __future__ import annotations

import argparse
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
from fcs_train.trainer import Trainer


def compute_only(trainer: Trainer, steps: int) -> float:
    """Steps/s of forward + backward + optimiser step on one batch that is already on the device."""
    cfg = trainer.cfg
    batch = collate_windows([trainer.train_ds[i] for i in range(cfg.train.batch_size)])
    obs, act = trainer._inputs(batch)
    trainer.net.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with trainer._autocast():
            loss = trainer.net(obs, act)[3]
        trainer.scaler.scale(loss).backward()
        trainer._optimizer_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1 / float(np.median(times[1:]))


def bench(name: str, store: Path, run_dir: Path, steps: int, batch: int, workers: int) -> None:
    sets = [f"data.store={store}", f"train.run_dir={run_dir}", f"train.max_steps={steps}",
            f"train.batch_size={batch}", f"data.num_workers={workers}", "data.split_ratio=1.0",
            "train.epochs=1000", "log.print_every_steps=1000000"]
    cfg = load_config(preset=name, overrides=sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg, show_progress=False)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary = trainer.fit()
    hist = summary.train_history[min(2, len(summary.train_history) - 1):]  # skip warm-up steps
    steps_s = float(np.mean([r["steps_per_s"] for r in hist]))
    samples_s = float(np.mean([r["samples_per_s"] for r in hist]))
    wait = float(np.mean([r["data_wait"] for r in hist]))
    base = compute_only(trainer, min(steps, 5))
    print(f"{name:5} batch {batch:2}: {steps_s:7.2f} steps/s  {samples_s:8.1f} samples/s  data wait {100 * wait:4.1f}%"
          f"  | compute-only {base:7.2f} steps/s  loop/compute {steps_s / base:5.2f}")
    if trainer.device.type == "cuda":
        train_peak = torch.cuda.max_memory_allocated() / 1e9
        torch.cuda.reset_peak_memory_stats()
        trainer.validate()
        val_peak = torch.cuda.max_memory_allocated() / 1e9
        print(f"      peak CUDA memory: training step {train_peak:.2f} GB, validation {val_peak:.2f} GB")
    trainer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps-tiny", type=int, default=60)
    ap.add_argument("--steps-full", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fcs-bench-train-"))
    try:
        src = synthesize(tmp / "src", episodes=8, min_len=60, max_len=80, seed=2)
        store = convert_to_zarr(src, tmp / "s.zarr", workers=2, command=["bench"]).store
        print(f"device {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}, "
              f"DataLoader workers {args.workers}")
        bench("tiny", store, tmp / "tiny", args.steps_tiny, 16, args.workers)
        bench("full", store, tmp / "full", args.steps_full, 1, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
