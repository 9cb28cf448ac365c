"""The scripts in examples/ keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fcs_data.converters.to_zarr import convert_to_zarr

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("ex") / "s.zarr", workers=1).store


def test_own_training_loop_runs(store: Path) -> None:
    res = subprocess.run([sys.executable, str(EXAMPLES / "own_training_loop.py"), str(store), "--steps", "3",
                          "--workers", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "step 3: train loss" in res.stdout and "val loss" in res.stdout


def test_mpc_client_runs_against_fcs_serve(planning_fs2) -> None:
    store, ckpt = planning_fs2
    server = subprocess.Popen([sys.executable, "-m", "fcs", "serve", "--checkpoint", str(ckpt), "--port", "0",
                               "--set", "cem.samples=8", "--set", "cem.iterations=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        uri = next(line.split()[2] for line in server.stdout if line.startswith("listening on"))
        res = subprocess.run([sys.executable, str(EXAMPLES / "mpc_client.py"), uri, str(store), "--steps", "3"],
                             capture_output=True, text=True, timeout=300)
    finally:
        server.kill()
        server.wait(30)
    assert res.returncode == 0, res.stderr
    assert "step 2: t=4" in res.stdout and "2 context frame(s)" in res.stdout


def test_the_example_planning_config_is_valid_for_the_primitive_layout(planning_run) -> None:
    from fcs_train.planning import Planner, load_plan_config

    cfg = load_plan_config(EXAMPLES / "plan_primitive.yaml")
    space = Planner.from_checkpoint(planning_run[1], cfg, device="cpu").space
    sources = {d["name"]: d["source"] for d in space.describe()}
    assert sources["end_pos[1]"] == "workspace" and sources["end_gripper"].startswith("fixed")
    assert sources["start_pos[0]"].startswith("chained")
