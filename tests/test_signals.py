"""SIGTERM and SIGUSR1 stop a run like Ctrl-C: a resumable checkpoint, then exit 143 / 138."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_train.checkpoint import load_checkpoint
from fcs_train.config import load_config
from fcs_train.signals import Preempted
from fcs_train.trainer import Trainer


@pytest.fixture(scope="module")
def store(pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_zarr(pristine_v1, tmp_path_factory.mktemp("signals") / "s.zarr", workers=1).store


def _config(store: Path, run_dir: Path, **sets):
    base = {"data.store": store, "data.num_workers": 0, "data.num_hist": 2, "data.frameskip": 2,
            "train.run_dir": run_dir, "train.batch_size": 4, "train.num_rollouts": 0, "model.predictor.dropout": 0.1,
            "train.max_steps": 6, "log.num_reconstruct_samples": 2, **sets}
    return load_config(preset="tiny", overrides=[f"{k}={v}" for k, v in base.items()])


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_mid_step_checkpoints_and_resumes_to_the_uninterrupted_weights(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    one_go = Trainer(_config(store, tmp_path / "a"), show_progress=False)
    one_go.fit()
    trainer = Trainer(_config(store, tmp_path / "b"), show_progress=False)
    real, calls = trainer._optimizer_step, []

    def signalled() -> None:  # the signal arrives inside step 4, after its forward and backward
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signum)
        real()

    monkeypatch.setattr(trainer, "_optimizer_step", signalled)
    with pytest.raises(Preempted) as info:
        trainer.fit()
    assert info.value.exit_code == 128 + signum
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt").state.global_step == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored after the run
    resumed = Trainer(_config(store, tmp_path / "b"), resume=True, show_progress=False)
    resumed.fit()
    a, b = _weights(one_go), _weights(resumed)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_fcs_train_exits_with_the_signal_code_after_writing_a_checkpoint(store: Path, tmp_path: Path, signum: int,
                                                                         code: int) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fcs", "train", "--preset", "tiny", f"data.store={store}",
                             f"train.run_dir={run}", "train.max_steps=100000", "data.num_workers=1",
                             "log.every_steps=1", "train.num_rollouts=0", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(signum).name}" in out + err
    assert load_checkpoint(run / "checkpoints" / "latest.pt").state.global_step >= 1
