"""ActionSpace: raw bounds applied in normalised space, fixed and masked dims, chained segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcs_data.schemas import get_layout
from fcs_data.schemas.store import ArrayStats
from fcs_train.planning.bundle import PlanningError
from fcs_train.planning.config import BoundsConfig
from fcs_train.planning.space import ActionSpace

PRIMITIVE = get_layout("franka_cube_stack_primitive")  # [start xyz, start grip, end xyz, end grip]


def _stats(a: int, seed: int = 0) -> ArrayStats:
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.3, 0.1, a)
    std = rng.uniform(0.05, 0.2, a)
    return ArrayStats(mean=mean.tolist(), std=std.tolist(), min=(mean - 4 * std).tolist(),
                      max=(mean + 4 * std).tolist(), q01=(mean - 2 * std).tolist(), q99=(mean + 2 * std).tolist(),
                      count=100)


def _space(layout=PRIMITIVE, frameskip: int = 1, horizon: int = 4, **bounds) -> ActionSpace:
    return ActionSpace(layout, _stats(layout.action_dim), frameskip=frameskip, horizon=horizon,
                       bounds=BoundsConfig(**bounds))


def _in_bounds(space: ActionSpace, raw: np.ndarray) -> bool:
    searched = space.searched
    tol = 1e-5 * (space.hi_raw - space.lo_raw)
    return bool(((raw[..., searched] >= space.lo_raw[searched] - tol[searched])
                 & (raw[..., searched] <= space.hi_raw[searched] + tol[searched])).all())


def test_samples_never_leave_the_raw_bounds_even_from_a_mean_far_outside_with_a_huge_sigma():
    space = _space(workspace=[(0.05, 0.80), (-0.40, 0.45), (0.0, 0.12)])
    p0 = torch.tensor([0.4, 0.0, 0.1])
    mu = torch.full((4, 8), 40.0)  # 40 sigma above every bound
    x = space.sample(mu, torch.full_like(mu, 50.0), 2000, torch.Generator().manual_seed(0), p0)
    raw = space.to_raw(x).numpy()
    assert _in_bounds(space, raw)
    end = raw[..., 4:7]
    assert end[..., 1].min() >= -0.40 - 1e-6 and end[..., 1].max() <= 0.45 + 1e-6  # never y = -1.07 m
    assert end[..., 2].max() <= 0.12 + 1e-6


def test_truncated_samples_follow_the_normal_when_the_bounds_are_far():
    space = _space(default="minmax", chain_segments=False)
    mu, sigma = torch.zeros(4, 8), torch.full((4, 8), 0.5)  # bounds at +-4 std: 8 sigma away
    x = space.sample(mu, sigma, 20000, torch.Generator().manual_seed(1), torch.zeros(3))
    free = torch.tensor(space.searched)
    assert x[..., free].mean().abs() < 0.01
    assert abs(float(x[..., free].std()) - 0.5) < 0.01


def test_fixed_and_masked_dims_hold_their_raw_values_and_are_not_searched():
    space = _space(fixed={"end_gripper": 1.0}, masked=["start_gripper"])
    x = space.sample(torch.zeros(4, 8), torch.ones(4, 8), 64, torch.Generator().manual_seed(2), torch.zeros(3))
    raw = space.to_raw(x).numpy()
    assert np.allclose(raw[..., 7], 1.0, atol=1e-5)
    assert np.allclose(raw[..., 3], space._mean[3], atol=1e-5)
    assert not space.searched[3] and not space.searched[7]


def test_segment_starts_are_the_previous_ends_and_the_first_is_the_current_proprio():
    space = _space(frameskip=2, horizon=3)
    p0 = torch.tensor([0.41, -0.12, 0.07])
    x = space.sample(torch.zeros(3, 16), torch.ones(3, 16), 5, torch.Generator().manual_seed(3), p0)
    raw = space.to_raw(x).numpy()  # (5, 6, 8): six raw actions in execution order
    assert np.allclose(raw[:, 0, 0:3], p0.numpy(), atol=1e-5)
    assert np.allclose(raw[:, 1:, 0:3], raw[:, :-1, 4:7], atol=1e-5)
    assert not space.searched[:3].any()


def test_raw_and_normalised_conversions_are_inverse_and_keep_the_execution_order():
    space = _space(layout=get_layout("franka_cube_stack_v1"), frameskip=3, horizon=2)
    raw = torch.arange(6 * 9, dtype=torch.float32).reshape(6, 9) / 10
    x = space.from_raw(raw)
    assert x.shape == (2, 27)
    assert torch.allclose(space.to_raw(x), raw, atol=1e-4)
    # planning step 1 holds raw actions 3, 4, 5 back to back
    assert torch.allclose(space.to_raw(x[1:2])[0], raw[3], atol=1e-4)


def test_projection_is_differentiable_in_the_searched_dims():
    space = _space()
    x = torch.zeros(4, 8, requires_grad=True)
    space.project(x, torch.tensor([0.4, 0.0, 0.1])).sum().backward()
    assert x.grad[:, 4:7].abs().sum() > 0  # ends move the next starts and themselves


def test_unknown_dim_names_are_refused_naming_the_fields():
    with pytest.raises(PlanningError, match="start_pos"):
        _space(fixed={"gripper": 0.0})
    with pytest.raises(PlanningError, match="has 3 dims"):
        _space(dims={"end_pos[3]": (0.0, 1.0)})


def test_a_dim_that_never_varied_in_training_is_held_at_its_value():
    stats = _stats(8)
    stats = stats.model_copy(update={"q01": [*stats.q01[:7], 0.0], "q99": [*stats.q99[:7], 0.0]})
    space = ActionSpace(PRIMITIVE, stats, frameskip=1, horizon=2, bounds=BoundsConfig())
    x = space.sample(torch.zeros(2, 8), torch.ones(2, 8), 16, torch.Generator().manual_seed(4), torch.zeros(3))
    assert np.allclose(space.to_raw(x).numpy()[..., 7], 0.0, atol=1e-6)
