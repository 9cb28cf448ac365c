"""`fcs fit`: peak GPU memory of training, validation and planning, predicted on any machine (issue 21).

    from fcs_train.fit import StepShape, predict, Budget, parse_bytes
    pred = predict(cfg, StepShape(batch_size=8, num_hist=3, frameskip=5))
    Budget("A5000", parse_bytes("24GiB")).fits_run(pred)

Modules: `kernels` (the CUDA kernel choices emulated on CPU), `tracker` (live storages of a step),
`allocator` (the CUDA caching allocator replayed), `steps` (the trainer's and planner's steps),
`prediction` (traces -> peaks; `Sweep` over batch size and frameskip), `calibration` (a GPU's
measured offsets), `report` (the table), `plots` (the PNG), `preflight` (`fcs train`'s check).
"""

from fcs_train.fit.calibration import (
    Calibration,
    CalibrationError,
    calibrate,
    fit_calibration,
    load_calibration,
)
from fcs_train.fit.plots import save_fit_png
from fcs_train.fit.prediction import Estimate, FitError, Prediction, Sweep, TraceMismatch, predict
from fcs_train.fit.preflight import DoesNotFit, MemoryCheck, check_memory
from fcs_train.fit.report import Budget, Episodes, FitReport, fit_report, parse_bytes
from fcs_train.fit.steps import FCS, REFERENCE, Setup, StepShape

__all__ = [
    "FCS",
    "REFERENCE",
    "Budget",
    "Calibration",
    "CalibrationError",
    "DoesNotFit",
    "Episodes",
    "Estimate",
    "FitError",
    "FitReport",
    "MemoryCheck",
    "Prediction",
    "Setup",
    "StepShape",
    "Sweep",
    "TraceMismatch",
    "calibrate",
    "check_memory",
    "fit_calibration",
    "fit_report",
    "load_calibration",
    "parse_bytes",
    "predict",
    "save_fit_png",
]
