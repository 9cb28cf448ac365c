"""`PlanningServer` (`fcs serve`): plans for a simulator or robot process over a WebSocket.

Protocol (docs/PLANNING.md): on connect the server sends its metadata; then each binary msgpack
request `{"cmd": ...}` gets one reply `{"ok": true, ...}` or `{"ok": false, "error": ..., "code": ...}`.
Commands: `set_goal {image, proprio, channel_order?}`, `plan {image, proprio, executed_actions?,
channel_order?}`, `reset`, `info`. Every message is validated (wire format, fields, image shape,
dtype and channel order, proprio dims, real finite values inside `input_range` x the training
range) and a bad one is answered with a coded error (`bad_message`, `bad_request`, `plan_failed`,
`timeout`) while the connection and the server stay up; a failed request leaves the connection's
goal, history and warm start as they were. Pickled messages are refused; a message over the size limit
closes that connection (WebSocket close code 1009), never the server.

Each connection has its own planner state (goal, history, warm start); the model is shared and one
planning request runs at a time. A plan runs in a worker thread: when its client disconnects or it
runs past `plan_timeout`, it is cancelled at the solver's next iteration, so nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fcs_data._version import __version__
from fcs_train.planning.bundle import PlanningModel
from fcs_train.planning.config import PlanConfig
from fcs_train.planning.errors import PlanCancelled, PlanFailed, PlanInputError
from fcs_train.planning.mpc import Planner
from fcs_train.planning.wire import PROTOCOL, WireError, pack, unpack

log = logging.getLogger("fcs.serve")

FIELDS: dict[str, tuple[set[str], set[str]]] = {  # command -> (required, optional) fields
    "set_goal": ({"image", "proprio"}, {"channel_order"}),
    "plan": ({"image", "proprio"}, {"executed_actions", "channel_order"}),
    "reset": (set(), set()),
    "info": (set(), set()),
}


class _Refused(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def _error(message: str, code: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "code": code}


def _check_fields(message: dict[str, Any]) -> str:
    cmd = message.get("cmd")
    if not isinstance(cmd, str) or cmd not in FIELDS:
        shown = repr(cmd) if isinstance(cmd, str | int | float | bool | None) else f"of type {type(cmd).__name__}"
        raise _Refused(f"cmd {shown}: cmd is one of the strings {', '.join(FIELDS)}", "bad_request")
    required, optional = FIELDS[cmd]
    fields = {k if isinstance(k, str) else repr(k) for k in message} - {"cmd"}
    if missing := required - fields:
        raise _Refused(f"{cmd}: missing {', '.join(sorted(missing))}", "bad_request")
    if unknown := fields - required - optional:
        raise _Refused(f"{cmd}: unknown field(s) {', '.join(sorted(unknown))}; {cmd} takes "
                       f"{', '.join(sorted(required | optional)) or 'nothing'}", "bad_request")
    order = message.get("channel_order", "RGB")
    if not isinstance(order, str):
        raise _Refused(f"{cmd}: channel_order must be a string, RGB or BGR", "bad_request")
    return cmd


class PlanningServer:
    """Serve `Planner`s of one model. `max_message_bytes`: larger messages close their connection."""

    def __init__(self, bundle: PlanningModel, config: PlanConfig, *, plan_timeout: float = 300.0,
                 max_message_bytes: int | None = None):
        self.bundle, self.config, self.plan_timeout = bundle, config, plan_timeout
        h, w, c = bundle.image_shape
        self.max_message_bytes = max_message_bytes or 4 * h * w * c + (1 << 20)
        self.plans = 0
        self._lock: asyncio.Lock | None = None
        self._space = Planner(bundle, config).space  # for the metadata's bounds

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {"type": "metadata", "protocol": PROTOCOL, "fcs": __version__, **self.bundle.describe(),
                "planner": {"solver": cfg.solver, "horizon": cfg.horizon, "execute_steps": cfg.execute_steps,
                            "alpha": cfg.alpha, "horizon_weighting": cfg.horizon_weighting,
                            "bounds": self._space.describe()},
                "max_message_bytes": self.max_message_bytes, "plan_timeout": self.plan_timeout}

    # -- connections -----------------------------------------------------------------------------
    async def _connection(self, ws: ServerConnection) -> None:
        peer = ":".join(map(str, ws.remote_address[:2])) if ws.remote_address else "?"
        planner = Planner(self.bundle, self.config)
        log.info("%s connected", peer)
        try:
            await ws.send(pack(self.metadata()))
            async for raw in ws:
                reply = await self._answer(ws, planner, raw, peer)
                if reply is not None:
                    await ws.send(pack(reply))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else (e.sent.code if e.sent is not None else None)
            if code == 1009:
                log.warning("%s sent a message over %d bytes: connection closed (1009)", peer, self.max_message_bytes)
            elif code not in (1000, 1001):
                log.info("%s left (%s)", peer, e)
        log.info("%s disconnected", peer)

    async def _answer(self, ws: ServerConnection, planner: Planner, raw: bytes | str, peer: str) -> dict | None:
        try:
            message = unpack(raw)
            cmd = _check_fields(message)
            if cmd == "info":
                return {"ok": True, **self.metadata(), "type": "info", "state": planner.state()}
            if cmd == "reset":
                planner.reset()
                return {"ok": True}
            order = message.get("channel_order", "RGB")
            if cmd == "set_goal":
                warnings = await self._run(ws, lambda _: planner.reset(message["image"], message["proprio"], order))
                for w in warnings:
                    log.warning("%s goal: %s", peer, w)
                return {"ok": True, "warnings": warnings}
            result = await self._run(ws, lambda cancel: planner.plan(
                message["image"], message["proprio"], message.get("executed_actions"), order, cancel=cancel))
            self.plans += 1
            log.info("%s plan %d: cost %.5g, %d iterations, %d rollouts, %.2f s, %d context frame(s)%s", peer,
                     self.plans, result.cost, result.iterations, result.rollouts, result.seconds,
                     result.context_frames, f" [{result.stopped}]" if result.stopped != "budget" else "")
            for w in result.warnings:
                log.warning("%s plan %d: %s", peer, self.plans, w)
            return {"ok": True, "actions": result.actions, "plan": result.plan, "cost": result.cost,
                    "seconds": result.seconds, "iterations": result.iterations, "rollouts": result.rollouts,
                    "grad_rollouts": result.grad_rollouts, "flops": result.flops, "warm": result.warm,
                    "stopped": result.stopped, "context_frames": result.context_frames, "warnings": result.warnings}
        except WireError as e:
            log.warning("%s: refused a message: %s", peer, e)
            return _error(str(e), "bad_message")
        except _Refused as e:
            log.warning("%s: %s", peer, e)
            return None if e.code == "gone" else _error(str(e), e.code)
        except PlanInputError as e:
            log.warning("%s: %s", peer, e)
            return _error(str(e), "bad_request")
        except PlanFailed as e:
            log.warning("%s: plan failed: %s", peer, e)
            return _error(str(e), "plan_failed")
        except Exception as e:  # the server answers and stays up, whatever went wrong
            log.exception("%s: internal error", peer)
            return _error(f"internal error ({type(e).__name__}: {e})", "internal")

    async def _run(self, ws: ServerConnection, work: Callable[[threading.Event], Any]) -> Any:
        """`work(cancel)` in a worker thread, one at a time; cancelled when the client leaves or time runs out."""
        assert self._lock is not None
        async with self._lock:
            cancel = threading.Event()
            task = asyncio.ensure_future(asyncio.to_thread(work, cancel))
            closed = asyncio.ensure_future(ws.wait_closed())
            t0 = time.perf_counter()
            done, _ = await asyncio.wait({task, closed}, timeout=self.plan_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                closed.cancel()
                return task.result()
            cancel.set()
            with contextlib.suppress(PlanCancelled):
                await task  # the solver stops at its next iteration
            if closed in done:
                log.info("client left mid-plan: cancelled after %.1f s", time.perf_counter() - t0)
                raise _Refused("client left", "gone")
            closed.cancel()
            raise _Refused(f"the plan ran past plan_timeout = {self.plan_timeout:g} s and was cancelled; lower the "
                           "budget (cem.samples, cem.iterations) or raise --plan-timeout", "timeout")

    @contextlib.contextmanager
    def in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve from a background thread (port 0: any free one); yields the URI, stops on exit."""
        stop, ready, failed = threading.Event(), [], []

        def run() -> None:
            try:
                asyncio.run(self.serve(host, port, stop=stop, on_ready=ready.append))
            except BaseException as e:  # reported to the caller below
                failed.append(e)

        thread = threading.Thread(target=run, daemon=True, name="fcs-serve")
        thread.start()
        while not ready and thread.is_alive():
            thread.join(0.02)
        if not ready:
            raise failed[0] if failed else RuntimeError("the planning server did not start")
        try:
            yield f"ws://{host}:{ready[0]}"
        finally:
            stop.set()
            thread.join(60)

    async def serve(self, host: str = "127.0.0.1", port: int = 8765, *, stop: threading.Event | None = None,
                    on_ready: Callable[[int], None] | None = None) -> None:
        """Serve until `stop` is set (or forever). `on_ready(port)` is called once listening (port 0: any)."""
        self._lock = asyncio.Lock()
        async with serve(self._connection, host, port, max_size=self.max_message_bytes, compression=None,
                         ping_interval=20, ping_timeout=60) as server:
            bound = server.sockets[0].getsockname()[1] if server.sockets else port
            if on_ready is not None:
                on_ready(bound)
            if stop is None:
                await asyncio.Future()
            else:
                await asyncio.to_thread(stop.wait)
