"""The trainer: exact resume, accumulation, DDP equivalence, clean stops, and what a run leaves."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import zarr
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.errors import NonFiniteDataError
from fcs_data.synth import synthesize
from fcs_data.windows import WindowDataset
from fcs_train.checkpoint import load_checkpoint
from fcs_train.config import load_config
from fcs_train.trainer import Trainer, TrainError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = synthesize(tmp_path_factory.mktemp("tr") / "src", episodes=8, min_len=30, max_len=44, seed=4)
    return convert_to_zarr(src, tmp_path_factory.mktemp("tr") / "s.zarr", workers=1, shard_frames=32).store


def config(store: Path, run_dir: Path, **sets):
    base = {"data.store": store, "data.num_workers": 0, "data.num_hist": 2, "data.frameskip": 2,
            "train.run_dir": run_dir, "train.batch_size": 4, "train.num_rollouts": 2, "model.predictor.dropout": 0.1,
            "log.num_reconstruct_samples": 2}
    base.update(sets)
    return load_config(preset="tiny", overrides=[f"{k}={'null' if v is None else v}" for k, v in base.items()])


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def run(cfg, resume: bool = False) -> tuple[Trainer, object]:
    trainer = Trainer(cfg, resume=resume, show_progress=False)
    summary = trainer.fit()
    trainer.close()
    return trainer, summary


def test_resume_continues_exactly(store: Path, tmp_path: Path) -> None:
    steps_per_epoch = len(WindowDataset(store, num_hist=2, frameskip=2, split="train")) // 4
    n = steps_per_epoch // 2 + 1  # stop mid-epoch; 2n crosses an epoch boundary
    assert 0 < n < steps_per_epoch < 2 * n
    one_go, s1 = run(config(store, tmp_path / "a", **{"train.max_steps": 2 * n}))
    run(config(store, tmp_path / "b", **{"train.max_steps": n}))
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["step_in_epoch"]) == (n, 1, n)
    resumed, s2 = run(config(store, tmp_path / "b", **{"train.max_steps": 2 * n}), resume=True)
    assert s1.global_step == s2.global_step == 2 * n
    a, b = weights(one_go), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses_a = [r["loss"] for r in s1.train_history]
    losses_b = [r["loss"] for r in s2.train_history]
    assert losses_a == losses_b, "metrics.jsonl holds each step once, same values"


def test_gradient_accumulation_matches_the_large_batch(store: Path, tmp_path: Path) -> None:
    big, _ = run(config(store, tmp_path / "big", **{"train.max_steps": 2, "train.batch_size": 8,
                                                     "model.predictor.dropout": 0.0}))
    acc, _ = run(config(store, tmp_path / "acc", **{"train.max_steps": 2, "train.batch_size": 4,
                                                     "train.grad_accum": 2, "model.predictor.dropout": 0.0}))
    for k, v in weights(big).items():
        torch.testing.assert_close(weights(acc)[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_validation_runs_without_gradients_in_eval_mode(store: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(config(store, tmp_path / "v", **{"train.max_steps": 1}), show_progress=False)
    seen = []
    forward = trainer.model.forward

    def spy(obs, act):
        seen.append((torch.is_grad_enabled(), trainer.model.training, trainer.model.predictor.training))
        return forward(obs, act)

    monkeypatch.setattr(trainer.model, "forward", spy)
    metrics = trainer.validate()
    trainer.close()
    assert seen and all(flags == (False, False, False) for flags in seen)
    assert metrics["z_visual_err_next1"] == metrics["z_visual_err_pred"] > 0, "next1 is not an empty slice"
    assert {"pred_ssim", "pred_psnr", "rec_ssim", "rec_psnr", "loss"} <= set(metrics)


def test_run_directory_and_falling_validation_loss(store: Path, tmp_path: Path) -> None:
    cfg = config(store, tmp_path / "r", **{"train.epochs": 3, "train.max_steps": None,
                                           "model.predictor.dropout": 0.0})
    _, summary = run(cfg)
    d = tmp_path / "r"
    assert (d / "config.yaml").exists() and load_config(d / "config.yaml") == cfg
    assert {p.name for p in (d / "checkpoints").iterdir()} >= {"latest.pt", "best.pt", "epoch_0001.pt"}
    assert len(list((d / "images").glob("epoch_*.png"))) == 3 and (d / "plots" / "losses.png").exists()
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "val"' in line for line in lines) == 3
    val = [r["loss"] for r in summary.val_history]
    assert val[-1] < val[0]
    assert {"z_visual_err_rollout", "z_visual_err_rollout_1framestart"} <= set(summary.val_history[-1])
    ckpt = load_checkpoint(d / "checkpoints" / "best.pt")
    assert set(ckpt) >= {"model", "optimizers", "scaler", "rng", "config", "store", "norm_stats", "epoch"}
    assert ckpt["store"]["fingerprint"] and ckpt["norm_stats"]["action"]["count"] > 0


def test_nan_in_the_training_data_stops_naming_the_episode_and_step(store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    arr = zarr.open_array(str(bad / "data" / "action"), mode="r+")
    arr[:] = np.where(np.arange(arr.shape[0])[:, None] % 7 == 0, np.nan, arr[:]).astype(np.float32)
    with pytest.raises(NonFiniteDataError, match=r"episode \d+ step \d+: nan in action\.joint_target"):
        run(config(bad, tmp_path / "n", **{"train.max_steps": 3}))
    cfg = config(bad, tmp_path / "w", **{"train.max_steps": 3, "data.num_workers": 1,
                                        "data.multiprocessing_context": "fork"})
    with pytest.raises(TrainError, match=r"DataLoader worker failed: NonFiniteDataError: .*episode \d+ step \d+: nan"):
        run(cfg)


def _die(self, i):
    os._exit(3)


def _stall(self, i):
    time.sleep(30)


def test_a_dead_worker_is_named(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WindowDataset, "__getitem__", _die)
    cfg = config(store, tmp_path / "w", **{"data.num_workers": 1, "data.multiprocessing_context": "fork"})
    with pytest.raises(TrainError, match=r"DataLoader worker \(pid.*died"):
        run(cfg)


def test_a_stuck_worker_hits_the_timeout_and_is_named(store: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WindowDataset, "__getitem__", _stall)
    cfg = config(store, tmp_path / "t", **{"data.num_workers": 1, "data.multiprocessing_context": "fork",
                                           "train.loader_timeout": 2})
    t0 = time.monotonic()
    with pytest.raises(TrainError, match=r"worker 0 \(pid \d+\) sent no batch for 2 s"):
        run(cfg)
    assert time.monotonic() - t0 < 25


def test_ctrl_c_writes_a_checkpoint_first(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(config(store, tmp_path / "c"), show_progress=False)
    step = trainer._optimizer_step
    calls = []

    def interrupt_on_third() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(trainer, "_optimizer_step", interrupt_on_third)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.close()
    ckpt = load_checkpoint(tmp_path / "c" / "checkpoints" / "latest.pt")
    assert ckpt["global_step"] == 2 and ckpt["step_in_epoch"] == 2


def test_init_from_a_checkpoint_and_refusing_a_foreign_resume(store: Path, tmp_path: Path) -> None:
    first, _ = run(config(store, tmp_path / "f", **{"train.max_steps": 2}))
    trainer = Trainer(config(store, tmp_path / "g", **{"train.init_from": tmp_path / "f/checkpoints/latest.pt"}),
                      show_progress=False)
    for k, v in weights(first).items():
        assert torch.equal(trainer.model.state_dict()[k], v)
    trainer.close()
    with pytest.raises(TrainError, match="model section differs"):
        Trainer(config(store, tmp_path / "f", **{"model.predictor.depth": 3}), resume=True, show_progress=False)
    with pytest.raises(TrainError, match="nothing to resume"):
        Trainer(config(store, tmp_path / "none"), resume=True, show_progress=False)


def test_cli_print_config_and_bad_overrides(store: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--preset", "tiny", "--set", "train.batch_size=3", "--print-config"])
    assert res.exit_code == 0 and "batch_size: 3" in res.output
    full = runner.invoke(app, ["train", "--print-config"])
    assert "frameskip: 5" in full.output and "num_hist: 3" in full.output and "predictor_lr: 0.0005" in full.output
    assert runner.invoke(app, ["train", "--set", "train.batch_size=0", "--print-config"]).exit_code == 2
    assert runner.invoke(app, ["train", "--set", "nonsense", "--print-config"]).exit_code == 2
    assert runner.invoke(app, ["train", "--preset", "huge"]).exit_code == 2
    res = runner.invoke(app, ["train", "--preset", "tiny"])
    assert res.exit_code == 1 and "data.store" in res.output


# ---- DDP --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, port: int, store: str, run_dir: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    torch.set_num_threads(1)
    cfg = config(Path(store), Path(run_dir), **{"train.max_steps": 3, "model.predictor.dropout": 0.0})
    trainer = Trainer(cfg, show_progress=False)
    summary = trainer.fit()
    torch.save({"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                "losses": [r["loss"] for r in summary.train_history]}, f"{out}/rank{rank}.pt")
    trainer.close()


def test_two_gloo_processes_match_one_process_with_the_global_batch(store: Path, tmp_path: Path) -> None:
    mp.spawn(_ddp_rank, args=(_free_port(), str(store), str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), f"ranks differ at {k}"
    single, summary = run(config(store, tmp_path / "single", **{"train.max_steps": 3, "train.batch_size": 8,
                                                                 "model.predictor.dropout": 0.0}))
    assert len(r0["losses"]) == 3
    np.testing.assert_allclose(r0["losses"], [r["loss"] for r in summary.train_history], rtol=1e-5)
    for k, v in weights(single).items():
        torch.testing.assert_close(r0["weights"][k], v, rtol=1e-4, atol=1e-6, msg=k)
