"""Peak GPU memory of a training run, its validation and a planning batch, predicted on any machine.

    pred = predict(load_config(preset="full"), StepShape(batch_size=8, num_hist=3, frameskip=5))
    pred.train.reserved, pred.validation.composition, pred.planning.allocated   # bytes

A prediction builds the real model on the meta device, gives it fake CPU storage
(`FakeTensorMode`), and runs the steps of `fcs_train.fit.steps` on it with the GPU's kernel choices
(`fcs_train.fit.kernels`) while a `StorageTracker` records every storage. The traces are then
replayed: rounded as the CUDA caching allocator rounds (`allocated`, what `max_memory_allocated`
reads) and through the allocator model (`reserved`, what `max_memory_reserved` reads). Nothing runs
on a GPU and no memory the size of the model is ever allocated.

`Sweep` predicts every batch size and frameskip from four traces: the step is the same program at
any of them, and each allocation's size is bilinear in the two, so the sizes anywhere follow from
those at two batch sizes x two frameskips exactly (checked: the traces must have the same structure).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fcs_train.config import TrainConfig
from fcs_train.errors import FitError, TraceMismatch
from fcs_train.fit.allocator import replay, round_size
from fcs_train.fit.kernels import CUDA, KernelPolicy, cpu_output_bytes, emulate, workspace_bytes
from fcs_train.fit.steps import (
    FCS,
    Setup,
    StepShape,
    build,
    part_labels,
    run_config,
    run_planning,
    run_training,
    run_validation,
    step_harness,
    track_model,
)
from fcs_train.fit.tracker import StorageTracker, Trace, peak
from fcs_train.planning.config import PlanConfig

__all__ = ["Estimate", "FitError", "Prediction", "RunTrace", "Sweep", "TraceMismatch", "estimate", "policy_for", "predict",
           "trace_run"]


def policy_for(setup: Setup, flash: bool = True) -> KernelPolicy:
    """The CUDA kernel policy of `setup` (its attention choice) on a GPU with or without flash attention."""
    return replace(CUDA, attention=setup.attention, flash=flash)


@dataclass(frozen=True)
class RunTrace:
    """The traces of one configuration: `train` holds the training steps then validation (one process,
    the optimizer state alive throughout), from event `validation_start` on; `plan` a planning batch
    (a planning process holds the model only), or None."""

    train: Trace
    validation_start: int
    plan: Trace | None
    seconds: float


_TRACES: OrderedDict[str, RunTrace] = OrderedDict()  # this process's traces, by what they depend on
_KEEP = 64


def _trace_key(run_cfg: TrainConfig, shape: StepShape, setup: Setup, policy: KernelPolicy,
               plan: PlanConfig | None) -> str:
    """Everything a trace depends on (not the store's path, the run directory or the loader)."""
    t = run_cfg.train
    return json.dumps([run_cfg.model.model_dump(mode="json"), run_cfg.optim.model_dump(mode="json"),
                       [t.batch_size, t.grad_accum, t.amp, run_cfg.log.num_reconstruct_samples],
                       asdict(shape), asdict(setup), asdict(policy), plan.model_dump(mode="json") if plan else None],
                      sort_keys=True)


def trace_run(cfg: TrainConfig, shape: StepShape, setup: Setup = FCS, *, policy: KernelPolicy | None = None,
              plan: PlanConfig | None = None, fake: bool = True) -> RunTrace:
    """Trace `cfg` at `shape` under `setup`: two training steps, two validation batches and the image
    grid, and (when `plan` is given) one planning batch. `fake=False` runs real CPU tensors (checks).
    Fake traces are remembered in this process (the same program traces to the same result)."""
    policy = policy or policy_for(setup)
    run_cfg = run_config(cfg, shape, setup, "cuda")
    key = _trace_key(run_cfg, shape, setup, policy, plan) if fake else None
    if key in _TRACES:
        _TRACES.move_to_end(key)
        return _TRACES[key]
    run = _trace_run(run_cfg, shape, setup, policy, plan, fake)
    if key is not None:
        _TRACES[key] = run
        while len(_TRACES) > _KEEP:
            _TRACES.popitem(last=False)
    return run


def _trace_run(run_cfg: TrainConfig, shape: StepShape, setup: Setup, policy: KernelPolicy, plan: PlanConfig | None,
               fake: bool) -> RunTrace:
    t0 = time.perf_counter()
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run_cfg.train.amp)
    # validation's image metrics import torchmetrics on first use, and its import makes tensors: made
    # inside a trace they would be fake module globals and one more allocation in the first trace only
    import torchmetrics.functional.image  # noqa: F401

    def session(run: str) -> tuple[Trace, int]:
        mode = FakeTensorMode() if fake else None
        model = build(run_cfg, shape, mode)
        tracker = StorageTracker(None if policy.cpu_kernels else workspace_bytes,
                                 cpu_output_bytes if policy.cpu_kernels else None)
        with mode or contextlib.nullcontext(), emulate(policy) as gpu, tracker:
            unhook = tracker.label_modules(part_labels(model))
            try:
                track_model(model, tracker)
                if run == "train":
                    trainer = step_harness(run_cfg, model, policy.foreach)
                    last = run_training(trainer, shape, tracker)
                    start = len(tracker._events)
                    run_validation(trainer, shape, tracker, no_grad=setup.validation_no_grad)
                    del last
                else:
                    start = 0
                    run_planning(model, shape, plan, amp, tracker)
            finally:
                unhook()
        return tracker.result(gpu.kernels if gpu is not None else {}), start

    train, start = session("train")
    plan_trace = session("plan")[0] if plan is not None else None
    return RunTrace(train, start, plan_trace, time.perf_counter() - t0)


