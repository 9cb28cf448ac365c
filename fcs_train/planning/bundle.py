"""`PlanningModel`: a trained world model with everything planning needs to read it right.

The traps the users hit live at this boundary: statistics and dims read from a different dataset
than the model was trained on, BGR frames, proprio sent as zeros or taken at a pose the model never
saw. So a `PlanningModel` takes its normalisation statistics, layout and frame shape from the
checkpoint itself (a store is only consulted for a checkpoint imported from the reference, which
holds none, and must then have the same dims), and every observation, goal and executed action
passes through its checks before it reaches the model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcs_data.schemas import Layout
from fcs_data.schemas.store import ArrayStats
from fcs_data.stats import Normalizer, normalize
from fcs_data.store import Store
from fcs_train.checkpoint import StoreRef, load_world_model
from fcs_train.models import VWorldModel, to_model_input
from fcs_train.planning.errors import PlanCancelled, PlanInputError, PlanningError

__all__ = ["PlanCancelled", "PlanInputError", "PlanningError", "PlanningModel", "load_planning_model"]

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass
class PlanningModel:
    """A world model in eval mode and what its checkpoint says about its inputs.

    image_shape: `(H, W, 3)` uint8 RGB frames, as the store the model was trained on holds them.
    action_stats, proprio_stats: the training statistics the model's inputs were normalised with.
    recon_reference: the decoder's reconstruction MSE on validation frames (for the scene check).
    image_mean: per-channel mean (R, G, B) of the training frames, 0..255 (for the channel-order check).
    """

    model: VWorldModel
    checkpoint: Path
    layout: Layout
    action_stats: ArrayStats
    proprio_stats: ArrayStats
    frameskip: int
    num_hist: int
    image_shape: tuple[int, int, int]
    device: torch.device
    amp_dtype: torch.dtype | None = None
    recon_reference: float | None = None
    image_mean: tuple[float, float, float] | None = None
    trained_store: StoreRef | None = None
    split: dict[str, Any] = field(default_factory=dict)
    cameras: list[str] | None = None
    fuse: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def action_dim(self) -> int:
        return self.layout.action_dim

    @property
    def proprio_dim(self) -> int:
        return self.layout.proprio_dim

    @property
    def decoder_trained(self) -> bool:
        return self.model.decoder is not None and self.recon_reference is not None

    def trained_on(self, store: Store) -> bool:
        """Whether `store` holds the data the model was trained on (`StoreRef.matches`)."""
        return self.trained_store is not None and self.trained_store.matches(store)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- input checks ------------------------------------------------------------------------------
    def image_input(self, image: Any, channel_order: str = "RGB", what: str = "image") -> tuple[torch.Tensor, list[str]]:
        """`(H, W, 3)` uint8 frame -> model input `(1, 1, 3, S, S)` in [-1, 1], and warnings.

        BGR frames are converted when `channel_order="BGR"` says so; an RGB frame whose channel means
        match the training frames' only with red and blue swapped is warned about.
        """
        if channel_order not in CHANNEL_ORDERS:
            raise PlanInputError(f"{what}: channel_order {channel_order!r}; one of {', '.join(CHANNEL_ORDERS)}")
        try:
            arr = np.asarray(image)
        except Exception as e:  # anything that is not an array at all
            raise PlanInputError(f"{what}: not an array ({type(image).__name__}): {e}") from None
        h, w, c = self.image_shape
        if arr.ndim == 3 and arr.shape[-1] == 4 and arr.shape[:2] == (h, w):
            raise PlanInputError(f"{what}: shape {arr.shape} is RGBA; send the colour channels only (image[..., :3])")
        if arr.shape != (h, w, c):
            raise PlanInputError(f"{what}: shape {tuple(arr.shape)}, expected ({h}, {w}, {c}) as the frames this "
                                 f"model was trained on ({self.layout.name})")
        if arr.dtype != np.uint8:
            raise PlanInputError(f"{what}: dtype {arr.dtype}, expected uint8 (0..255); for float frames in 0..255 "
                                 "send np.clip(image, 0, 255).round().astype(np.uint8)")
        if channel_order == "BGR":
            arr = arr[..., ::-1]
        warnings = self._channel_order_warnings(arr, what) if channel_order == "RGB" else []
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None, None].to(self.device)
        return to_model_input(x, self.model.image_size), warnings

    def _channel_order_warnings(self, arr: np.ndarray, what: str) -> list[str]:
        if self.image_mean is None:
            return []
        mean = arr.reshape(-1, 3).mean(axis=0)
        train = np.asarray(self.image_mean)
        if abs(train[0] - train[2]) < 10:  # red and blue too alike in training to tell
            return []
        as_is, swapped = np.abs(mean - train).sum(), np.abs(mean[::-1] - train).sum()
        if swapped * 2 < as_is:
            return [f"{what}: its channel means (R, G, B) = ({mean[0]:.0f}, {mean[1]:.0f}, {mean[2]:.0f}) match the "
                    f"training frames' ({train[0]:.0f}, {train[1]:.0f}, {train[2]:.0f}) only with red and blue "
                    "swapped: is it BGR? (say channel_order='BGR' and it is converted)"]
        return []

    def proprio_input(self, proprio: Any, what: str = "proprio", range_factor: float | None = None) -> np.ndarray:
        """`(P,)` raw proprio (e.g. the EE position in m), real, finite, as float64; with `range_factor`,
        inside the training range widened that many times about its centre (`training_range`)."""
        arr = _real_array(proprio, what)
        p = self.proprio_dim
        field_ = self.layout.state_field(self.layout.proprio)
        if arr.shape != (p,):
            raise PlanInputError(f"{what}: shape {tuple(arr.shape)}, expected ({p},): the state field "
                                 f"{field_.name} [{field_.unit}] this model was trained with")
        if not np.isfinite(arr).all():
            raise PlanInputError(f"{what}: holds {arr[~np.isfinite(arr)][0]} at dim "
                                 f"{int(np.flatnonzero(~np.isfinite(arr))[0])}")
        if range_factor is not None:
            lo, hi = training_range(self.proprio_stats, range_factor)
            names = [f"{field_.name}[{i}]" for i in range(p)]
            _check_range(arr[None], lo, hi, names, field_.unit, what, range_factor)
        return arr

    def proprio_warnings(self, raw: np.ndarray, what: str, ood_sigma: float) -> list[str]:
        """Zero proprio, and dims more than `ood_sigma` training stds from the training mean, by name."""
        out = []
        field_ = self.layout.state_field(self.layout.proprio)
        mean, std = np.asarray(self.proprio_stats.mean), np.asarray(self.proprio_stats.std)
        if not raw.any() and np.abs(mean).max() > 0:
            out.append(f"{what} is all zeros: was it sent? (the training mean of {field_.name} is "
                       f"{_fmt(mean)} {field_.unit})")
        z = normalize(raw, self.proprio_stats)
        far = np.flatnonzero(np.abs(z) > ood_sigma)
        if len(far):
            dims = ", ".join(f"{field_.name}[{i}] = {raw[i]:.4g} {field_.unit} is {z[i]:+.1f} sigma from the training "
                             f"mean {mean[i]:.4g} (std {std[i]:.3g})" for i in far)
            out.append(f"{what} is out of the training distribution: {dims}; a goal or state the model never saw "
                       "dominates the cost")
        return out

    def actions_input(self, actions: Any, what: str = "executed_actions", range_factor: float | None = None
                      ) -> np.ndarray:
        """`(k, A)` raw actions, real, finite, as float64 (a single action `(A,)` is one row); with
        `range_factor`, inside the training range widened that many times about its centre."""
        arr = _real_array(actions, what)
        if arr.ndim == 1:
            arr = arr[None]
        a = self.action_dim
        if arr.ndim != 2 or arr.shape[1] != a or len(arr) == 0:
            fields = ", ".join(f"{f.name} [{f.start}:{f.stop}]" for f in self.layout.action)
            raise PlanInputError(f"{what}: shape {tuple(np.shape(actions))}, expected (k, {a}) raw actions "
                                 f"({fields})")
        if not np.isfinite(arr).all():
            row, col = (int(v) for v in np.argwhere(~np.isfinite(arr))[0])
            raise PlanInputError(f"{what}: row {row} dim {col} is {arr[row, col]}")
        if range_factor is not None:
            lo, hi = training_range(self.action_stats, range_factor)
            names = [f"{f.name}[{j}]" if f.width > 1 else f.name for f in self.layout.action for j in range(f.width)]
            _check_range(arr, lo, hi, names, None, what, range_factor)
        return arr

    def normalize_proprio(self, raw: np.ndarray) -> torch.Tensor:
        """`(P,)` raw -> `(1, 1, P)` normalised, on the device."""
        return torch.tensor(normalize(raw, self.proprio_stats), device=self.device)[None, None]

    # -- description -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What a client needs to send and to read: shapes, fields with units, frameskip."""
        layout = self.layout
        proprio = layout.state_field(layout.proprio)
        return {
            "checkpoint": str(self.checkpoint),
            "layout": layout.name,
            "image": {"shape": list(self.image_shape), "dtype": "uint8", "channel_order": "RGB"},
            "proprio": {"field": proprio.name, "dim": proprio.width, "unit": proprio.unit},
            "action": {"dim": layout.action_dim, "frameskip": self.frameskip,
                       "fields": [{"name": f.name, "start": f.start, "stop": f.stop, "unit": f.unit, "kind": f.kind}
                                  for f in layout.action]},
            "num_hist": self.num_hist,
            "decoder": self.decoder_trained,
        }


