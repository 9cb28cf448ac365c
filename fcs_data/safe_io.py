"""Reading logger files without executing them.

`.pth` files go through `torch.load(weights_only=True)`; `.pkl` files through an unpickler that
admits plain data only (builtins containers and scalars, numpy arrays and scalars). Anything else
raises `UnsafePickleError` naming the file and the refused global, before it can run.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from fcs_data.errors import FcsError, UnreadableFileError, UnsafePickleError
from fcs_data.pickle_scan import AllowlistUnpickler

_PLAIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol <= 2 pickles bytes as _codecs.encode(str, "latin1")
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 out-of-band arrays
        ("numpy._core.numeric", "_frombuffer"),
    }
)
_NUMPY_DTYPE_MODULES = ("numpy.dtypes", "numpy")


class _PlainDataUnpickler(AllowlistUnpickler):
    def resolve(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS or (module in _NUMPY_DTYPE_MODULES and name.endswith("DType")):
            return pickle.Unpickler.find_class(self, module, name)
        return None


def load_pickle(path: str | Path) -> Any:
    """Unpickle plain data from `path`; refuse (without running) anything that names code."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _PlainDataUnpickler(f, path).load()
    except (FcsError, FileNotFoundError):
        raise
    except Exception as e:  # unpickling a user's bytes can raise anything; it means "unreadable"
        raise UnreadableFileError(path, f"{type(e).__name__}: {e}") from e


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def load_failure(path: str | Path, e: BaseException) -> UnreadableFileError | UnsafePickleError:
    """What a failed `torch.load(path, weights_only=True)` means, in words that name the file.

    torch reports a file cut off while being written or copied as an "internal miniz error", and any
    other undecodable file with advice to retry with `weights_only=False`: never advice to give
    about a file from a user. A refused global is `UnsafePickleError`; everything else is
    `UnreadableFileError` saying truncated, corrupt, empty, or not a torch.save file.
    """
    path = Path(path)
    text = _ANSI.sub("", str(e))
    refused = re.search(r"GLOBAL ([\w.]+)", text) if isinstance(e, pickle.UnpicklingError) else None
    if refused:
        return UnsafePickleError(path, f"global {refused.group(1)}")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        size, head = -1, b""
    if size == 0:
        return UnreadableFileError(path, "the file is empty")
    if head.startswith(b"PK"):
        if "central directory" in text or isinstance(e, OSError | EOFError):
            return UnreadableFileError(path, f"truncated: its zip archive ends early ({size:,} bytes); the file was "
                                             "cut off while being written or copied; write or copy it again")
        return UnreadableFileError(path, "corrupt: its zip archive fails its own checks; write or copy it again")
    if head.startswith(b"\x80"):
        if isinstance(e, EOFError | IndexError) or "ran out of input" in text.lower():
            return UnreadableFileError(path, f"truncated: the pickle ends early ({size:,} bytes)")
        reason = next((line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")), "")
        return UnreadableFileError(path, "not a torch.save file of tensors" + (f" ({reason})" if reason else ""))
    return UnreadableFileError(path, "not a torch.save file (neither a zip archive nor a pickle)")


def _load_weights_only(path: Path, *, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` whose failures name the file (`load_failure`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # a plain pickle given as a .pth: torch warns, fcs reports what it holds
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except (FcsError, FileNotFoundError):
        raise
    except Exception as e:  # torch.load of a user's bytes can raise anything; it means "unreadable"
        raise load_failure(path, e) from e


def load_tensor(path: str | Path, *, mmap: bool = False) -> torch.Tensor:
    """`torch.load(path, weights_only=True)`, expecting one tensor.

    With `mmap=True` the storage is memory-mapped (files written by `torch.save` since 1.6), so
    slicing a few frames out of a long episode reads only those pages; older files fall back to a
    full read.
    """
    path = Path(path)
    obj = _load_weights_only(path, mmap=mmap)
    if not isinstance(obj, torch.Tensor):
        raise UnreadableFileError(path, f"expected one tensor, found {type(obj).__name__}")
    return obj


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`, expecting a dict (a weights file such as a VGG16 or
    DINOv2 state dict); what it holds is checked by whoever loads it into a module."""
    path = Path(path)
    obj = _load_weights_only(path)
    if not isinstance(obj, dict):
        raise UnreadableFileError(path, f"expected a state dict, found {type(obj).__name__}")
    return obj