@dataclass(frozen=True)
class Estimate:
    """Peak device memory of one phase, in bytes.

    allocated: live bytes as the allocator rounds them (`torch.cuda.max_memory_allocated`);
    reserved: the allocator model's segments (`torch.cuda.max_memory_reserved`), before calibration;
    phase: where the allocated peak occurs; composition: bytes by category at that peak;
    fragmentation: reserved - allocated where reserved peaks.
    """

    allocated: int
    reserved: int
    phase: str
    composition: dict[str, int]
    fragmentation: int

    def to_json(self) -> dict:
        return {"allocated": self.allocated, "reserved": self.reserved, "phase": self.phase,
                "composition": self.composition, "fragmentation": self.fragmentation}


@dataclass(frozen=True)
class Prediction:
    """Predicted peaks of one configuration under one setup (planning None when not traced)."""

    setup: str
    shape: StepShape
    train: Estimate
    validation: Estimate
    planning: Estimate | None
    seconds: float
    attention_kernels: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        s = self.shape
        return {"setup": self.setup, "batch_size": s.batch_size, "num_hist": s.num_hist, "frameskip": s.frameskip,
                "grad_accum": s.grad_accum, "train": self.train.to_json(), "validation": self.validation.to_json(),
                "planning": self.planning.to_json() if self.planning else None, "trace_seconds": self.seconds,
                "attention_kernels": self.attention_kernels}


def _estimates(trace: Trace, sizes: np.ndarray, ranges: list[tuple[int, int]], expandable: bool) -> list[Estimate]:
    rounded = round_size(sizes)
    out = []
    for (start, stop), rep in zip(ranges, replay(trace, sizes, ranges, expandable=expandable), strict=True):
        pk = peak(trace, rounded, start, stop)
        out.append(Estimate(pk.bytes, rep.peak_reserved, pk.phase, pk.composition, rep.fragmentation))
    return out


def estimate(run: RunTrace, shape: StepShape, setup: Setup, *, train_sizes: np.ndarray | None = None,
             plan_sizes: np.ndarray | None = None, seconds: float | None = None) -> Prediction:
    """The `Prediction` of a traced run (with other allocation sizes when given: `Sweep`)."""
    tr = run.train
    sizes = tr.sizes if train_sizes is None else train_sizes
    train, val = _estimates(tr, sizes, [(0, run.validation_start), (run.validation_start, len(tr.events))],
                            setup.expandable_segments)
    plan = None
    if run.plan is not None:
        psizes = run.plan.sizes if plan_sizes is None else plan_sizes
        plan = _estimates(run.plan, psizes, [(0, len(run.plan.events))], True)[0]
    return Prediction(setup.name, shape, train, val, plan, run.seconds if seconds is None else seconds,
                      tr.attention_kernels)


def predict(cfg: TrainConfig, shape: StepShape, setup: Setup = FCS, *, plan: PlanConfig | None = None,
            policy: KernelPolicy | None = None) -> Prediction:
    """Predicted peaks of `cfg` at `shape` on a CUDA GPU under `setup` (planning when `plan` is given)."""
    return estimate(trace_run(cfg, shape, setup, policy=policy, plan=plan), shape, setup)


