"""Every random number generator a training step draws from, captured and restored exactly.

The global torch (and CUDA), numpy and Python generators, plus the decoder schedule's own generator,
in types a weights-only `torch.load` reads back (a checkpoint never holds a pickled object).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(decoder_gen: torch.Generator | None = None) -> dict[str, Any]:
    """Every global RNG (and `decoder_gen`'s state, when given)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if decoder_gen is not None:
        state["decoder"] = decoder_gen.get_state()
    return state


def set_rng_state(state: dict[str, Any], decoder_gen: torch.Generator | None = None) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy"):
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if decoder_gen is not None and "decoder" in state:
        decoder_gen.set_state(state["decoder"])
