"""`PlannerClient`: ask an `fcs serve` planning server for actions, from Isaac Sim's own Python.

This module needs only numpy, msgpack and websockets (no torch, no fcs), so it runs in Isaac Sim's
bundled Python: `pip install numpy msgpack websockets` there and copy this one file, or install fcs
with `--no-deps`. The protocol (docs/PLANNING.md) follows the robot-learning policy-server
convention: one WebSocket binary message per request and per reply, packed with msgpack; numpy
arrays travel as `{"__ndarray__": true, "data": raw bytes, "dtype": "<f4", "shape": [...]}`. Pickle
is never used in either direction: unpickling a message runs whatever code it names.

    with PlannerClient("ws://127.0.0.1:8765") as planner:
        planner.set_goal(goal_rgb, goal_ee_pos)
        actions = planner.plan(rgb, ee_pos)                  # (frameskip, A) raw actions
        ...execute them...
        actions = planner.plan(rgb, ee_pos, executed_actions=what_was_executed)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PROTOCOL = 1
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: never object, string or structured dtypes


class WireError(ValueError):
    """A message that is not a valid protocol message (not msgpack, a pickle, a bad array)."""


class PlannerError(RuntimeError):
    """The server answered a request with an error (its message says which field and why)."""


class PlannerWarning(UserWarning):
    """A warning the server attached to an answer (out-of-distribution proprio, a scene unlike training...)."""


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
        raise WireError(f"an array needs exactly the keys __ndarray__, data, dtype, shape; got {sorted(obj)}")
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
                        "(fcs_train.planning.client.pack)")
    try:
        message = msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except WireError:
        raise
    except Exception as e:  # msgpack's own errors: ExtraData, FormatError, StackError, ValueError...
        raise WireError(f"not a msgpack message: {type(e).__name__}: {e}") from None
    if not isinstance(message, dict):
        raise WireError(f"a message must be a map, got {type(message).__name__}")
    return message


class PlannerClient:
    """A connection to `fcs serve`. `metadata` says what the server expects (image shape, proprio and
    action fields with units, frameskip, horizon); every call raises `PlannerError` on an error reply."""

    def __init__(self, uri: str = "ws://127.0.0.1:8765", *, timeout: float = 600.0, open_timeout: float = 30.0):
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(connect(uri, open_timeout=open_timeout, max_size=2**26,
                                                     compression=None))
        self.metadata = unpack(self._ws.recv(timeout=open_timeout))
        if self.metadata.get("protocol") != PROTOCOL:
            self.close()
            raise PlannerError(f"the server speaks protocol {self.metadata.get('protocol')}, this client {PROTOCOL}")
        self.last_reply: dict[str, Any] = {}

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            self._ws.send(pack(message))
            reply = unpack(self._ws.recv(timeout=self.timeout))
        except ConnectionClosed as e:
            reason = f": {e.rcvd.reason}" if e.rcvd is not None and e.rcvd.reason else ""
            raise PlannerError(f"the server closed the connection{reason}") from None
        except TimeoutError:
            raise PlannerError(f"no answer within {self.timeout:.0f} s") from None
        self.last_reply = reply
        for text in reply.get("warnings", []):
            warnings.warn(text, PlannerWarning, stacklevel=3)
        if not reply.get("ok"):
            raise PlannerError(reply.get("error", "the server answered with an error and no message"))
        return reply

    def set_goal(self, image: np.ndarray, proprio: np.ndarray, channel_order: str = "RGB") -> list[str]:
        """Start an episode toward this goal: image `(H, W, 3)` uint8, proprio `(P,)` at the goal.
        Returns the server's warnings about the goal (also emitted as `PlannerWarning`)."""
        return self._call({"cmd": "set_goal", "image": np.asarray(image), "proprio": np.asarray(proprio),
                           "channel_order": channel_order}).get("warnings", [])

    def plan(self, image: np.ndarray, proprio: np.ndarray, executed_actions: np.ndarray | None = None,
             channel_order: str = "RGB") -> np.ndarray:
        """Raw actions to execute next, `(k, A)` float32 (k = frameskip x the server's execute_steps).

        executed_actions `(k, A)`: what the robot really executed since the previous plan (None:
        exactly the actions that plan returned). The whole reply (plan, cost, seconds) is `last_reply`.
        """
        message = {"cmd": "plan", "image": np.asarray(image), "proprio": np.asarray(proprio),
                   "channel_order": channel_order}
        if executed_actions is not None:
            message["executed_actions"] = np.asarray(executed_actions)
        return self._call(message)["actions"]

    def reset(self) -> None:
        """Forget the goal, the history and the warm start."""
        self._call({"cmd": "reset"})

    def info(self) -> dict[str, Any]:
        """The server's metadata and state (goal set, context frames, plans so far)."""
        return self._call({"cmd": "info"})

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PlannerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