class Sweep:
    """Predictions at any batch size and frameskip from four traces, for one `num_hist`.

    Every allocation's size is bilinear in the batch size `b` and the frameskip `f`: activations scale
    with `b`, the action inputs and the action encoder with `f` (its input is `f * action_dim` wide),
    parameters and optimizer state with neither. Traced at `b1, b2` x `f1, f2`, the sizes anywhere
    follow exactly; the four traces must be one program (else `TraceMismatch`). A batch size below
    `b1` is traced directly (a batch of one can take other paths: fewer copies of size-1 dimensions).
    """

    def __init__(self, cfg: TrainConfig, shape: StepShape, setup: Setup = FCS, *, plan: PlanConfig | None = None,
                 policy: KernelPolicy | None = None, batches: tuple[int, int] = (2, 3),
                 frameskips: tuple[int, int] | None = (2, 3)):
        """`frameskips=None`: the batch size only varies (two traces), at `shape.frameskip`."""
        self.cfg, self.shape, self.setup, self.plan, self.policy = cfg, shape, setup, plan, policy
        self.varies_frameskip = frameskips is not None
        frameskips = frameskips or (shape.frameskip, shape.frameskip + 1)
        self.batches, self.frameskips = batches, frameskips
        (b1, b2), (f1, f2) = batches, frameskips
        self.runs = {(b, f): trace_run(cfg, replace(shape, batch_size=b, frameskip=f), setup, policy=policy,
                                       plan=plan if b == b1 else None)
                     for f in ((f1, f2) if self.varies_frameskip else (f1,)) for b in (b1, b2)}
        first = self.runs[b1, f1]
        for key, run in self.runs.items():
            if run.train.structure() != first.train.structure() or run.validation_start != first.validation_start:
                raise TraceMismatch(f"the step at batch {key[0]}, frameskip {key[1]} ran another program than at "
                                    f"batch {b1}, frameskip {f1} ({len(run.train.events)} and "
                                    f"{len(first.train.events)} allocation events)")
        plans = [self.runs[b1, f].plan for f in ((f1, f2) if self.varies_frameskip else (f1, f1))]
        if plan is not None and plans[0].structure() != plans[1].structure():
            raise TraceMismatch(f"the planning batch at frameskip {f1} and {f2} ran different programs")
        self.seconds = sum(r.seconds for r in self.runs.values())
        self._direct: dict[tuple[int, int], Prediction] = {}

    def _bilinear(self, s00: np.ndarray, s10: np.ndarray, s01: np.ndarray, s11: np.ndarray, b: int,
                  f: int) -> np.ndarray:
        (b1, b2), (f1, f2) = self.batches, self.frameskips
        x, y = (b - b1) / (b2 - b1), (f - f1) / (f2 - f1)
        s = s00 + x * (s10 - s00) + y * (s01 - s00) + x * y * (s11 - s10 - s01 + s00)
        return np.maximum(np.rint(s), 0).astype(np.int64)

    def train_sizes(self, batch_size: int, frameskip: int) -> np.ndarray:
        (b1, b2), (f1, f2) = self.batches, self.frameskips
        r = self.runs
        if not self.varies_frameskip:
            s1, s2 = r[b1, f1].train.sizes, r[b2, f1].train.sizes
            return self._bilinear(s1, s2, s1, s2, batch_size, f1)
        return self._bilinear(r[b1, f1].train.sizes, r[b2, f1].train.sizes, r[b1, f2].train.sizes,
                              r[b2, f2].train.sizes, batch_size, frameskip)

    def plan_sizes(self, frameskip: int) -> np.ndarray | None:
        (b1, _), (f1, f2) = self.batches, self.frameskips
        if self.plan is None:
            return None
        if not self.varies_frameskip:
            return self.runs[b1, f1].plan.sizes
        p1, p2 = self.runs[b1, f1].plan.sizes, self.runs[b1, f2].plan.sizes
        return self._bilinear(p1, p1, p2, p2, b1, frameskip)

    def predict(self, batch_size: int, frameskip: int | None = None, grad_accum: int | None = None) -> Prediction:
        frameskip = self.shape.frameskip if frameskip is None else frameskip
        if not self.varies_frameskip and frameskip != self.shape.frameskip:
            raise ValueError(f"this sweep is at frameskip {self.shape.frameskip} only, not {frameskip}")
        shape = replace(self.shape, batch_size=batch_size, frameskip=frameskip,
                        grad_accum=self.shape.grad_accum if grad_accum is None else grad_accum)
        if batch_size < self.batches[0]:
            key = (batch_size, frameskip)
            if key not in self._direct:
                self._direct[key] = estimate(trace_run(self.cfg, shape, self.setup, policy=self.policy,
                                                       plan=self.plan), shape, self.setup)
            return self._direct[key]
        base = self.runs[self.batches[0], self.frameskips[0]]
        return estimate(base, shape, self.setup, train_sizes=self.train_sizes(batch_size, frameskip),
                        plan_sizes=self.plan_sizes(frameskip), seconds=self.seconds)
