"""FLOPs counted with FlopCounterMode, attention included, per candidate and per plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcs_data.store import open_store
from fcs_train.planning.bundle import load_planning_model
from fcs_train.planning.config import load_plan_config
from fcs_train.planning.flops import PROBE_BATCH, count_flops
from fcs_train.planning.mpc import Planner

SMALL = ["cem.samples=12", "cem.topk=3", "cem.iterations=2", "horizon=2"]


@pytest.fixture(scope="module")
def scene(planning_fs2: tuple[Path, Path]):
    store, ckpt = planning_fs2
    s = open_store(store)
    frames = s.read_frames(list(range(24)))
    proprio = s.read_rows("state", 0, 24)[:, s.layout.proprio_slice]
    return load_planning_model(ckpt, device="cpu"), frames, proprio


def test_attention_is_counted_on_cpu_as_its_two_matrix_products():
    b, heads, n, d = 2, 4, 50, 16
    q = torch.randn(b, heads, n, d)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=mask)) == 2 * (2 * b * heads * n * n * d)


def test_a_rollout_s_flops_are_linear_in_the_batch_so_one_batch_gives_the_cost_per_candidate(scene):
    bundle, frames, proprio = scene
    planner = Planner(bundle, load_plan_config(overrides=SMALL))
    planner.reset(frames[20], proprio[20])
    planner.plan(frames[0], proprio[0])
    probe = torch.zeros(2, planner.space.width)
    per = planner.rollout_flops.per_candidate(planner.objective.cost, probe, context=1)
    seven = count_flops(lambda: planner.objective.cost(probe[None].expand(7, -1, -1).clone()))
    assert per > 0 and seven == pytest.approx(7 * per, rel=1e-9)
    with_grad = planner.rollout_flops.per_candidate(planner.objective.cost, probe, context=1, grad=True)
    assert 2 * per < with_grad < 4 * per  # a backward pass costs about twice the forward
    assert PROBE_BATCH == 2


@pytest.mark.parametrize("solver", ["cem", "icem", "cem_gd", "gd"])
def test_every_plan_reports_the_flops_of_what_its_solver_evaluated(scene, solver):
    bundle, frames, proprio = scene
    overrides = [*SMALL, f"solver={solver}", "icem.samples=12", "icem.topk=3", "icem.iterations=2", "gd.restarts=2",
                 "gd.steps=2"]
    planner = Planner(bundle, load_plan_config(overrides=overrides))
    planner.reset(frames[20], proprio[20])
    first = planner.plan(frames[0], proprio[0])
    probe = torch.zeros(2, planner.space.width)
    fwd = planner.rollout_flops.per_candidate(planner.objective.cost, probe, context=1)
    bwd = planner.rollout_flops.per_candidate(planner.objective.cost, probe, context=1, grad=True)
    encode = planner._encode_flops
    assert encode and encode > 0
    assert first.flops == pytest.approx(first.rollouts * fwd + first.grad_rollouts * bwd + encode, rel=1e-9)
    assert (first.grad_rollouts > 0) is (solver in ("gd", "cem_gd"))
    second = planner.plan(frames[2], proprio[2], executed_actions=first.actions)
    assert second.warm and second.context_frames == 2
    assert second.flops > 0 and second.flops != first.flops  # two context frames cost more per candidate
