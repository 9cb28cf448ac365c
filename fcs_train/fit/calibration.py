"""Calibration on a real GPU: what the trace cannot see, measured once per device and kept in a file.

A trace counts every tensor; the GPU also holds what no tensor owns: the CUDA context, the kernels
and cuBLAS/cuDNN handles loaded into it (outside the caching allocator: `overhead_bytes`),
library workspaces inside the allocator (cuBLAS, cuDNN convolution workspaces), and the allocator's
own behaviour on this driver. `fcs fit --calibrate` runs real training steps and a validation batch
at two or three sizes (`measure`), records `max_memory_allocated`, `max_memory_reserved`, the memory
outside the allocator and the fragmentation, and fits

    measured max_memory_reserved  =  reserved_offset + reserved_scale x predicted reserved
    measured max_memory_allocated =  predicted allocated + allocated_offset

by least squares over the points (`fit_calibration`, pure arithmetic, tested on CPU). Predictions
on that device then use the fit (`Calibration.reserved`). The file lives in the user cache, one per
device name (`calibration_path`), or where `--calibration` says.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from fcs_data._cache import cache_dir
from fcs_data.atomic import write_text_atomic
from fcs_train.config import TrainConfig
from fcs_train.errors import CalibrationError
from fcs_train.fit.prediction import Prediction, predict
from fcs_train.fit.steps import (
    FCS,
    NullRecorder,
    Setup,
    StepShape,
    build,
    run_config,
    run_training,
    run_validation,
    step_harness,
)

CALIBRATION_VERSION = 1
DEFAULT_OVERHEAD = 1 << 30  # uncalibrated: CUDA context + libraries, 1 GiB (measured 0.3-1 GiB on Ampere and Hopper)
ALLOCATOR_CONF = "expandable_segments:True"


class DeviceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    total_memory: int = Field(description="bytes")
    capability: str = ""
    torch: str = ""
    cuda: str = ""


class CalibrationPoint(BaseModel):
    """One configuration measured on the device and predicted by the trace (bytes)."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int
    num_hist: int
    frameskip: int
    phase: str = Field(description="train or validation")
    measured_allocated: int
    measured_reserved: int
    predicted_allocated: int
    predicted_reserved: int
    fragmentation: int = Field(default=0, description="measured reserved - allocated at the end of the phase")


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fcs_calibration: int = CALIBRATION_VERSION
    device: DeviceInfo
    overhead_bytes: int = Field(description="device memory in use outside the caching allocator")
    allocated_offset: int = 0
    reserved_offset: float = 0.0
    reserved_scale: float = 1.0
    allocator_conf: str = ALLOCATOR_CONF
    points: list[CalibrationPoint] = Field(default_factory=list)
    created: str = ""

    def reserved(self, predicted: int) -> int:
        """The `max_memory_reserved` this device would read for a predicted reserved peak."""
        return round(self.reserved_offset + self.reserved_scale * predicted)

    def allocated(self, predicted: int) -> int:
        return predicted + self.allocated_offset

    def errors(self) -> list[float]:
        """Relative error of the calibrated prediction at each point (against measured reserved)."""
        return [self.reserved(p.predicted_reserved) / p.measured_reserved - 1 for p in self.points
                if p.measured_reserved]


def fit_calibration(points: Sequence[CalibrationPoint], device: DeviceInfo, overhead_bytes: int) -> Calibration:
    """Least-squares fit of measured against predicted reserved memory (an offset alone from one
    point or from points of one size), and the median allocated offset."""
    if not points:
        raise CalibrationError("no measurements to calibrate from")
    x = np.array([p.predicted_reserved for p in points], np.float64)
    y = np.array([p.measured_reserved for p in points], np.float64)
    if len(points) >= 2 and np.ptp(x) > 0:
        scale, offset = np.polyfit(x, y, 1)
    else:
        scale, offset = 1.0, float(np.mean(y - x))
    if scale <= 0:
        raise CalibrationError(f"measured reserved memory does not grow with the predicted one (slope {scale:.3g}); "
                               "the measurements are not usable")
    alloc = int(np.median([p.measured_allocated - p.predicted_allocated for p in points]))
    return Calibration(device=device, overhead_bytes=int(overhead_bytes), allocated_offset=alloc,
                       reserved_offset=float(offset), reserved_scale=float(scale), points=list(points),
                       created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def calibration_path(device_name: str) -> Path:
    """Where the calibration of a device (by its name, e.g. "NVIDIA RTX A5000") is kept."""
    return cache_dir() / "fit" / f"{device_slug(device_name)}.json"


def save_calibration(cal: Calibration, path: Path | None = None) -> Path:
    return write_text_atomic(path or calibration_path(cal.device.name), cal.model_dump_json(indent=2))


def load_calibration(path: Path) -> Calibration:
    try:
        cal = Calibration.model_validate_json(path.read_text())
    except OSError as e:
        raise CalibrationError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CalibrationError(f"{path}: not an fcs calibration file ({str(e).splitlines()[0]})") from None
    if cal.fcs_calibration != CALIBRATION_VERSION:
        raise CalibrationError(f"{path}: calibration version {cal.fcs_calibration}, this fcs reads "
                               f"{CALIBRATION_VERSION}; run fcs fit --calibrate again")
    return cal


def find_calibration(device_name: str) -> Calibration | None:
    """The kept calibration of `device_name`, or None."""
    path = calibration_path(device_name)
    return load_calibration(path) if path.exists() else None


# -- on the GPU ----------------------------------------------------------------------------------------
def configure_allocator() -> str:
    """`PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` unless the user set it; returns the setting in force.

    Expandable segments let freed memory be reused by requests of any size, the standard remedy for
    fragmentation (the users' validation peaked 17 % above training). Takes effect if CUDA has not
    allocated yet; otherwise it is applied to the running allocator.
    """
    if "PYTORCH_CUDA_ALLOC_CONF" in os.environ:
        return os.environ["PYTORCH_CUDA_ALLOC_CONF"]
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOCATOR_CONF
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.memory._set_allocator_settings(ALLOCATOR_CONF)
    return ALLOCATOR_CONF


def device_info(device: torch.device) -> DeviceInfo:
    props = torch.cuda.get_device_properties(device)
    return DeviceInfo(name=props.name, total_memory=int(props.total_memory), capability=f"{props.major}.{props.minor}",
                      torch=torch.__version__, cuda=str(torch.version.cuda))


def outside_allocator(device: torch.device) -> int:
    """Device memory in use that the caching allocator did not reserve (context, modules, handles)."""
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free - torch.cuda.memory_reserved(device))


