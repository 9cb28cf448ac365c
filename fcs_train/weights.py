"""Loading a weights file the user names (DINOv2, VGG16) into a module: strict, and failing with the file named.

A leaf module (torch and `fcs_data.errors` only), so the models and the metrics use it without
depending on checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fcs_data.errors import UnreadableFileError


def load_weights_into(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str, *,
                      ignore_unexpected: bool = False) -> None:
    """Load a user's weights file (already read) into `module`; `UnreadableFileError` naming the
    file and the first tensors that are missing, misshapen or (unless ignored) unexpected."""
    own = module.state_dict()
    wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and getattr(v, "shape", None) != own[k].shape}
    if wrong:
        raise UnreadableFileError(path, f"not a {what} state dict: tensors of the wrong shape "
                                        f"(file, expected): {dict(list(wrong.items())[:5])}")
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or (unexpected and not ignore_unexpected):
        raise UnreadableFileError(path, f"not a {what} state dict (missing {missing[:5]}, "
                                        f"unexpected {[] if ignore_unexpected else unexpected[:5]})")
