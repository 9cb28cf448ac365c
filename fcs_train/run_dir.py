"""`RunDir`: the files of one training run, each path named once.

    RUN/config.yaml                     the resolved TrainConfig
    RUN/metrics.jsonl, RUN/epochs.log   one record per step / validation / profile; one line per epoch
    RUN/checkpoints/NAME.pt             latest, best, epoch_NNNN, imported_reference
    RUN/checkpoints/NAME.rankR.rng.pt   the RNG state of DDP rank R > 0 beside checkpoint NAME
    RUN/images/epoch_NNNN.png           ground truth / prediction / reconstruction of validation windows
    RUN/images/decoder.png              reconstructions after `fcs train-decoder`
    RUN/plots/losses.png                loss curves
    RUN/tensorboard/                    TensorBoard events (log.tensorboard)
    RUN/plan_eval/                      `fcs plan-eval`'s PNGs, by default
    RUN/closed_loop/                    `fcs plan-eval --closed-loop`'s episode strips, by default
    RUN/wandb.json                      the W&B run id, kept across resumes
    RUN/status.json                     running / finished / interrupted / failed, for `fcs runs`
    RUN/stall-TIME.txt                  stacks and worker states when the run stalled

Every module that writes or reads these (the trainer, its checkpoints, the run log, `fcs train-decoder`,
the CLI) takes the path from here. A run directory is always reached through `RunDir.of_config`
(`fcs train`) or `RunDir.of_checkpoint` (a checkpoint given by path), so a different arrangement (one
timestamped directory per run under `train.run_dir` with a `latest` link) changes these two
constructors and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fcs_train.config import TrainConfig

CHECKPOINT_SUFFIX = ".pt"
RANK_RNG_SUFFIX = ".rng.pt"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def of_config(cls, cfg: TrainConfig) -> RunDir:
        """The directory `fcs train` writes for `cfg` (`train.run_dir`)."""
        return cls(Path(cfg.train.run_dir))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir | None:
        """The run a checkpoint belongs to, when it lies in a run's `checkpoints/` (else None)."""
        path = Path(checkpoint)
        return cls(path.parent.parent) if path.parent.name == "checkpoints" else None

    # -- what a run holds ------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def epochs_log(self) -> Path:
        return self.root / "epochs.log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        """`checkpoints/NAME.pt` (`latest`, `best`, `epoch_0003`, ...)."""
        return self.checkpoints / f"{name}{CHECKPOINT_SUFFIX}"

    @property
    def latest(self) -> Path:
        return self.checkpoint("latest")

    @staticmethod
    def epoch_name(epoch: int) -> str:
        return f"epoch_{epoch:04d}"

    def rank_rng(self, name: str, rank: int) -> Path:
        """The RNG state DDP rank `rank` (> 0) keeps beside checkpoint `name`."""
        return self.checkpoints / f"{name}.rank{rank}{RANK_RNG_SUFFIX}"

    def run_checkpoints(self) -> list[Path]:
        """Every model checkpoint of the run (not the ranks' RNG files), sorted by name."""
        return sorted(p for p in self.checkpoints.glob(f"*{CHECKPOINT_SUFFIX}") if not p.name.endswith(RANK_RNG_SUFFIX))

    @property
    def images(self) -> Path:
        return self.root / "images"

    def epoch_image(self, epoch: int) -> Path:
        return self.images / f"{self.epoch_name(epoch)}.png"

    @property
    def decoder_image(self) -> Path:
        return self.images / "decoder.png"

    @property
    def loss_plot(self) -> Path:
        return self.root / "plots" / "losses.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def plan_eval(self) -> Path:
        return self.root / "plan_eval"

    @property
    def closed_loop(self) -> Path:
        return self.root / "closed_loop"

    @property
    def status(self) -> Path:
        """What the run is doing (`fcs runs`): `{"state", "pid", "step", "message", "time", "data"}`."""
        return self.root / "status.json"

    def stall_report(self, stamp: str) -> Path:
        """Every thread's stack and the loader workers' states when the run stalled."""
        return self.root / f"stall-{stamp}.txt"

    def holds_run(self) -> bool:
        """Whether a run wrote here (a config, metrics, a latest checkpoint or a status)."""
        return self.root.is_dir() and any(p.exists() for p in (self.config, self.metrics, self.latest, self.status))

    @property
    def wandb(self) -> Path:
        """The W&B run this run logs to (`{"id", "project", "entity", "url"}`), resumed by `--resume`."""
        return self.root / "wandb.json"
