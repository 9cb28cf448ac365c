"""fcs checkpoints: state dicts only (loadable with `weights_only=True`), written atomically.

    {"fcs_checkpoint": 1, "model": {part: state_dict}, "model_config": ModelConfig as JSON,
     "dims": {proprio_dim, action_dim, num_hist, num_pred, frameskip}, "epoch", "global_step",
     "step_in_epoch", "optimizers": {name: state_dict}, "scaler": state_dict | None,
     "rng": {...}, "config": TrainConfig as JSON, "store": {path, fingerprint},
     "norm_stats": {"action": ..., "proprio": ...}, "best_val_loss": float, ...}

No pickled modules, no classes: a refactor never breaks a checkpoint, and loading one never runs
code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcs_train.errors import CheckpointError

FORMAT = 1


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """`torch.save` to a temporary file in the same directory, fsync, then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"fcs_checkpoint": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an fcs checkpoint with `weights_only=True`; `CheckpointError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to decode is reported with the file
        hint = " (a reference DINO-WM checkpoint? convert it with `fcs import-checkpoint`)" if "GLOBAL" in str(e) else ""
        raise CheckpointError(f"{path}: cannot be loaded as an fcs checkpoint{hint}: {str(e).splitlines()[0]}") from e
    if not isinstance(ckpt, dict) or ckpt.get("fcs_checkpoint") != FORMAT:
        raise CheckpointError(f"{path}: not an fcs checkpoint (format {FORMAT})")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every global RNG, in weights-only-loadable types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy"):
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def load_world_model(path: str | Path, device: str | torch.device = "cpu"):
    """`(model in eval mode, checkpoint dict)` from an fcs checkpoint: every saved part loaded strictly.

    A checkpoint without the encoder (imported from a reference run whose encoder was frozen) takes
    it from `model.encoder.weights` of its config when that file exists, else the encoder stays random
    and a `RandomEncoderWarning` says so.
    """
    import warnings

    from fcs_train.config import ModelConfig
    from fcs_train.models import RandomEncoderWarning, build_model

    ckpt = load_checkpoint(path)
    cfg = ModelConfig.model_validate(ckpt["model_config"])
    dims = ckpt["dims"]
    weights = cfg.encoder.weights
    if "encoder" in ckpt["model"] or (weights is not None and not Path(weights).is_file()):
        cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"weights": None})})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(cfg, proprio_dim=dims["proprio_dim"], action_dim=dims["action_dim"],
                            num_hist=dims["num_hist"], num_pred=dims.get("num_pred", 1), frameskip=dims["frameskip"])
    for name, sd in ckpt["model"].items():
        part = getattr(model, name, None)
        if part is None:
            raise CheckpointError(f"{path}: part {name!r} is not in the model its config describes")
        try:
            part.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: part {name!r} does not load: {str(e).splitlines()[0]}") from None
    if "encoder" not in ckpt["model"]:
        for w in caught:
            if issubclass(w.category, RandomEncoderWarning):
                warnings.warn(f"{path} holds no encoder and model.encoder.weights is not a file: the encoder is "
                              "RANDOM", RandomEncoderWarning, stacklevel=2)
    return model.to(device).eval(), ckpt
