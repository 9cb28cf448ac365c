"""`fcs dynamics`: the embedding change between frames fs apart (the copy-last-frame loss per frameskip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fcs.cli import app
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.stats import normalize
from fcs_data.store import open_store
from fcs_data.synth import synthesize
from fcs_train.checkpoint import load_world_model
from fcs_train.config import load_config
from fcs_train.dynamics import embedding_change
from fcs_train.models import to_model_input
from fcs_train.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("dyn")
    src = synthesize(tmp / "src", episodes=5, min_len=30, max_len=36, seed=9)
    store = convert_to_zarr(src, tmp / "s.zarr", workers=1).store
    cfg = load_config(preset="tiny", overrides=[f"data.store={store}", f"train.run_dir={tmp / 'run'}",
                                                "data.num_workers=0", "data.num_hist=2", "data.frameskip=2",
                                                "train.batch_size=4", "train.max_steps=3", "train.num_rollouts=0"])
    trainer = Trainer(cfg, show_progress=False)
    trainer.fit()
    trainer.close()
    return store, tmp / "run" / "checkpoints" / "latest.pt"


def test_each_row_is_the_mean_squared_embedding_change_over_every_pair(trained: tuple[Path, Path]) -> None:
    store_path, ckpt_path = trained
    model, _ = load_world_model(ckpt_path)
    store = open_store(store_path)
    stats = store.metadata.norm_stats.proprio
    episodes = np.arange(store.num_episodes)
    rows = embedding_change(model, store, stats, episodes=episodes, frameskips=range(1, 4), pairs=10_000)
    assert [r.frameskip for r in rows] == [1, 2, 3]
    fs = 2
    expected_vis, expected_prop, n = 0.0, 0.0, 0
    with torch.no_grad():
        for e in episodes.tolist():
            a, b = int(store.episode_starts[e]), int(store.episode_ends[e])
            frames = torch.from_numpy(store.read_frames(np.arange(a, b))).permute(0, 3, 1, 2)
            p = torch.from_numpy(normalize(store.read_rows("state", a, b)[:, 0:3], stats))
            z = model.encode_obs({"visual": to_model_input(frames, model.image_size)[None], "proprio": p[None]})
            expected_vis += float(((z["visual"][0, fs:] - z["visual"][0, :-fs]) ** 2).mean(dim=(1, 2)).sum())
            expected_prop += float(((z["proprio"][0, fs:] - z["proprio"][0, :-fs]) ** 2).mean(dim=1).sum())
            n += b - a - fs
    assert rows[1].pairs == n
    assert rows[1].visual == pytest.approx(expected_vis / n, rel=1e-4)
    assert rows[1].proprio == pytest.approx(expected_prop / n, rel=1e-4)
    assert rows[0].visual < rows[2].visual, "frames further apart differ more"


def test_cli_dynamics_marks_the_checkpoints_frameskip(trained: tuple[Path, Path]) -> None:
    store, ckpt = trained
    res = CliRunner().invoke(app, ["dynamics", str(store), "--checkpoint", str(ckpt), "--max-frameskip", "4",
                                   "--pairs", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "2 <- this checkpoint's frameskip" in res.output and "skill = 1 - loss / copy" in res.output
