"""Runs: one directory per run, a used one refused, `fcs runs` and `fcs runs compare`, resume that respects the user."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_train.config import load_config
from fcs_train.errors import TrainError
from fcs_train.runs import find_runs, new_run_dir, read_run, resolve_run_dir
from fcs_train.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("runs") / "s.zarr", workers=1).store


def _cfg(store: Path, run_dir: Path | None, **sets):
    base = {"data.store": store, "data.num_workers": 0, "data.num_hist": 2, "data.frameskip": 2,
            "train.batch_size": 4, "train.num_rollouts": 0, "train.max_steps": 3, "log.num_reconstruct_samples": 1,
            **({"train.run_dir": run_dir} if run_dir is not None else {}), **sets}
    return load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in base.items()])


def _train(cfg, **kwargs) -> Trainer:
    trainer = Trainer(cfg, show_progress=False, **kwargs)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def test_each_run_gets_its_own_timestamped_directory_and_a_latest_link(store: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = _train(_cfg(store, None)).run.root
    second = _train(_cfg(store, None)).run.root
    assert (first != second and first.parent == second.parent == Path("runs/tiny").resolve()) or \
        first.parent == second.parent == Path("runs/tiny")
    assert (Path("runs/tiny/latest")).resolve() == second.resolve()
    resumed = _train(_cfg(store, None, **{"train.max_steps": 4}), resume=True)
    assert resumed.run.root.resolve() == second.resolve() and resumed.state.global_step == 4


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(_cfg(store, run))
    with pytest.raises(TrainError, match=r"already holds a run \(finished at step 3\); continue it with --resume, "
                                         r"replace it with --overwrite"):
        Trainer(_cfg(store, run), show_progress=False)
    before = (run / "metrics.jsonl").read_text()
    assert before  # untouched by the refusal
    again = _train(_cfg(store, run), overwrite=True)
    assert again.state.global_step == 3
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps)), "the replaced run's records are gone, not mixed in"


def test_resolving_run_directories(tmp_path: Path) -> None:
    stamp = datetime.datetime(2026, 12, 3, 10, 0, 0)
    assert new_run_dir("x", tmp_path, stamp) == tmp_path / "x" / "2026-12-03_10-00-00"
    (tmp_path / "x" / "2026-12-03_10-00-00").mkdir(parents=True)
    assert new_run_dir("x", tmp_path, stamp).name == "2026-12-03_10-00-00_2"
    with pytest.raises(TrainError, match="nothing to resume"):
        resolve_run_dir(None, "y", resume=True, overwrite=False, root=tmp_path)
    with pytest.raises(TrainError, match="nothing to resume"):
        resolve_run_dir(tmp_path / "empty", "y", resume=True, overwrite=False, root=tmp_path)
    with pytest.raises(TrainError, match="give one of them"):
        resolve_run_dir(tmp_path, "y", resume=True, overwrite=True)


def test_resume_takes_the_new_learning_rate_and_workers_records_them_and_names_what_it_refuses(
        store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(_cfg(store, run))
    moved = Path(shutil.copytree(store, tmp_path / "moved.zarr"))  # the same store at another path
    resumed = Trainer(_cfg(moved, run, **{"optim.predictor_lr": 0.0, "train.max_steps": 5}), resume=True,
                      show_progress=False)
    assert all(g["lr"] == 0.0 for g in resumed.optimizers["predictor"].param_groups)
    before = {k: v.clone() for k, v in resumed.model.predictor.state_dict().items()}
    resumed.fit()
    resumed.close()
    after = resumed.model.predictor.state_dict()
    assert all((before[k] == after[k]).all() for k in before), "lr 0 took effect: the predictor did not move"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    change = next(r for r in records if r["kind"] == "resume")
    assert "optim.predictor_lr: 0.001 -> 0.0" in change["changed"]
    with pytest.raises(TrainError, match=r"the data section differs .*data\.num_hist: 2 -> 3") as info:
        Trainer(_cfg(store, run, **{"data.num_hist": 3, "data.num_workers": 1}), resume=True, show_progress=False)
    assert "data.num_workers: " not in str(info.value)  # allowed to change: not named as refused


def test_runs_are_listed_and_compared_with_what_differs(store: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    _train(_cfg(store, a))
    _train(_cfg(store, b, **{"data.num_hist": 1, "optim.predictor_lr": 5e-4}))
    found = find_runs(tmp_path / "runs")
    assert [r.path for r in found] == [a, b] and {r.state for r in found} == {"finished"}
    assert read_run(a).best() is not None
    res = runner.invoke(app, ["runs", "--root", str(tmp_path / "runs"), "--json", "-"])
    assert res.exit_code == 0 and [r["state"] for r in json.loads(res.stdout)] == ["finished", "finished"]
    res = runner.invoke(app, ["runs", "compare", str(a), str(b), "--json", "-"])
    diff = json.loads(res.stdout)["differences"]
    assert diff["data.num_hist"] == [2, 1] and diff["optim.predictor_lr"] == [0.001, 0.0005]
    assert "trained_on.train_windows" in diff and "train.run_dir" not in diff
    res = runner.invoke(app, ["runs", "compare", str(a), str(b)])
    assert res.exit_code == 0 and "settings differ" in res.output and "cannot be put down to any one" in res.output
