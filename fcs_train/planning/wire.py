"""The planning protocol's wire format, shared by the server and `PlannerClient` (numpy and msgpack only).

One WebSocket binary message per request and per reply, packed with msgpack (the robot-learning
policy-server convention, as in openpi-client's `msgpack_numpy`); numpy arrays travel as
`{"__ndarray__": true, "data": raw bytes, "dtype": "<f4", "shape": [...]}`. Pickle is never used in
either direction: unpickling a message runs whatever code it names.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL = 1
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: never object, string or structured dtypes


class WireError(ValueError):
    """A message that is not a valid protocol message (not msgpack, a pickle, a bad array)."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"arrays of dtype {obj.dtype} are not sent; only numeric arrays")
        return {"__ndarray__": True, "data": np.ascontiguousarray(obj).tobytes(), "dtype": obj.dtype.str,
                "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if "__ndarray__" not in obj:
        return obj
    if set(obj) != {"__ndarray__", "data", "dtype", "shape"}:
        raise WireError(f"an array needs exactly the keys __ndarray__, data, dtype, shape; got {sorted(map(str, obj))}")
    data, dtype, shape = obj["data"], obj["dtype"], obj["shape"]
    if not isinstance(data, bytes) or not isinstance(dtype, str) or not isinstance(shape, list | tuple):
        raise WireError("an array's data must be bytes, its dtype a string and its shape a list")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as e:
        raise WireError(f"unknown array dtype {dtype!r}") from e
    if dt.kind not in _NUMERIC_KINDS or dt.fields is not None:
        raise WireError(f"array dtype {dtype!r} refused: only numeric arrays are accepted")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise WireError(f"array shape {shape!r} must be a list of non-negative integers")
    count = math.prod(shape)
    if count * dt.itemsize != len(data):
        raise WireError(f"array of shape {tuple(shape)} and dtype {dtype} needs {count * dt.itemsize} bytes, "
                        f"the message holds {len(data)}")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()  # writable, and not a view of the message


def pack(message: dict[str, Any]) -> bytes:
    """A message (a dict of plain values and numpy arrays) -> msgpack bytes."""
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes | str) -> dict[str, Any]:
    """msgpack bytes -> a message dict; `WireError` for text, pickles, bad arrays and anything not a map."""
    if isinstance(data, str):
        raise WireError("text message: send binary msgpack (see docs/PLANNING.md)")
    if len(data) > 1 and data[0] == 0x80 and data[1] <= 5:
        raise WireError("a pickled message: pickle is refused (unpickling runs code); send msgpack "
                        "(fcs_train.planning.wire.pack)")
    try:
        message = msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except WireError:
        raise
    except Exception as e:  # msgpack's own errors: ExtraData, FormatError, StackError, ValueError...
        raise WireError(f"not a msgpack message: {type(e).__name__}: {e}") from None
    if not isinstance(message, dict):
        raise WireError(f"a message must be a map, got {type(message).__name__}")
    return message
