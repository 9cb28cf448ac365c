"""The planning server with a real client over a localhost socket."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import modules_after
from websockets.exceptions import ConnectionClosed

from fcs_data.store import open_store
from fcs_train.planning.bundle import load_planning_model
from fcs_train.planning.client import PlannerClient, PlannerError, PlannerWarning, pack, unpack
from fcs_train.planning.config import load_plan_config
from fcs_train.planning.server import PlanningServer

SMALL = ["cem.samples=16", "cem.topk=4", "cem.iterations=2", "horizon=2"]
ENDLESS = ["cem.samples=16", "cem.topk=4", "cem.iterations=100000000", "horizon=2"]  # only a cancel ends it


@pytest.fixture(scope="module")
def bundle(planning_fs2: tuple[Path, Path]):
    return load_planning_model(planning_fs2[1], device="cpu")


@pytest.fixture(scope="module")
def episode(planning_fs2: tuple[Path, Path]):
    s = open_store(planning_fs2[0])
    n = int(s.episode_lengths[0])
    return s.read_frames(np.arange(n)), s.read_rows("state", 0, n)[:, s.layout.proprio_slice]


@contextlib.contextmanager
def running(server: PlanningServer) -> Iterator[str]:
    """The server on a free localhost port in a thread; yields its URI and stops it afterwards."""
    stop, ready = threading.Event(), []
    thread = threading.Thread(target=lambda: asyncio.run(server.serve("127.0.0.1", 0, stop=stop,
                                                                      on_ready=ready.append)), daemon=True)
    thread.start()
    while not ready and thread.is_alive():
        thread.join(0.05)
    try:
        yield f"ws://127.0.0.1:{ready[0]}"
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def _server(bundle, overrides=SMALL, **kw) -> PlanningServer:
    return PlanningServer(bundle, load_plan_config(overrides=overrides), **kw)


def test_a_client_sets_a_goal_plans_and_reads_the_metadata(bundle, episode):
    frames, proprio = episode
    with running(_server(bundle)) as uri, PlannerClient(uri, timeout=60) as client:
        meta = client.metadata
        assert meta["image"] == {"shape": [*frames.shape[1:]], "dtype": "uint8", "channel_order": "RGB"}
        assert meta["action"]["frameskip"] == 2 and meta["action"]["fields"][0]["name"] == "joint_target"
        assert client.set_goal(frames[20], proprio[20]) == []
        actions = client.plan(frames[0], proprio[0])
        assert actions.shape == (2, 9) and actions.dtype == np.float32
        reply = client.last_reply
        assert reply["plan"].shape == (4, 9) and np.isfinite(reply["cost"]) and reply["seconds"] > 0
        client.plan(frames[2], proprio[2], executed_actions=actions)
        assert client.info()["state"] == {"goal": True, "context_frames": 2, "plans": 2}
        client.reset()
        assert client.info()["state"] == {"goal": False, "context_frames": 0, "plans": 0}


def test_warnings_reach_the_client(bundle, episode):
    frames, _ = episode
    with running(_server(bundle)) as uri, PlannerClient(uri, timeout=60) as client, \
            pytest.warns(PlannerWarning) as caught:
        returned = client.set_goal(frames[20], np.zeros(3))
    messages = [str(w.message) for w in caught]
    assert messages == returned and len(messages) == 2
    assert "all zeros" in messages[0] and "ee_pos[0]" in messages[1]


def test_malformed_messages_get_error_replies_and_the_connection_stays_up(bundle, episode):
    frames, proprio = episode
    bad = [
        ("text", "{\"cmd\": \"plan\"}", "bad_message", "text message"),
        ("garbage", b"\xc1\xc1", "bad_message", "not a msgpack"),
        ("pickle", pickle.dumps({"cmd": "set_goal", "image": frames[0], "proprio": proprio[0]}), "bad_message",
         "pickle"),
        ("unknown cmd", pack({"cmd": "plan_all"}), "bad_request", "cmd 'plan_all'"),
        ("missing", pack({"cmd": "set_goal", "image": frames[0]}), "bad_request", "missing proprio"),
        ("users' field", pack({"cmd": "set_goal", "image": frames[0], "ee_pos": proprio[0], "proprio": proprio[0]}),
         "bad_request", "unknown field"),
        ("no goal", pack({"cmd": "plan", "image": frames[0], "proprio": proprio[0]}), "bad_request", "no goal"),
        ("shape", pack({"cmd": "set_goal", "image": frames[0][:10], "proprio": proprio[0]}), "bad_request", "shape"),
        ("dtype", pack({"cmd": "set_goal", "image": frames[0].astype(np.float32), "proprio": proprio[0]}),
         "bad_request", "uint8"),
        ("nan", pack({"cmd": "set_goal", "image": frames[0], "proprio": np.array([0.1, np.nan, 0.2])}),
         "bad_request", "nan"),
        ("order", pack({"cmd": "set_goal", "image": frames[0], "proprio": proprio[0], "channel_order": "RGBA"}),
         "bad_request", "channel_order"),
    ]
    with running(_server(bundle)) as uri, PlannerClient(uri, timeout=60) as client:
        for name, message, code, text in bad:
            client._ws.send(message)
            reply = unpack(client._ws.recv(timeout=60))
            assert reply["ok"] is False, name
            assert reply["code"] == code and text in reply["error"], (name, reply)
        client.set_goal(frames[20], proprio[20])
        assert client.plan(frames[0], proprio[0]).shape == (2, 9)


def test_an_oversized_message_closes_only_its_connection(bundle, episode):
    frames, proprio = episode
    server = _server(bundle)
    with running(server) as uri:
        client = PlannerClient(uri, timeout=60)
        client._ws.send(pack({"cmd": "set_goal", "image": np.zeros(server.max_message_bytes + 1, np.uint8),
                              "proprio": proprio[0]}))
        with pytest.raises(ConnectionClosed) as closed:
            client._ws.recv(timeout=60)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with PlannerClient(uri, timeout=60) as other:
            assert other.set_goal(frames[20], proprio[20]) == []


def test_a_client_leaving_mid_plan_cancels_it_and_the_next_client_is_served(bundle, episode, caplog):
    frames, proprio = episode
    caplog.set_level(logging.INFO, logger="fcs.serve")
    with running(_server(bundle, ENDLESS)) as uri:
        leaving = PlannerClient(uri, timeout=60)
        leaving.set_goal(frames[20], proprio[20])
        leaving._ws.send(pack({"cmd": "plan", "image": frames[0], "proprio": proprio[0]}))
        leaving.close()  # without waiting for the answer
        with PlannerClient(uri, timeout=60) as next_client:  # waits for the one planning slot
            assert next_client.set_goal(frames[20], proprio[20]) == []
            assert next_client.info()["state"]["goal"] is True
    assert any("left mid-plan" in r.getMessage() for r in caplog.records)


def test_a_plan_past_its_time_limit_is_cancelled_with_an_error_reply(bundle, episode):
    frames, proprio = episode
    with running(_server(bundle, ENDLESS, plan_timeout=0.5)) as uri, PlannerClient(uri, timeout=60) as client:
        client.set_goal(frames[20], proprio[20])
        with pytest.raises(PlannerError, match="plan_timeout"):
            client.plan(frames[0], proprio[0])
        assert client.last_reply["code"] == "timeout"
        assert client.info()["state"]["goal"] is True


def _ask(client: PlannerClient, message: dict | bytes) -> dict:
    client._ws.send(message if isinstance(message, bytes) else pack(message))
    return unpack(client._ws.recv(timeout=60))


def test_a_hostile_client_gets_coded_errors_never_internal_and_the_session_is_left_as_it_was(bundle, episode, caplog):
    frames, proprio = episode
    actions = np.zeros((2, 9), np.float32)
    huge_actions = np.full((2, 9), 3e38, np.float32)
    hostile = [
        ({"cmd": {"plan": 1}}, "cmd of type dict"),
        ({"cmd": [1, 2]}, "cmd of type list"),
        ({"cmd": 7}, "cmd 7"),
        (pack({"cmd": "set_goal", b"image": 1, "image": frames[0], "proprio": proprio[0]}),  # a bytes key beside its str twin
         "unknown field(s) b'image'"),
        ({"cmd": "set_goal", "image": frames[20], "proprio": np.array([1e30, 0.0, 0.3])}, "goal proprio: ee_pos[0]"),
        ({"cmd": "set_goal", "image": frames[20], "proprio": proprio[20] + 0j}, "complex"),
        ({"cmd": "set_goal", "image": frames[20], "proprio": np.array([True, False, True])}, "boolean"),
        ({"cmd": "plan", "image": frames[2], "proprio": np.array([1e300, 0.0, 0.3])}, "observation proprio: ee_pos[0]"),
        ({"cmd": "plan", "image": frames[2], "proprio": proprio[2], "executed_actions": huge_actions},
         "executed_actions: row 0 joint_target[0] = 3e+38"),
        ({"cmd": "plan", "image": frames[2], "proprio": proprio[2], "executed_actions": actions + 1e30},
         "outside"),
        ({"cmd": "plan", "image": frames[2], "proprio": proprio[2], "executed_actions": actions.astype(np.complex64)},
         "complex"),
        ({"cmd": "plan", "image": frames[2].astype(bool), "proprio": proprio[2]}, "dtype bool"),
        ({"cmd": "plan", "image": frames[2], "proprio": [[0.1, 0.2], [0.3]]}, "not a numeric array"),
        ({"cmd": "plan", "image": frames[2], "proprio": {"x": 1.0}}, "object"),
    ]
    caplog.set_level(logging.INFO, logger="fcs.serve")
    with running(_server(bundle)) as uri, PlannerClient(uri, timeout=60) as client:
        client.set_goal(frames[20], proprio[20])
        first = client.plan(frames[0], proprio[0])
        before = client.info()["state"]
        assert before == {"goal": True, "context_frames": 1, "plans": 1}
        for message, text in hostile:
            reply = _ask(client, message)
            assert reply["ok"] is False and reply["code"] == "bad_request", (text, reply)
            assert text in reply["error"], (text, reply["error"])
            assert client.info()["state"] == before, text  # the goal, the history and the plan count unchanged
        assert client.plan(frames[2], proprio[2], executed_actions=first).shape == (2, 9)
        assert client.info()["state"] == {"goal": True, "context_frames": 2, "plans": 2}
    assert not [r for r in caplog.records if "internal" in r.getMessage() or r.exc_info]


def test_a_plan_that_finds_nothing_finite_is_a_plan_failed_error_and_leaves_the_history_alone(bundle, episode):
    frames, proprio = episode
    broken = copy.deepcopy(bundle)
    with torch.no_grad():
        for p in broken.model.predictor.parameters():
            p.fill_(float("nan"))
    with running(_server(broken)) as uri, PlannerClient(uri, timeout=60) as client:
        client.set_goal(frames[20], proprio[20])
        for _ in range(2):
            reply = _ask(client, {"cmd": "plan", "image": frames[0], "proprio": proprio[0]})
            assert reply["code"] == "plan_failed" and "NaN or infinite" in reply["error"]
            assert client.info()["state"] == {"goal": True, "context_frames": 0, "plans": 0}


def test_a_refused_goal_keeps_the_goal_and_episode_that_were_set(bundle, episode):
    frames, proprio = episode
    with running(_server(bundle)) as uri, PlannerClient(uri, timeout=60) as client:
        client.set_goal(frames[20], proprio[20])
        client.plan(frames[0], proprio[0])
        reply = _ask(client, {"cmd": "set_goal", "image": frames[10][:, :5], "proprio": proprio[10]})
        assert reply["code"] == "bad_request"
        assert client.info()["state"] == {"goal": True, "context_frames": 1, "plans": 1}


def test_the_server_imports_neither_the_cli_package_nor_the_client_module():
    loaded = modules_after("import fcs_train.planning.server")
    assert not {"fcs", "fcs.cli", "fcs_train.planning.client"} & loaded
