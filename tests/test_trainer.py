"""The trainer: exact resume, accumulation, DDP equivalence, clean stops, and what a run leaves."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import zarr
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.errors import NonFiniteDataError
from fcs_data.loader import collate_windows
from fcs_data.windows import WindowDataset
from fcs_train.checkpoint import load_checkpoint
from fcs_train.config import load_config
from fcs_train.step_inputs import model_inputs
from fcs_train.trainer import NonFiniteLoss, Trainer, TrainError


@pytest.fixture(scope="module")
def store(v1_store: Path) -> Path:
    return v1_store


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
    assert (ckpt.state.global_step, ckpt.state.epoch, ckpt.state.step_in_epoch) == (n, 1, n)
    killed_save = tmp_path / "b" / "checkpoints" / ".latest.pt.x7q2.tmp"  # what SIGKILL during a save leaves
    killed_save.write_bytes(b"half a checkpoint")
    resumed, s2 = run(config(store, tmp_path / "b", **{"train.max_steps": 2 * n}), resume=True)
    assert not killed_save.exists()
    assert s1.global_step == s2.global_step == 2 * n
    a, b = weights(one_go), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses_a = [r["loss"] for r in s1.train_history]
    losses_b = [r["loss"] for r in s2.train_history]
    assert losses_a == losses_b, "metrics.jsonl holds each step once, same values"


def _as_written_by_fcs_0_2(path: Path, store: Path) -> None:
    """Rewrite a checkpoint as fcs 0.2 wrote it: format 1 (the model's shape in `model_config`, `dims` and
    `config`, unnamed optimizer states) holding the store's creation-time fingerprint."""
    from fcs_data.store import open_store

    new, run_config = torch.load(path, weights_only=True), load_checkpoint(path).train_config()
    spec, state, window = new["spec"], new["state"], new["spec"]["window"]
    optimizers = {k: {**sd, "param_groups": [{k2: v for k2, v in g.items() if k2 != "param_names"}
                                             for g in sd["param_groups"]]} for k, sd in new["optimizers"].items()}
    torch.save({"fcs_checkpoint": 1, "model": new["weights"], "model_config": spec["model"],
                "dims": {"proprio_dim": spec["proprio_dim"], "action_dim": window["action_dim"],
                         "num_hist": window["num_hist"], "num_pred": window["num_pred"],
                         "frameskip": window["frameskip"]},
                "epoch": state["epoch"], "global_step": state["global_step"], "step_in_epoch": state["step_in_epoch"],
                "optimizers": optimizers, "scaler": new["scaler"], "rng": new["rng"], "world_size": 1,
                "config": run_config.model_dump(mode="json"),
                "store": {"path": str(store), "fingerprint": open_store(store).legacy_fingerprint},
                "norm_stats": new["normalizer"], "best_val_loss": state["best_val_loss"],
                "decoder_trained": state["decoder_trained"], "layout": new["layout"], "image_stats": new["image_stats"],
                "val_metrics": state["val_metrics"]}, path)


def test_a_format_1_checkpoint_of_fcs_0_2_resumes_exactly_on_the_same_store(store: Path, tmp_path: Path) -> None:
    sets = {"train.max_steps": 4, "train.num_rollouts": 0}
    one_go, _ = run(config(store, tmp_path / "a", **sets))
    run(config(store, tmp_path / "b", **{**sets, "train.max_steps": 2}))
    latest = tmp_path / "b" / "checkpoints" / "latest.pt"
    _as_written_by_fcs_0_2(latest, store)
    assert load_checkpoint(latest).store.identity is None
    resumed, _ = run(config(store, tmp_path / "b", **sets), resume=True)
    a, b = weights(one_go), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _as_written_by_fcs_0_2(latest, store)
    old = torch.load(latest, weights_only=True)
    torch.save({**old, "store": {**old["store"], "fingerprint": "another store"}}, latest)
    with pytest.raises(TrainError, match="trained on a different store"):
        Trainer(config(store, tmp_path / "b", **sets), resume=True, show_progress=False)


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

    def spy(obs, act, **kwargs):
        seen.append((torch.is_grad_enabled(), trainer.model.training, trainer.model.predictor.training))
        return forward(obs, act, **kwargs)

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
    assert ckpt.weights and ckpt.optimizers and ckpt.scaler is not None and ckpt.rng and ckpt.config and ckpt.state.epoch
    assert ckpt.store.identity and ckpt.normalizer.action.count > 0


