"""Training losses that stay on the device until they are read, once every `log.every_steps` steps.

Reading a loss waits for the device; the step itself never does. Each optimizer step's loss
components are kept as device tensors, read together in one sync, checked (a non-finite loss stops
the run naming the step and its windows) and recorded one line per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from fcs_train import dist as fdist
from fcs_train.errors import NonFiniteLoss
from fcs_train.runlog import RunLog
from fcs_train.step_inputs import listed


@dataclass
class _Pending:
    """One optimizer step whose losses are still on the device."""

    step: int
    epoch: int
    components: dict[str, torch.Tensor]
    windows: list[tuple[int, int]]


class PendingLosses:
    """The steps recorded since the last read; `flush` reads, checks and records them."""

    def __init__(self, log: RunLog, info: fdist.DistInfo, samples_per_step: int, print_every_steps: int):
        self.log, self.info = log, info
        self.samples_per_step, self.print_every_steps = samples_per_step, print_every_steps
        self.steps: list[_Pending] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, epoch: int, components: dict[str, torch.Tensor], windows: list[tuple[int, int]]) -> None:
        """Step `step`'s loss components (device tensors) and its `(episode, start)` windows."""
        self.steps.append(_Pending(step, epoch, components, windows))

    def flush(self, step_in_epoch: int, t_window: float, wait: float) -> None:
        """Read every pending step's losses (one sync over all ranks), check and record them; `t_window` is
        when the first of them started, `wait` the data wait since."""
        pending, self.steps = self.steps, []
        if not pending:
            return
        keys = [(i, k) for i, p in enumerate(pending) for k in sorted(p.components)]  # every_n: keys vary by step
        values = torch.stack([pending[i].components[k].float() for i, k in keys])
        values = fdist.mean_tensor(values, self.info).cpu().tolist()
        rows: list[dict[str, float]] = [{} for _ in pending]
        for (i, k), v in zip(keys, values, strict=True):
            rows[i][k] = v
        elapsed = time.perf_counter() - t_window
        stats = {"steps_per_s": len(pending) / elapsed, "samples_per_s": self.samples_per_step * len(pending) / elapsed,
                 "data_wait": wait / elapsed}
        for p, means in zip(pending, rows, strict=True):
            if not all(math.isfinite(v) for v in means.values()):
                raise NonFiniteLoss(
                    f"loss is {means['loss']} at step {p.step} (epoch {p.epoch}); the inputs were finite, so the model "
                    f"diverged: lower the learning rates (optim.*_lr) or set optim.grad_clip. The step's (episode, "
                    f"start) windows: {listed(p.windows)}")
            self.log.record("train", {"step": p.step, "epoch": p.epoch, **means, **stats})
        last = rows[-1]
        self.log.update(step_in_epoch, {**last, **stats})
        if not self.log.show_progress and any(p.step % self.print_every_steps == 0 for p in pending):
            self.log.info(f"step {pending[-1].step}: loss {last['loss']:.4f}, {stats['steps_per_s']:.2f} steps/s, "
                          f"data wait {100 * stats['data_wait']:.0f}%")
