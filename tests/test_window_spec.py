"""`WindowSpec`: the window's frames and the `(F, fs * A)` packing of its raw actions, in one place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fcs_data.window_spec import WindowSpec

SPEC = WindowSpec(num_hist=3, num_pred=1, frameskip=5, action_dim=9)


def test_counts_of_a_window() -> None:
    assert (SPEC.num_frames, SPEC.raw_steps, SPEC.packed_dim) == (4, 20, 45)
    with pytest.raises(ValidationError):
        WindowSpec(num_hist=0, action_dim=9)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_pack_puts_the_frameskip_raw_actions_after_each_frame_in_one_row(lib: str) -> None:
    raw = np.arange(2 * 20 * 9, dtype=np.float32).reshape(2, 20, 9)  # (B, F * fs, A)
    x = raw if lib == "numpy" else torch.from_numpy(raw)
    packed = SPEC.pack(x)
    assert tuple(packed.shape) == (2, 4, 45)
    for i in range(4):  # row i: raw actions i * fs .. i * fs + fs - 1, concatenated
        np.testing.assert_array_equal(np.asarray(packed[1, i]), raw[1, i * 5 : (i + 1) * 5].reshape(-1))
    back = SPEC.unpack(packed)
    np.testing.assert_array_equal(np.asarray(back), raw)


def test_raw_step_names_the_raw_action_behind_a_packed_element() -> None:
    raw = np.arange(20 * 9).reshape(20, 9)
    packed = SPEC.pack(raw)
    for row, col in ((0, 0), (1, 10), (3, 44)):
        assert raw[SPEC.raw_step(row, col), col % 9] == packed[row, col]
    assert SPEC.raw_step(2) == 10, "frame 2 is 2 * frameskip steps in"


def test_shapes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected \(\.\.\., T \* 5, 9\)"):
        SPEC.pack(np.zeros((7, 9)))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., T, 45\)"):
        SPEC.unpack(np.zeros((2, 44)))
