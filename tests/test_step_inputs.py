"""What a step feeds the model: non-finite inputs are refused before the model, naming episode, raw step, field."""

from __future__ import annotations

import pytest
import torch

from fcs_data.window_spec import WindowSpec
from fcs_train.errors import NonFiniteLoss
from fcs_train.step_inputs import check_finite_inputs

SPEC = WindowSpec(num_hist=2, num_pred=1, frameskip=2, action_dim=3)


def _batch() -> dict:
    return {"episode": torch.tensor([4, 7]), "start": torch.tensor([10, 0]),
            "action": torch.zeros(2, 3, SPEC.packed_dim), "proprio": torch.zeros(2, 3, 3)}


def test_finite_inputs_pass() -> None:
    check_finite_inputs(_batch(), SPEC, step=1, epoch=1, store="s.zarr")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_action_names_its_episode_and_raw_step(value: float) -> None:
    batch = _batch()
    batch["action"][0, 1, 4] = value  # frame 1, second raw action of the frame (4 // 3 = 1): step 10 + 2 + 1
    with pytest.raises(NonFiniteLoss, match=r"non-finite inputs at step 5 \(epoch 2\): \['episode 4 step 13 "
                                            r"\(action\)'\]; check them with `fcs validate s\.zarr`"):
        check_finite_inputs(batch, SPEC, step=5, epoch=2, store="s.zarr")


def test_a_non_finite_proprio_names_its_frames_raw_step() -> None:
    batch = _batch()
    batch["proprio"][1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match=r"\['episode 7 step 4 \(proprio\)'\]"):
        check_finite_inputs(batch, SPEC, step=1, epoch=1, store="s.zarr")
