"""StorageTracker: live storages of a step, in order, labelled (fcs_train.fit.tracker)."""

from __future__ import annotations

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fcs_train.fit.tracker import FREE, StorageTracker, composition_at, live_bytes, peak


def test_views_and_in_place_ops_allocate_nothing_and_frees_are_recorded() -> None:
    tracker = StorageTracker()
    with tracker:
        a = torch.ones(1000)
        b = a[10:].view(-1, 2)
        a.add_(1)
        b.mul_(2)
        c = a * 2
        del c
    trace = tracker.result()
    assert list(trace.sizes) == [4000, 4000]
    live = live_bytes(trace, trace.sizes)
    assert live.max() == 8000 and live[-1] == 4000
    assert trace.events[-1, 0] == FREE
    del a, b


def test_fake_tensors_are_tracked_like_real_ones() -> None:
    def step() -> None:
        x = torch.ones(64, 32, requires_grad=True)
        w = torch.ones(32, 16, requires_grad=True)
        (x @ w).relu().sum().backward()

    real, fake = StorageTracker(), StorageTracker()
    with real:
        step()
    with FakeTensorMode(), fake:
        step()
    assert list(real.result().sizes) == list(fake.result().sizes)


def test_labels_and_relabelling_move_bytes_between_categories() -> None:
    tracker = StorageTracker()
    lin = torch.nn.Linear(8, 8)
    with tracker:
        for p in lin.parameters():
            tracker.track(p, "parameters")
        unhook = tracker.label_modules({lin: "predictor"})
        with tracker.label("inputs"):
            x = torch.ones(4, 8)
        y = lin(x)
        unhook()
        z = y + 1
        tracker.relabel(y, "gradients")
    trace = tracker.result()
    before = composition_at(trace, trace.sizes, 3)  # the module's output made, then z outside it
    assert before == {"parameters": 288, "inputs": 128, "predictor": 128}
    after = composition_at(trace, trace.sizes, len(trace.events) - 1)
    assert after == {"parameters": 288, "inputs": 128, "gradients": 128, "other": 128}
    del x, y, z


def test_storages_freed_together_give_one_trace_whatever_their_order() -> None:
    def run() -> np.ndarray:
        tracker = StorageTracker()
        with tracker:
            held = {i: torch.ones(10 + i) for i in range(20)}
            held.clear()
            torch.ones(3)
        return tracker.result().events

    assert np.array_equal(run(), run())


def test_kernel_workspace_is_a_transient_allocation_around_its_op() -> None:
    tracker = StorageTracker(workspace=lambda func, args: 1000 if func is torch.ops.aten.mul.Tensor else 0)
    with tracker:
        a = torch.ones(10)
        b = a * a
    trace = tracker.result()
    p = peak(trace, trace.sizes)
    assert p.bytes == 40 + 1000 + 40 and p.composition["kernel workspace"] == 1000
    assert live_bytes(trace, trace.sizes)[-1] == 80
    del a, b