def _clipped_run(store: Path, run_dir: Path, scaler: torch.amp.GradScaler | None) -> tuple[Trainer, list[float]]:
    """Two steps with optim.grad_clip=1e-4 (and `scaler` in place of the trainer's); the gradient norm each
    optimizer steps with."""
    trainer = Trainer(config(store, run_dir, **{"train.max_steps": 2, "optim.grad_clip": 1e-4,
                                                "model.predictor.dropout": 0.0, "train.num_rollouts": 0}),
                      show_progress=False)
    if scaler is not None:
        trainer.scaler = scaler
    norms: list[float] = []
    for opt in trainer.optimizers.values():
        def step(opt=opt, real=opt.step, **kwargs):
            norms.append(float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(p.grad) for g in opt.param_groups for p in g["params"]]))))
            return real(**kwargs)
        opt.step = step
    trainer.fit()
    trainer.close()
    return trainer, norms


def test_a_grad_scaler_unscales_before_grad_clip_clips_each_part(store: Path, tmp_path: Path) -> None:
    # fp16 needs CUDA; the scaler's logic (scale the loss, unscale, clip, step, update) runs on the CPU too
    scaled, norms = _clipped_run(store, tmp_path / "s", torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert scaled.scaler.is_enabled() and len(norms) == 2 * len(scaled.optimizers)
    assert all(n == pytest.approx(1e-4, rel=1e-3) for n in norms), "clipped to the norm, after unscaling"
    plain, plain_norms = _clipped_run(store, tmp_path / "p", None)
    assert not plain.scaler.is_enabled() and plain_norms == pytest.approx(norms, rel=1e-3)
    for k, v in weights(plain).items():
        torch.testing.assert_close(weights(scaled)[k], v, rtol=1e-5, atol=1e-7, msg=k)


def test_bf16_autocast_trains_on_the_cpu_and_fp16_asks_for_cuda(store: Path, tmp_path: Path) -> None:
    trainer, summary = run(config(store, tmp_path / "bf16", **{"train.max_steps": 2, "train.amp": "bf16",
                                                                "train.num_rollouts": 0}))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert all(np.isfinite(r["loss"]) for r in summary.train_history) and np.isfinite(summary.val_history[-1]["loss"])
    if not torch.cuda.is_available():
        with pytest.raises(TrainError, match=r"train\.amp=fp16 needs CUDA"):
            Trainer(config(store, tmp_path / "fp16", **{"train.amp": "fp16"}), show_progress=False)


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


def _interrupt_in_step(monkeypatch: pytest.MonkeyPatch, trainer: Trainer, step: int) -> None:
    """Ctrl-C inside optimizer step `step`: after its forward and backward drew their dropout masks."""
    real = trainer._optimizer_step
    calls = []

    def interrupt() -> None:
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        real()

    monkeypatch.setattr(trainer, "_optimizer_step", interrupt)


def test_ctrl_c_writes_a_checkpoint_first(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(config(store, tmp_path / "c"), show_progress=False)
    _interrupt_in_step(monkeypatch, trainer, 3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.close()
    ckpt = load_checkpoint(tmp_path / "c" / "checkpoints" / "latest.pt")
    assert ckpt.state.global_step == 2 and ckpt.state.step_in_epoch == 2
    assert [r["step"] for r in map(json.loads, (tmp_path / "c" / "metrics.jsonl").read_text().splitlines())] == [1, 2]


@pytest.mark.parametrize("accum", [1, 2])
def test_ctrl_c_mid_step_with_dropout_resumes_to_the_uninterrupted_weights(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accum: int
) -> None:
    sets = {"train.max_steps": 6, "train.grad_accum": accum, "model.predictor.dropout": 0.1}
    one_go, _ = run(config(store, tmp_path / "a", **sets))
    trainer = Trainer(config(store, tmp_path / "b", **sets), show_progress=False)
    _interrupt_in_step(monkeypatch, trainer, 4)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.close()
    resumed, _ = run(config(store, tmp_path / "b", **sets), resume=True)
    a, b = weights(one_go), weights(resumed)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_a_nan_validation_loss_stops_naming_the_windows(store: Path, tmp_path: Path) -> None:
    from fcs_data.splits import split_episodes
    from fcs_data.store import open_store

    bad = Path(shutil.copytree(store, tmp_path / "glitch.zarr"))
    s = open_store(bad)
    (val_episode,) = split_episodes(range(s.num_episodes), "val", 0.9, 42).tolist()
    row = int(s.episode_starts[val_episode]) + 10
    arr = zarr.open_array(str(bad / "data" / "state"), mode="r+")
    values = arr[row]
    values[0] = 1e38  # finite in the store; its normalised proprio overflows to inf in the model
    arr[row] = values
    with pytest.raises(NonFiniteLoss, match=rf"validation loss is not finite.*\({val_episode}, \d+\)") as info:
        run(config(bad, tmp_path / "v", **{"train.max_steps": 2}))
    listed = {int(m) for m in re.findall(rf"\({val_episode}, (\d+)\)", str(info.value))}
    assert listed and all(start <= 10 <= start + 2 * 2 for start in listed), "only windows holding the glitch"
    assert not (tmp_path / "v" / "checkpoints" / "best.pt").exists()
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--set", f"data.store={bad}", "--set",
                                   f"train.run_dir={tmp_path / 'cli'}", "--set", "train.max_steps=2", "--set",
                                   "data.num_workers=0", "--set", "data.num_hist=2", "--set", "data.frameskip=2",
                                   "--no-progress"])
    assert res.exit_code == 1 and "validation loss is not finite" in res.output and "Traceback" not in res.output


def test_validation_reports_the_copy_last_frame_baseline_and_skill(store: Path, tmp_path: Path) -> None:
    trainer, summary = run(config(store, tmp_path / "base", **{"train.max_steps": 6}))
    val = summary.val_history[-1]
    assert {"z_visual_loss_copy", "z_proprio_loss_copy", "z_visual_skill", "z_proprio_skill"} <= set(val)
    assert val["z_visual_skill"] == pytest.approx(1 - val["z_visual_loss"] / val["z_visual_loss_copy"])
    model = trainer.model.eval()
    batch = collate_windows([trainer.val_ds[i] for i in range(len(trainer.val_ds))])
    obs, act = model_inputs(batch, trainer.device, trainer.cfg.model.image_size)
    with torch.no_grad():
        z = model.encode(obs, act)
    visual = z[..., : -(model.proprio_emb_dim + model.action_emb_dim)]
    copy = float(((visual[:, :2] - visual[:, 1:]) ** 2).mean())  # frame t as the prediction of frame t + 1
    assert val["z_visual_loss_copy"] == pytest.approx(copy, rel=1e-4)
    table = (tmp_path / "base" / "epochs.log").read_text()
    assert "val_z_visual_skill" in table


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
    cfg = config(Path(store), Path(run_dir), **{"train.max_steps": 3, "model.predictor.dropout": 0.0,
                                                 "model.decoder.schedule": "joint"})
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
                                                                 "model.predictor.dropout": 0.0,
                                                                 "model.decoder.schedule": "joint"}))
    assert len(r0["losses"]) == 3
    np.testing.assert_allclose(r0["losses"], [r["loss"] for r in summary.train_history], rtol=1e-5)
    for k, v in weights(single).items():
        torch.testing.assert_close(r0["weights"][k], v, rtol=1e-4, atol=1e-6, msg=k)