def _real_array(value: Any, what: str) -> np.ndarray:
    """`value` as float64, refusing what is not real numbers (complex, booleans, strings, objects)."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged nested lists, objects numpy cannot read
        raise PlanInputError(f"{what}: not a numeric array ({type(value).__name__}): {e}") from None
    if arr.dtype.kind not in "iuf":
        kind = {"c": "complex", "b": "boolean", "O": "object", "U": "string", "S": "bytes"}.get(arr.dtype.kind,
                                                                                               str(arr.dtype))
        raise PlanInputError(f"{what}: {kind} values (dtype {arr.dtype}); send real numbers (float32 or float64)")
    return arr.astype(np.float64)


def training_range(stats: ArrayStats, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """`(lo, hi)` per dim: the training min..max widened `factor` times about its centre (a dim that
    never varied gets a half width of 1e-3 raw units)."""
    lo, hi = np.asarray(stats.min, np.float64), np.asarray(stats.max, np.float64)
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1e-3)
    return centre - factor * half, centre + factor * half


def _check_range(arr: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str], unit: str | None, what: str,
                 factor: float) -> None:
    """Refuse the first value of `arr (k, D)` outside `[lo, hi]`, naming the row, the dim and the range."""
    bad = np.argwhere((arr < lo) | (arr > hi))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        at = f"row {row} " if len(arr) > 1 else ""
        u = f" {unit}" if unit else ""
        raise PlanInputError(f"{what}: {at}{names[col]} = {arr[row, col]:.6g}{u} is outside {lo[col]:.4g}..{hi[col]:.4g}"
                             f"{u}, {factor:g} x the training range about its centre: not a value of the data this "
                             "model was trained on (wrong units, an environment offset, garbage?)")


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def model_image_shape(layout: Layout, data: dict[str, Any]) -> tuple[int, int, int]:
    """The frame the model takes: the first (or configured) camera, or the configured cameras fused."""
    shapes = {layout.observation.camera: (layout.observation.height, layout.observation.width)}
    shapes |= {c.name: (c.height, c.width) for c in layout.cameras}
    cameras = data.get("cameras") or [layout.observation.camera]
    h, w = shapes[cameras[0]]
    if data.get("fuse") == "side_by_side":
        w = sum(shapes[c][1] for c in cameras)
    return h, w, 3


def _same_interface(a: Layout, b: Layout) -> bool:
    key = lambda lay: ([(f.name, f.start, f.stop, f.unit) for f in lay.action], lay.proprio, lay.proprio_dim)  # noqa: E731
    return key(a) == key(b)


def load_planning_model(checkpoint: str | Path, *, store: str | Path | None = None, device: str = "auto",
                        amp: str = "auto") -> PlanningModel:
    """The checkpoint's model in eval mode, its statistics, layout and frame shape.

    `store` is needed only for a checkpoint imported from the reference (it holds no statistics or
    layout): the store's default-split statistics are used and its dims must match the model's.
    For an fcs checkpoint a store given must have the same action and proprio layout, or this refuses.
    """
    from fcs_data.store import open_store
    from fcs_train.dist import resolve_device

    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    model, ckpt = load_world_model(checkpoint, dev)
    if model.predictor is None:
        raise PlanningError(f"{checkpoint}: the model has no predictor; planning needs one")
    window, proprio_dim = ckpt.spec.window, ckpt.spec.proprio_dim
    notes: list[str] = []
    opened = open_store(store) if store is not None else None
    if ckpt.layout is not None:
        layout = ckpt.layout
        if opened is not None and not _same_interface(layout, opened.layout):
            raise PlanningError(f"{opened.path} ({opened.layout.name}) has other action or proprio fields than the data "
                                f"{checkpoint} was trained on ({layout.name}); plan with data of the same layout")
    elif opened is not None:
        layout = opened.layout
        notes.append(f"layout taken from {opened.path} (the checkpoint holds none)")
    else:
        raise PlanningError(f"{checkpoint} holds no layout or statistics (imported from the reference?); give the "
                            "store it was trained on (--store)")
    if (layout.action_dim, layout.proprio_dim) != (window.action_dim, proprio_dim):
        raise PlanningError(f"{checkpoint}: the model takes {window.action_dim}-D actions and {proprio_dim}-D "
                            f"proprio, the layout {layout.name} has {layout.action_dim} and {layout.proprio_dim}")
    if ckpt.normalizer is not None:
        normalizer = ckpt.normalizer
    elif opened is not None and opened.metadata.norm_stats is not None:
        normalizer = Normalizer(action=opened.metadata.norm_stats.action, proprio=opened.metadata.norm_stats.proprio)
        notes.append(f"normalisation statistics from {opened.path}'s default split (the checkpoint holds none): make "
                     "sure the model was trained on this data")
    else:
        raise PlanningError(f"{checkpoint} holds no normalisation statistics; give the store it was trained on (--store)")
    data = (ckpt.config or {}).get("data", {})
    recon = ckpt.state.val_metrics.get("decoder_recon_loss_reconstructed")
    amp_dtype = torch.bfloat16 if (amp == "bf16" or (amp == "auto" and dev.type == "cuda")) else None
    return PlanningModel(
        model=model.eval(), checkpoint=checkpoint, layout=layout, action_stats=normalizer.action,
        proprio_stats=normalizer.proprio, frameskip=window.frameskip, num_hist=window.num_hist,
        image_shape=model_image_shape(layout, data), device=dev, amp_dtype=amp_dtype,
        recon_reference=float(recon) if recon is not None and ckpt.state.decoder_trained else None,
        image_mean=tuple(ckpt.image_stats.mean) if ckpt.image_stats else None, trained_store=ckpt.store,
        split={"split_ratio": ckpt.split.ratio, "split_seed": ckpt.split.seed} if ckpt.split else {},
        cameras=data.get("cameras"), fuse=data.get("fuse"), notes=notes)
