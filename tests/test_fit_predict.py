"""Memory predictions (fcs_train.fit.prediction) against the same steps run for real on this CPU.

The real runs are measured two ways, neither of which uses the predictor's tracker:
- live tensor storage, by a small weakref meter written here (`LiveStorage`), the quantity the
  prediction counts (what the CUDA caching allocator would have to hold, before rounding);
- the CPU allocator itself (torch.profiler's memory events), which also holds CPU kernels' scratch.
"""

from __future__ import annotations

import dataclasses
import itertools
import weakref
from functools import partial

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fcs_train.config import load_config
from fcs_train.fit.allocator import LARGE_BUFFER, round_size
from fcs_train.fit.kernels import CUDA, NATIVE, KernelPolicy, emulate
from fcs_train.fit.prediction import Sweep, predict, trace_run
from fcs_train.fit.steps import (
    FCS,
    REFERENCE,
    NullRecorder,
    StepShape,
    build,
    run_config,
    run_training,
    run_validation,
    step_harness,
)
from fcs_train.fit.tracker import peak
from fcs_train.planning.config import PlanConfig

# CUDA's choices that have CPU kernels: CUDA autocast lists, the math attention path, bool dropout
# masks, foreach optimizers (the fused attention kernels exist on a GPU only)
CUDA_ON_CPU = KernelPolicy(autocast_ops="cuda", attention="math", bool_dropout_masks=True, foreach=True, cpu_kernels=True)


class LiveStorage(TorchDispatchMode):
    """Bytes of the tensor storages alive, op by op, and their peak (real tensors)."""

    def __init__(self, preexisting: list[torch.Tensor]):
        super().__init__()
        self.live: dict[int, tuple[int, weakref.ref]] = {}
        self.now = self.peak = 0
        for t in preexisting:
            self.add(t)

    def add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if id(st) not in self.live:
            self.live[id(st)] = (st.nbytes(), weakref.ref(st, partial(self._gone, id(st))))
            self.now += st.nbytes()
            self.peak = max(self.peak, self.now)

    def _gone(self, key: int, _ref: weakref.ref) -> None:
        self.now -= self.live.pop(key)[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out


def _real_peaks(cfg, shape: StepShape, setup, policy: KernelPolicy) -> tuple[int, int]:
    """(training, validation) peaks of live storage when the steps run for real."""
    torch.manual_seed(0)
    run_cfg = run_config(cfg, shape, setup, "cuda")
    model = build(run_cfg, shape)
    with emulate(policy):
        meter = LiveStorage([*model.parameters(), *model.buffers()])
        with meter:
            trainer = step_harness(run_cfg, model, policy.foreach)
            last = run_training(trainer, shape, NullRecorder())
            train = meter.peak
            meter.peak = meter.now
            run_validation(trainer, shape, NullRecorder(), no_grad=setup.validation_no_grad)
        del last
    return train, meter.peak


def _predicted_peaks(cfg, shape: StepShape, setup, policy: KernelPolicy) -> tuple[int, int]:
    run = trace_run(cfg, shape, setup, policy=policy)
    tr = run.train
    return (peak(tr, tr.sizes, 0, run.validation_start).bytes,
            peak(tr, tr.sizes, run.validation_start, len(tr.events)).bytes)


@pytest.fixture(scope="module")
def tiny():
    return load_config(preset="tiny", overrides=["model.predictor.dropout=0.1"])


@pytest.mark.parametrize(("setup", "policy"), [
    pytest.param(FCS, NATIVE, id="cpu-kernels"),
    pytest.param(FCS, CUDA_ON_CPU, id="cuda-choices-bf16"),
    pytest.param(REFERENCE, CUDA_ON_CPU, id="reference-fp32-math-joint-grad-validation"),
])
def test_prediction_equals_the_live_storage_peak_of_the_same_step_run_for_real(tiny, setup, policy) -> None:
    shape = StepShape(3, 2, 2, frame_shape=(72, 80))  # frames resized to the model's 64 px, as from a store
    predicted = _predicted_peaks(tiny, shape, setup, policy)
    real = _real_peaks(tiny, shape, setup, policy)
    for p, r in zip(predicted, real, strict=True):
        assert abs(p / r - 1) < 0.02, (predicted, real)


def test_live_storage_is_what_the_cpu_allocator_holds_besides_kernel_scratch(tiny) -> None:
    shape = StepShape(3, 2, 2)
    run_cfg = run_config(tiny, shape, FCS, "cuda")
    model = build(run_cfg, shape)
    base = sum(t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()])
    trainer = step_harness(run_cfg, model, None)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_training(trainer, shape, NullRecorder())
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    now = top = 0
    for e in events:
        now += e.nbytes()
        top = max(top, now)
    predicted = _predicted_peaks(tiny, shape, FCS, NATIVE)[0]
    assert predicted <= base + top <= predicted * 1.05