def _ddp_resume_rank(rank: int, port: int, store: str, run_dir: str, out: str, steps: int, resume: bool) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    torch.set_num_threads(1)
    cfg = config(Path(store), Path(run_dir), **{"train.max_steps": steps, "model.predictor.dropout": 0.1})
    trainer = Trainer(cfg, resume=resume, show_progress=False)
    trainer.fit()
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{rank}.pt")
    trainer.close()


def test_ddp_resume_restores_each_ranks_own_rng_and_equals_the_uninterrupted_run(store: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mp.spawn(_ddp_resume_rank, args=(_free_port(), str(store), str(tmp_path / "ra"), str(tmp_path / "a"), 6, False),
             nprocs=2, join=True)
    mp.spawn(_ddp_resume_rank, args=(_free_port(), str(store), str(tmp_path / "rb"), str(tmp_path / "b"), 3, False),
             nprocs=2, join=True)
    assert (tmp_path / "rb" / "checkpoints" / "latest.rank1.rng.pt").exists()
    mp.spawn(_ddp_resume_rank, args=(_free_port(), str(store), str(tmp_path / "rb"), str(tmp_path / "b"), 6, True),
             nprocs=2, join=True)
    for rank in (0, 1):
        a = torch.load(tmp_path / "a" / f"rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / f"rank{rank}.pt", weights_only=True)
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"rank {rank}: {len(differ)} tensors differ after the resume"


# ---- the decoder schedule (issue 13) ----------------------------------------------------------------

WORLD_MODEL = ("predictor.", "action_encoder.", "proprio_encoder.")


def test_the_decoder_schedule_never_changes_what_the_world_model_learns(store: Path, tmp_path: Path) -> None:
    trained = {}
    for schedule in ("joint", "subset", "every_n", "off"):
        sets = {"train.max_steps": 5, "model.decoder.schedule": schedule, "model.decoder.every_n": 2,
                "model.decoder.subset_frames": 2, "model.predictor.dropout": 0.1}
        trainer, _ = run(config(store, tmp_path / schedule, **sets))
        trained[schedule] = weights(trainer)
    joint = trained["joint"]
    for schedule in ("subset", "every_n", "off"):
        for k, v in joint.items():
            if k.startswith(WORLD_MODEL):
                assert torch.equal(trained[schedule][k], v), f"{schedule}: {k}"
    decoder = [k for k in joint if k.startswith("decoder.") and k.endswith("weight")]
    assert any(not torch.equal(trained["subset"][k], joint[k]) for k in decoder), "the decoder did learn differently"
    untrained = _untrained_decoder(store, tmp_path)
    assert all(torch.equal(trained["off"][k], untrained[k]) for k in decoder)


def _untrained_decoder(store: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    trainer = Trainer(config(store, tmp_path / "fresh", **{"model.decoder.schedule": "off"}), show_progress=False)
    out = weights(trainer)
    trainer.close()
    return out


def test_training_reads_the_losses_from_the_device_only_every_k_steps(store: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(config(store, tmp_path / "k", **{"train.max_steps": 7, "log.every_steps": 3,
                                                       "train.grad_accum": 2}), show_progress=False)
    reads: list[int] = []
    real_item, real_float, real_tolist = torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist
    in_training = []

    def spy(real):
        def read(self, *args, **kwargs):  # fcs's own reads of floating tensors (torch's optimizers keep `step` on the CPU)
            caller = sys._getframe(1).f_code.co_filename
            if in_training and self.dtype.is_floating_point and "fcs_" in caller:
                reads.append(trainer.state.global_step)
            return real(self, *args, **kwargs)
        return read

    monkeypatch.setattr(torch.Tensor, "item", spy(real_item))
    monkeypatch.setattr(torch.Tensor, "__float__", spy(real_float))
    monkeypatch.setattr(torch.Tensor, "tolist", spy(real_tolist))
    train_epoch = trainer._train_epoch

    def counted() -> bool:
        in_training.append(True)
        try:
            return train_epoch()
        finally:
            in_training.clear()

    monkeypatch.setattr(trainer, "_train_epoch", counted)
    summary = trainer.fit()
    trainer.close()
    assert sorted(set(reads)) == [3, 6, 7], "one read after steps 3 and 6 (every 3) and at the end"
    assert [r["step"] for r in summary.train_history] == list(range(1, 8)), "still one record per step"


def test_off_then_train_decoder_writes_a_trained_decoder_into_every_checkpoint(store: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "off"
    _, summary = run(config(store, run_dir, **{"train.max_steps": 4, "model.decoder.schedule": "off"}))
    assert "pred_ssim" not in summary.val_history[-1], "no image metrics from an untrained decoder"
    assert not (run_dir / "images").exists()
    before = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert before.state.decoder_trained is False
    res = CliRunner().invoke(app, ["train-decoder", str(run_dir), "--steps", "15", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert "wrote the decoder into 2 checkpoints" in res.output and (run_dir / "images" / "decoder.png").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["best.pt", "latest.pt"]
    for name in ("latest", "best"):
        after = load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")
        assert after.state.decoder_trained is True and "decoder" in after.optimizers
        # the planner's scene check compares a frame's reconstruction error with this one
        assert after.state.val_metrics["decoder_recon_loss_reconstructed"] > 0
        assert "decoder_recon_loss_reconstructed" not in before.state.val_metrics
        assert any(not torch.equal(after.weights["decoder"][k], v) for k, v in before.weights["decoder"].items())
        for k, v in before.weights["predictor"].items():
            assert torch.equal(after.weights["predictor"][k], v), "only the decoder changes"
    resumed = Trainer(config(store, run_dir, **{"train.max_steps": 5, "model.decoder.schedule": "off"}),
                      resume=True, show_progress=False)
    assert "pred_ssim" in resumed.validate(), "image metrics once the decoder is trained"
    resumed.close()


def test_the_first_epoch_prints_where_the_step_time_went(store: Path, tmp_path: Path) -> None:
    cfg = config(store, tmp_path / "p", **{"train.max_steps": 8})
    res = CliRunner().invoke(app, ["train", "--preset", "tiny", "--no-progress",
                                   *[a for k, v in {"data.store": store, "train.run_dir": tmp_path / "p",
                                                    "train.max_steps": 8, "data.num_workers": 0, "data.num_hist": 2,
                                                    "data.frameskip": 2, "train.batch_size": 4}.items()
                                     for a in ("--set", f"{k}={v}")]])
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if line.startswith("where a training step's time went"))
    for part in ("data wait", "encoder", "predictor", "decoder", "optimizer"):
        assert part in line
    records = [json.loads(r) for r in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    profile = [r for r in records if r["kind"] == "profile"]
    assert len(profile) == 1 and profile[0]["step_s"] > 0 and profile[0]["decoder_s"] >= 0
    assert cfg.model.decoder.schedule == "subset"