def measure(cfg: TrainConfig, shape: StepShape, setup: Setup = FCS, device: torch.device | None = None
            ) -> dict[str, dict[str, int]]:
    """Real training steps and validation on the GPU, as the prediction traces them: per phase
    `max_memory_allocated`, `max_memory_reserved`, fragmentation, and the memory outside the allocator."""
    if not torch.cuda.is_available():
        raise CalibrationError("calibration needs a CUDA GPU (torch.cuda.is_available() is False here)")
    device = device or torch.device("cuda", torch.cuda.current_device())
    run_cfg = run_config(cfg, shape, setup, "cuda")
    model = build(run_cfg, shape).to(device)
    trainer = step_harness(run_cfg, model, foreach=None, device=device)  # CUDA's own default: foreach
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()

    def read() -> dict[str, int]:
        torch.cuda.synchronize(device)
        stats = {"allocated": int(torch.cuda.max_memory_allocated(device)),
                 "reserved": int(torch.cuda.max_memory_reserved(device)),
                 "fragmentation": int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)),
                 "outside": outside_allocator(device)}
        torch.cuda.reset_peak_memory_stats(device)
        return stats

    torch.cuda.reset_peak_memory_stats(device)
    last = run_training(trainer, shape, NullRecorder())  # kept through validation, as the trainer does
    out = {"train": read()}
    run_validation(trainer, shape, NullRecorder(), no_grad=setup.validation_no_grad)
    out["validation"] = read()
    del last, trainer, model
    torch.cuda.empty_cache()
    return out


DEFAULT_SIZES = ((2, 3), (8, 3), (4, 1))  # (batch, num_hist) of a calibration run, frameskip from the config


Measure = Callable[[TrainConfig, StepShape, Setup], dict[str, dict[str, int]]]


def calibration_points(cfg: TrainConfig, sizes: Sequence[tuple[int, int]], setup: Setup, measure_fn: Measure,
                       progress: Callable[[str], None] | None = None) -> tuple[list[CalibrationPoint], int]:
    """`sizes` measured by `measure_fn` (`measure` on a GPU) and predicted here: the points of a fit and
    the largest memory seen outside the allocator."""
    points, overhead = [], 0
    for batch, num_hist in sizes:
        shape = StepShape(batch, num_hist, cfg.data.frameskip)
        measured = measure_fn(cfg, shape, setup)
        pred: Prediction = predict(cfg, shape, setup)
        for phase, est in (("train", pred.train), ("validation", pred.validation)):
            m = measured[phase]
            overhead = max(overhead, m.get("outside", 0))
            points.append(CalibrationPoint(batch_size=batch, num_hist=num_hist, frameskip=shape.frameskip,
                                           phase=phase, measured_allocated=m["allocated"],
                                           measured_reserved=m["reserved"], predicted_allocated=est.allocated,
                                           predicted_reserved=est.reserved, fragmentation=m.get("fragmentation", 0)))
        if progress:
            progress(f"batch {batch}, num_hist {num_hist}: measured {measured['train']['reserved'] / 2**30:.2f} GiB "
                     f"reserved, predicted {pred.train.reserved / 2**30:.2f} GiB")
    return points, overhead


def calibrate(cfg: TrainConfig, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, *, setup: Setup = FCS,
              device: torch.device | None = None, progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure `sizes` on the GPU, predict them here, fit the calibration (not saved: `save_calibration`)."""
    configure_allocator()
    if not torch.cuda.is_available():
        raise CalibrationError("calibration needs a CUDA GPU (torch.cuda.is_available() is False here)")
    device = device or torch.device("cuda", torch.cuda.current_device())
    points, overhead = calibration_points(cfg, sizes, setup, lambda c, sh, se: measure(c, sh, se, device), progress)
    return fit_calibration(points, device_info(device), overhead)
