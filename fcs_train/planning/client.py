"""`PlannerClient`: ask an `fcs serve` planning server for actions, from Isaac Sim's own Python.

This module needs only numpy, msgpack and websockets (no torch), so it runs in Isaac Sim's bundled
Python: there, `pip install numpy msgpack websockets` and `pip install --no-deps fcs` (the packages
import lazily, so nothing heavier is loaded). The wire format (msgpack, arrays as raw bytes, never
pickle) is `fcs_train.planning.wire`, the one module the server and this client share; the protocol
is in docs/PLANNING.md.

    with PlannerClient("ws://127.0.0.1:8765") as planner:
        planner.set_goal(goal_rgb, goal_ee_pos)
        actions = planner.plan(rgb, ee_pos)                  # (frameskip, A) raw actions
        ...execute them...
        actions = planner.plan(rgb, ee_pos, executed_actions=what_was_executed)
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fcs_train.planning.wire import PROTOCOL, WireError, pack, unpack

__all__ = ["PROTOCOL", "PlannerClient", "PlannerError", "PlannerWarning", "WireError", "pack", "unpack"]


class PlannerError(RuntimeError):
    """The server answered a request with an error (its message says which field and why)."""


class PlannerWarning(UserWarning):
    """A warning the server attached to an answer (out-of-distribution proprio, a scene unlike training...)."""


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
