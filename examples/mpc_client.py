"""An MPC client for `fcs serve`, with a logged episode standing in for the simulator.

    fcs serve --checkpoint runs/x/checkpoints/best.pt &
    python examples/mpc_client.py ws://127.0.0.1:8765 STORE [--episode 0] [--steps 10]

In Isaac Sim the observation comes from the camera and the robot, and `executed` is what the
controller really ran. Here the "robot" replays the logged episode: at each step it executes the
logged actions (not the planned ones), so the planner's history is paired with what really ran,
exactly as it must be in a live loop, and the script prints how far each plan is from the log.
The goal is the episode's last frame. Only `PlannerClient` talks to the server; it needs numpy,
msgpack and websockets, nothing else from fcs.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from fcs_data.store import open_store
from fcs_train.planning.client import PlannerClient, PlannerError, PlannerWarning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("uri")
    ap.add_argument("store")
    ap.add_argument("--episode", type=int, default=0)
    ap.add_argument("--steps", type=int, default=10, help="MPC steps")
    args = ap.parse_args()

    store = open_store(args.store)  # the stand-in simulator: frames, EE positions, logged actions
    ep = store.episode(args.episode)
    proprio = np.asarray(ep.state)[:, store.layout.proprio_slice]
    warnings.simplefilter("always", PlannerWarning)

    with PlannerClient(args.uri, timeout=600) as planner:
        meta = planner.metadata
        fields = ", ".join(f"{f['name']} [{f['unit']}]" for f in meta["action"]["fields"])
        print(f"server: {meta['layout']}, image {tuple(meta['image']['shape'])}, actions ({fields}), "
              f"frameskip {meta['action']['frameskip']}, horizon {meta['planner']['horizon']}")
        last = len(ep) - 1
        planner.set_goal(ep.rgb[last], proprio[last])
        t, executed = 0, None
        for step in range(args.steps):
            try:
                actions = planner.plan(ep.rgb[t], proprio[t], executed_actions=executed)
            except PlannerError as e:
                print(f"refused: {e}")
                return
            reply = planner.last_reply
            k = len(actions)
            if t + k > last:
                break
            logged = np.asarray(ep.action[t : t + k])
            print(f"step {step}: t={t} cost {reply['cost']:.4f} in {reply['seconds']:.2f} s, "
                  f"{reply['context_frames']} context frame(s), |planned - logged| {np.abs(actions - logged).mean():.4f}")
            executed = logged  # what the "robot" really ran
            t += k
        planner.reset()


if __name__ == "__main__":
    main()
