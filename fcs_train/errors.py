"""Errors of training, checkpoints and planning that a user can receive (every one an `FcsError`).

`fcs_data.errors` holds the data library's; this module holds the rest, so
`from fcs_train.errors import TrainError, CheckpointError, ...` reaches any of them.
"""

from __future__ import annotations

from fcs_data.errors import FcsError


class TrainError(FcsError):
    """The run cannot go on; the message says why and where."""


class NonFiniteLoss(TrainError):
    """A loss or an input of the run is NaN or Inf; the message names the step and the windows."""


class ReferenceImportError(FcsError):
    """The file is not a reference DINO-WM checkpoint this importer can read, or a flag contradicts it."""
