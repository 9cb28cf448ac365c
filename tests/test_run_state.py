"""Optimizer states load by parameter name: a reordered model or an imported state never gets another's moments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcs_train.run_state import load_optimizer_state


def _stepped(named: list[tuple[str, nn.Parameter]]) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(named, lr=1e-2)
    sum((p * (i + 1)).sum() for i, (_, p) in enumerate(named)).backward()
    opt.step()
    return opt


def test_moments_follow_the_parameter_names_not_the_order() -> None:
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2, 2))
    saved = _stepped([("part.a", a), ("part.b", b)]).state_dict()
    reordered = torch.optim.AdamW([("part.b", b), ("part.a", a)], lr=1e-2)
    load_optimizer_state(reordered, saved)
    torch.testing.assert_close(reordered.state[a]["exp_avg"], torch.full((3,), 0.1))  # (1 - beta1) * grad 1
    torch.testing.assert_close(reordered.state[b]["exp_avg"], torch.full((2, 2), 0.2))
    other = torch.optim.AdamW([("part.c", nn.Parameter(torch.zeros(3))), ("part.b", b)], lr=1e-2)
    with pytest.raises(ValueError, match=r"other parameters \(differing: \['part.a', 'part.c'\]\)"):
        load_optimizer_state(other, saved)


def test_a_state_without_names_format_1_loads_by_position() -> None:
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    saved = _stepped([("a", a), ("b", b)]).state_dict()
    for group in saved["param_groups"]:
        del group["param_names"]
    fresh = torch.optim.AdamW([a, b], lr=1e-2)
    load_optimizer_state(fresh, saved)
    torch.testing.assert_close(fresh.state[b]["exp_avg"], torch.full((2,), 0.2))
