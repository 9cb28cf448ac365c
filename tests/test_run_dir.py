"""`RunDir`: every file of a run has one path, and a checkpoint finds its run."""

from __future__ import annotations

from pathlib import Path

from fcs_train.config import load_config
from fcs_train.run_dir import RunDir


def test_the_run_directory_names_each_file_once(tmp_path: Path) -> None:
    run = RunDir.of_config(load_config(preset="tiny", overrides=[f"train.run_dir={tmp_path / 'r'}"]))
    assert run.root == tmp_path / "r"
    assert run.latest == run.checkpoints / "latest.pt" == run.checkpoint("latest")
    assert run.checkpoint(run.epoch_name(3)).name == "epoch_0003.pt" and run.epoch_image(3).name == "epoch_0003.png"
    assert run.rank_rng("latest", 1).name == "latest.rank1.rng.pt"
    for path in (run.latest, run.checkpoint("best"), run.rank_rng("latest", 1)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert run.run_checkpoints() == [run.checkpoint("best"), run.latest], "the ranks' RNG files are not checkpoints"


def test_a_checkpoint_in_checkpoints_belongs_to_its_run(tmp_path: Path) -> None:
    assert RunDir.of_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt") == RunDir(tmp_path / "r")
    assert RunDir.of_checkpoint(tmp_path / "loose.pt") is None
