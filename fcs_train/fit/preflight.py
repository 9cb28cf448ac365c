"""`fcs train`'s memory check: predict the run's own peak before the first step, stop if it cannot fit.

An OOM after minutes (or after the first validation, which peaks above training) costs a run; the
prediction costs seconds on the CPU. `preflight` runs where the trainer has its data but has put
nothing on the GPU yet:

- on CUDA it sets `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` unless the user set it
  (`configure_allocator`; the trainer calls it first, before its process group initialises CUDA);
- it predicts training and validation at the run's batch size, num_hist, frameskip, image and
  frame size, and compares them with the device's memory (or `train.memory_limit`, which also makes
  the check run on a CPU);
- if the run does not fit, `train.memory_check: stop` (default) raises `DoesNotFit` with one line:
  the predicted peak, the device's memory and the largest batch that fits; `warn` says the same and
  goes on; `off` skips the check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fcs_train.config import TrainConfig
from fcs_train.errors import DoesNotFit
from fcs_train.fit.calibration import DEFAULT_OVERHEAD, configure_allocator, find_calibration
from fcs_train.fit.prediction import Prediction, Sweep, predict
from fcs_train.fit.report import Budget, gib, largest_batch, parse_bytes
from fcs_train.fit.steps import FCS, StepShape


@dataclass(frozen=True)
class MemoryCheck:
    """The run's prediction against its device: fits, and else the largest batch that does (0: none)."""

    prediction: Prediction
    budget: Budget
    fits: bool
    largest_batch: int | None = None

    def line(self) -> str:
        p, b = self.prediction, self.budget
        worst = max((p.train, "training"), (p.validation, "validation"), key=lambda x: b.device_peak(x[0]))
        head = (f"predicted peak {gib(b.device_peak(worst[0]))} GiB ({worst[1]}; training "
                f"{gib(b.device_peak(p.train))} GiB, validation {gib(b.device_peak(p.validation))} GiB, CUDA context "
                f"included) at batch {p.shape.batch_size}, num_hist {p.shape.num_hist}, frameskip {p.shape.frameskip}; "
                f"{b.name} has {gib(b.total)} GiB ({b.margin:.0%} kept free"
                f"{', calibrated' if b.calibration else ', uncalibrated: fcs fit --calibrate'})")
        if self.fits:
            return f"memory check: {head}: fits"
        if not self.largest_batch:
            return f"{head}: does not fit even at batch 1; lower data.num_hist or model.image_size"
        accum = -(-p.shape.batch_size * p.shape.grad_accum // self.largest_batch)
        return (f"{head}: does not fit; the largest batch that fits is {self.largest_batch} (--set train.batch_size="
                f"{self.largest_batch} --set train.grad_accum={accum} keeps the effective batch)")


def device_budget(cfg: TrainConfig, device: torch.device) -> Budget | None:
    """The memory the run may use: `train.memory_limit` if set, else the CUDA device's (None on a CPU)."""
    t = cfg.train
    if t.memory_limit is not None:
        try:
            total = parse_bytes(t.memory_limit)
        except ValueError as e:
            raise DoesNotFit(f"train.memory_limit: {e}") from None
        return Budget(f"a {t.memory_limit} limit", total, overhead=0 if device.type != "cuda" else DEFAULT_OVERHEAD)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    cal = find_calibration(props.name)
    return Budget(props.name, int(props.total_memory), overhead=cal.overhead_bytes if cal else DEFAULT_OVERHEAD,
                  calibration=cal)


def check_memory(cfg: TrainConfig, budget: Budget, shape: StepShape) -> MemoryCheck:
    """Predict `cfg` at `shape` and compare with `budget`; when it does not fit, find the largest batch."""
    pred = predict(cfg, shape, FCS)
    if budget.fits_run(pred):
        return MemoryCheck(pred, budget, True)
    if shape.batch_size == 1:
        return MemoryCheck(pred, budget, False, 0)
    sweep = Sweep(cfg, shape, FCS, frameskips=None)
    best = largest_batch(lambda b: budget.fits_run(sweep.predict(b)), upper=shape.batch_size - 1,
                         start=min(sweep.batches[0], shape.batch_size - 1))
    return MemoryCheck(pred, budget, False, best)


def preflight(cfg: TrainConfig, device: torch.device, dataset: object, log: Callable[[str], None]) -> MemoryCheck | None:
    """The trainer's check before its first step (see the module docstring). `dataset`: the training
    `WindowDataset` (its frames' size and the layout's dims)."""
    if device.type == "cuda":
        configure_allocator()
    mode = cfg.train.memory_check
    if mode == "off":
        return None
    budget = device_budget(cfg, device)
    if budget is None:
        return None
    layout = dataset.store.layout
    h, w = dataset[0]["visual"].shape[-2:]
    d = cfg.data
    shape = StepShape(cfg.train.batch_size, d.num_hist, d.frameskip, num_pred=d.num_pred, frame_shape=(int(h), int(w)),
                      proprio_dim=layout.proprio_dim, action_dim=layout.action_dim, grad_accum=cfg.train.grad_accum)
    check = check_memory(cfg, budget, shape)
    if check.fits:
        log(check.line())
    elif mode == "stop":
        raise DoesNotFit(check.line() + "; --set train.memory_check=warn tries anyway")
    else:
        log(f"[bold yellow]warning:[/] {check.line()}; trying anyway (train.memory_check=warn)")
    return check