@pytest.fixture(scope="module")
def sweep(tiny) -> Sweep:
    return Sweep(tiny, StepShape(2, 2, 2), FCS, plan=PlanConfig(), batches=(2, 3), frameskips=(2, 3))


def test_a_sweep_predicts_other_batch_sizes_and_frameskips_exactly(tiny, sweep) -> None:
    got = sweep.predict(5, 1)
    direct = predict(tiny, StepShape(5, 2, 1), FCS, plan=PlanConfig())
    for name in ("train", "validation", "planning"):
        assert getattr(got, name) == getattr(direct, name)


def test_predictions_grow_with_the_batch_size(sweep) -> None:
    """Live memory grows strictly; reserved memory too, up to one allocator page of fragmentation
    (best fit over freed blocks can leave a hole at one size that another size fills)."""
    preds = [sweep.predict(b) for b in range(2, 13)]
    for name in ("train", "validation"):
        allocated = [getattr(p, name).allocated for p in preds]
        reserved = [getattr(p, name).reserved for p in preds]
        assert all(a < b for a, b in itertools.pairwise(allocated)), allocated
        assert all(b >= a - LARGE_BUFFER for a, b in itertools.pairwise(reserved)), reserved
        assert reserved[-1] > reserved[0]


def test_predictions_grow_with_num_hist(tiny) -> None:
    preds = [predict(tiny, StepShape(2, h, 2), FCS, plan=PlanConfig()) for h in (1, 3)]
    for name in ("train", "validation", "planning"):
        allocated = [getattr(p, name).allocated for p in preds]
        assert allocated[0] < allocated[1], (name, allocated)


def test_the_reference_setup_needs_more_memory_than_fcs(tiny, sweep) -> None:
    ours, ref = sweep.predict(4), predict(tiny, StepShape(4, 2, 2), REFERENCE)
    assert ref.train.allocated > 1.5 * ours.train.allocated
    assert ref.validation.allocated > 1.5 * ours.validation.allocated
    assert "efficient" in ours.attention_kernels and set(ref.attention_kernels) == {"math"}


def test_full_model_peak_holds_its_parameters_and_adam_moments() -> None:
    cfg = load_config(preset="full")
    shape = StepShape(1, 3, 5)
    pred = predict(cfg, shape, FCS)
    run_cfg = run_config(cfg, shape, FCS, "cuda")
    model = build(run_cfg, shape, torch._subclasses.fake_tensor.FakeTensorMode())
    params = sum(round_size(t.untyped_storage().nbytes()) for t in [*model.parameters(), *model.buffers()])
    trainable = [p for p in model.parameters() if p.requires_grad]
    moments = 2 * sum(round_size(p.untyped_storage().nbytes()) for p in trainable)
    comp = pred.train.composition
    assert comp["parameters"] == params
    assert moments <= comp["optimizer state"] <= moments + 512 * len(trainable)  # + each parameter's step count
    forwards = 2 + 2 + 1  # two training steps, two validation batches, the image grid
    assert pred.attention_kernels == {"flash": 12 * forwards, "efficient": 6 * forwards}  # encoder, predictor blocks
    assert pred.train.allocated > params + moments and pred.train.reserved >= pred.train.allocated


def test_a_gpu_without_flash_attention_runs_the_encoder_on_the_efficient_kernel(tiny) -> None:
    pred = predict(tiny, StepShape(2, 2, 2), FCS, policy=dataclasses.replace(CUDA, flash=False))
    assert set(pred.attention_kernels) == {"efficient"}
