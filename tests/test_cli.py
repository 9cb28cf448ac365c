"""The command line: exit codes scripts can trust, messages a person understands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_python
from typer.testing import CliRunner

from fcs.cli import app, parse_episode_spec

runner = CliRunner()


def test_python_m_fcs_help_works() -> None:
    out = subprocess.run([sys.executable, "-m", "fcs", "--help"], capture_output=True, text=True, check=True)
    assert "validate" in out.stdout and "synth" in out.stdout


def test_layouts_lists_the_builtins() -> None:
    res = runner.invoke(app, ["layouts"])
    assert res.exit_code == 0
    assert "franka_cube_stack_v1" in res.output and "franka_cube_stack_min" in res.output
    res = runner.invoke(app, ["layouts", "show", "franka_cube_stack_v1"])
    assert res.exit_code == 0 and "joint_pos" in res.output


def test_synth_then_validate_exits_0(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", str(tmp_path / "d"), "--episodes", "2", "--min-len", "12", "--max-len", "14"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "d"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["counts"]["error"] == 0 and report["num_episodes"] == 2


def test_validate_errors_exit_1_and_name_the_episode(v1: Path) -> None:
    (v1 / "000001" / "obses.pth").unlink()
    res = runner.invoke(app, ["validate", str(v1)])
    assert res.exit_code == 1
    assert "missing-file" in res.output and "episode 1" in res.output and "FAILED" in res.output


def test_warnings_exit_0_unless_strict(v1: Path) -> None:
    t = torch.load(v1 / "states.pth", weights_only=True)
    t[0, 2] = 0
    torch.save(t, v1 / "states.pth")
    assert runner.invoke(app, ["validate", str(v1)]).exit_code == 0
    res = runner.invoke(app, ["validate", str(v1), "--strict"])
    assert res.exit_code == 1 and "zero-state" in res.output


def test_usage_errors_exit_2(v1: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", str(tmp_path / "nope")]).exit_code == 2
    assert runner.invoke(app, ["validate", str(v1), "--episodes", "x"]).exit_code == 2
    assert runner.invoke(app, ["validate", str(v1), "--episodes", "9"]).exit_code == 2
    assert runner.invoke(app, ["validate", str(v1), "--layout", "nope"]).exit_code == 2


def test_episode_spec() -> None:
    assert parse_episode_spec("0-3,7, 9-9") == [0, 1, 2, 3, 7, 9]


def test_convert_writes_a_store_and_reports(pristine_v1: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    res = runner.invoke(app, ["convert", str(pristine_v1), "--to", "zarr", "-o", str(out), "--workers", "1",
                              "--verify"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "verified" in res.output and "peak RSS" in res.output
    res = runner.invoke(app, ["convert", str(pristine_v1), "-o", str(out), "--workers", "1"])
    assert res.exit_code == 1 and "--overwrite" in res.output


def test_convert_refuses_errors_with_the_report(v1: Path, tmp_path: Path) -> None:
    (v1 / "000002" / "obses.pth").unlink()
    res = runner.invoke(app, ["convert", str(v1), "-o", str(tmp_path / "s.zarr"), "--workers", "1"])
    assert res.exit_code == 1
    assert "missing-file" in res.output and "--skip-bad" in res.output
    res = runner.invoke(app, ["convert", str(v1), "-o", str(tmp_path / "s.zarr"), "--workers", "1", "--skip-bad"])
    assert res.exit_code == 0 and "skipped 1 episodes" in res.output and "000002" in res.output


def test_convert_usage_errors_exit_2(pristine_v1: Path) -> None:
    assert runner.invoke(app, ["convert", str(pristine_v1), "--to", "hdf5"]).exit_code == 2
    assert runner.invoke(app, ["convert", str(pristine_v1), "--codec", "brotli"]).exit_code == 2


# ---- never a traceback ----------------------------------------------------------------------------


def _fcs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcs", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def test_garbage_store_metadata_is_one_line_in_info_and_validate(pristine_v1: Path, tmp_path: Path) -> None:
    from fcs_data.converters.to_zarr import convert_to_zarr

    store = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1).store
    (store / "zarr.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe garbage")
    assert "zarr.json: not valid JSON" in _one_error_line(_fcs("info", str(store)))
    res = _fcs("validate", str(store))
    assert res.returncode == 1 and "store-format" in res.stdout and "Traceback" not in res.stderr + res.stdout


def test_a_damaged_store_is_one_line_naming_the_file(pristine_v1: Path, tmp_path: Path) -> None:
    from fcs_data.converters.to_zarr import convert_to_zarr
    from fcs_data.format import shard_file

    store = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", workers=1, shard_frames=8).store
    shard_file(store, 0).unlink()
    line = _one_error_line(_fcs("info", str(store), "--preview", "0", "--out", str(tmp_path / "p.png")))
    assert "data/rgb/c/0/0/0/0: shard file is missing" in line and "episode 0 (frames 0..7)" in line


def test_an_internal_error_is_one_line_with_the_traceback_in_a_file(v1: Path, monkeypatch, private_cache: Path) -> None:
    import fcs_data.validation

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(fcs_data.validation, "validate", broken)
    res = runner.invoke(app, ["validate", str(v1)])
    assert res.exit_code == 1
    assert "internal error (ZeroDivisionError: division by zero)" in res.output and "FCS_DEBUG=1" in res.output
    reports = list((private_cache / "crash").glob("fcs-crash-*.txt"))
    assert reports and "Traceback" in reports[-1].read_text() and "ZeroDivisionError" in reports[-1].read_text()
    monkeypatch.setenv("FCS_DEBUG", "1")
    res = runner.invoke(app, ["validate", str(v1)])
    assert isinstance(res.exception, ZeroDivisionError)


def test_plan_eval_prints_the_comparison_and_writes_json_and_pngs(planning_run, tmp_path: Path) -> None:
    store, ckpt = planning_run
    args = ["plan-eval", str(store), "--checkpoint", str(ckpt), "--pairs", "2", "--set", "cem.samples=16",
            "--set", "cem.iterations=2", "--out", str(tmp_path / "pngs"), "--json", str(tmp_path / "r.json")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "oracle" in res.output and "success (the plan's EE within 5 cm of the goal's)" in res.output
    assert "end_pos" in res.output and "mm" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["pairs"] == 2 and len(list((tmp_path / "pngs").glob("pair_*.png"))) == 2
    res = runner.invoke(app, [*args[:-2], "--json", "-"])
    assert res.exit_code == 0 and json.loads(res.stdout)["summary"]["pairs"] == 2


def test_plan_eval_closed_loop_compares_solvers_and_baselines_and_writes_json_and_strips(planning_run, tmp_path) -> None:
    store, ckpt = planning_run
    args = ["plan-eval", str(store), "--checkpoint", str(ckpt), "--closed-loop", "--episodes", "2", "--solvers",
            "cem,cem-gd", "--baselines", "oracle,mean", "--set", "horizon=2", "--set", "cem.samples=16", "--set",
            "cem.topk=4", "--set", "cem.iterations=2", "--out", str(tmp_path / "strips")]
    res = runner.invoke(app, [*args, "--json", "-"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)["summary"]
    assert set(summary) == {"cem", "cem-gd", "oracle", "mean"} and summary["oracle"]["success_rate"] == 1.0
    assert summary["cem-gd"]["flops_per_plan"] > 0 and summary["cem"]["flops_vs_reference"] == 1.0
    assert len(list((tmp_path / "strips").glob("*.png"))) == 8
    res = runner.invoke(app, [*args[:8], "nope"])
    assert res.exit_code == 2 and "unknown solver preset(s) nope" in res.output


def test_plan_eval_refuses_a_store_of_another_layout_in_one_line(planning_run, planning_fs2) -> None:
    res = runner.invoke(app, ["plan-eval", str(planning_fs2[0]), "--checkpoint", str(planning_run[1])])
    assert res.exit_code == 1
    assert "other action or proprio fields" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["plan-eval", str(planning_run[0]), "--checkpoint", str(planning_run[1]), "--set",
                              "cem.topk=500"])
    assert res.exit_code == 2 and "topk 500 is larger than samples" in res.output


def test_serve_answers_a_client_and_stops_on_ctrl_c(planning_fs2) -> None:
    import signal

    import numpy as np

    from fcs_data.store import open_store
    from fcs_train.planning.client import PlannerClient

    store, ckpt = planning_fs2
    proc = subprocess.Popen([sys.executable, "-m", "fcs", "serve", "--checkpoint", str(ckpt), "--port", "0",
                             "--set", "cem.samples=8", "--set", "cem.topk=2", "--set", "cem.iterations=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("listening on"):
                break
        uri = lines[-1].split()[2]
        assert any("image (256, 256, 3) uint8 RGB" in line for line in lines), lines
        s = open_store(store)
        frames, state = s.read_frames(np.array([0, 10])), s.read_rows("state", 0, 11)[:, :3]
        with PlannerClient(uri, timeout=120) as client:
            client.set_goal(frames[1], state[10])
            assert client.plan(frames[0], state[0]).shape == (2, 9)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130  # as for every other command stopped by Ctrl-C
    assert "plan 1: cost" in err


@pytest.fixture(scope="module")
def cli_store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fcs_data.converters.to_zarr import convert_to_zarr

    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("cli") / "s.zarr", workers=1).store


def _usage_error(res: subprocess.CompletedProcess) -> str:
    """The one error line of an exit-2 refusal."""
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_each_command_given_the_wrong_kind_of_input_says_what_it_is(cli_store: Path, pristine_v1: Path,
                                                                     tmp_path: Path) -> None:
    line = _usage_error(_fcs("convert", str(cli_store), "-o", str(tmp_path / "o.zarr")))
    assert "this is an fcs store, not a logger dataset; did you mean `fcs info" in line
    line = _usage_error(_fcs("info", str(pristine_v1)))
    assert "this is a logger dataset, not an fcs store; did you mean `fcs validate" in line
    line = _usage_error(_fcs("train", "--preset", "tiny", f"data.store={pristine_v1}"))
    assert "this is a logger dataset, not an fcs store (data.store)" in line
    (tmp_path / "empty").mkdir()
    assert "this is an empty folder, not a logger dataset" in _usage_error(_fcs("convert", str(tmp_path / "empty")))
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "empty.zarr").exists()


def test_train_without_a_store_fails_at_once_naming_the_key() -> None:
    res = _fcs("train", "--preset", "tiny")
    assert res.returncode == 1 and "data.store is not set" in res.stderr


def test_bare_overrides_and_reference_names_reach_the_config(tmp_path: Path) -> None:
    res = _fcs("train", "--preset", "tiny", "frameskip=2", "train.batch_size=8", "--print-config")
    assert res.returncode == 0, res.stderr
    assert "frameskip: 2" in res.stdout and "batch_size: 8" in res.stdout
    assert "note: frameskip=2 -> data.frameskip=2 (the reference's name)" in res.stderr
    res = _fcs("train", "--preset", "tiny", "train.batchsize=8", "--print-config")
    assert res.returncode == 2 and "did you mean train.batch_size" in res.stderr


def test_a_yaml_error_in_the_config_is_file_line_column_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: 8\n    epochs: 3\n")
    res = _fcs("train", "--config", str(bad), "--print-config")
    assert res.returncode == 2 and "bad.yaml:3:" in res.stderr and "internal error" not in res.stderr


def test_info_json_to_stdout_is_the_only_output(cli_store: Path) -> None:
    res = _fcs("info", str(cli_store), "--json", "-")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["num_episodes"] == 3 and len(data["episode_lengths"]) == 3
    assert data["metadata"]["layout"]["name"] == "franka_cube_stack_v1"


def test_env_json_names_python_torch_and_cuda() -> None:
    res = _fcs("env", "--json")
    assert res.returncode == 0, res.stderr
    env = json.loads(res.stdout)
    assert env["packages"]["torch"] and env["python"] and "cuda_available" in env


def test_quiet_prints_nothing_but_errors(cli_store: Path) -> None:
    assert _fcs("-q", "info", str(cli_store)).stdout == ""
    assert _fcs("info", str(cli_store)).stdout != ""


def _commands(group, path=()):

    for name, cmd in (group.commands if hasattr(group, "commands") else {}).items():
        yield (*path, name), cmd
        yield from _commands(cmd, (*path, name))


def test_every_command_shows_examples_that_use_only_its_own_options_and_plain_metavars() -> None:
    import shlex

    import typer.main

    root = typer.main.get_command(app)
    seen = 0
    for path, cmd in _commands(root):
        res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, path
        assert "Examples" in res.output, f"fcs {' '.join(path)} --help shows no example"
        assert "<bool>" not in res.output and "{" not in res.output.split("\n", 3)[1], path
        examples = [line.strip() for line in (cmd.epilog or "").splitlines() if line.strip().startswith("fcs ")]
        assert examples, path
        options = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
        for example in examples:
            words = shlex.split(example.split("|")[0].split(">")[0])
            assert tuple(words[1 : 1 + len(path)]) == path, example
            for w in words[1 + len(path):]:
                if w.startswith("-") and w != "-":
                    assert w in options, f"{example}: fcs {' '.join(path)} has no option {w}"
            seen += 1
    assert seen >= 20


def test_help_and_a_train_without_a_store_answer_without_importing_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from fcs.cli import app; r = CliRunner(); "
            "a = r.invoke(app, ['--help']); b = r.invoke(app, ['train', '--preset', 'tiny']); "
            "c = r.invoke(app, ['train', '--preset', 'tiny', 'data.store=/nonexistent']); "
            "print(a.exit_code, b.exit_code, c.exit_code, sorted(m for m in ('torch', 'h5py', 'timm') if m in sys.modules))")
    out = run_python(code)
    assert out.split() == ["0", "1", "2", "[]"], out
