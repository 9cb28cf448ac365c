"""How much the embeddings change between frames `fs` apart: the visual signal each frameskip gives.

A world model's `z_visual_loss` is only meaningful next to what the trivial predictor gets: the one
that repeats the last context frame. At frameskip `fs` that predictor's loss is the mean squared
change of the encoder's patch embeddings between frames `fs` apart, which this module measures over
a store's (validation) episodes before any training: if it is tiny at your frameskip, the frames
barely change and the predictor can score well by copying.

Units are those of `z_visual_loss` / `z_proprio_loss` (mean over tokens and dims of the squared
difference), so the rows compare directly with a run's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fcs_data.schemas.store import ArrayStats
from fcs_data.splits import EpisodeSplit
from fcs_data.stats import normalize
from fcs_data.store import Store
from fcs_data.windows import training_normalizer
from fcs_train.checkpoint import RunCheckpoint
from fcs_train.models import VWorldModel, to_model_input


@dataclass(frozen=True)
class FrameskipChange:
    frameskip: int
    pairs: int
    visual: float  # mean squared change of the patch embeddings
    proprio: float  # mean squared change of the proprio embeddings


def _pairs(lengths: np.ndarray, episodes: np.ndarray, fs: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `n` `(episode, t)` with `t + fs` inside the episode, drawn uniformly over all such pairs."""
    counts = np.maximum(lengths[episodes] - fs, 0)
    total = int(counts.sum())
    if total == 0:
        return np.empty((0, 2), np.int64)
    picks = rng.choice(total, size=min(n, total), replace=False)
    cum = np.concatenate([[0], np.cumsum(counts)])
    k = np.searchsorted(cum, picks, side="right") - 1
    return np.stack([episodes[k], picks - cum[k]], axis=1)


@torch.no_grad()
def embedding_change(model: VWorldModel, store: Store, proprio_stats, *, episodes: np.ndarray,
                     frameskips: range, pairs: int = 256, batch: int = 32, seed: int = 0,
                     device: torch.device | str = "cpu") -> list[FrameskipChange]:
    """Per frameskip, the mean squared change of the embeddings between frames that far apart."""
    model.eval()
    rng = np.random.default_rng(seed)
    lengths = store.episode_lengths
    proprio = store.layout.proprio_slice
    out = []
    for fs in frameskips:
        chosen = _pairs(lengths, episodes, fs, pairs, rng)
        sums = np.zeros(2)
        for i in range(0, len(chosen), batch):
            part = chosen[i : i + batch]
            rows = store.episode_starts[part[:, 0]] + part[:, 1]
            ids = np.stack([rows, rows + fs], axis=1).reshape(-1)  # (2n,): frame t, frame t + fs, ...
            frames = torch.from_numpy(store.read_frames(ids)).permute(0, 3, 1, 2).to(device)
            state = store.read_rows("state", ids)
            p = torch.from_numpy(normalize(state[:, proprio], proprio_stats)).to(device)
            visual = to_model_input(frames, model.image_size).reshape(len(part), 2, 3, model.image_size,
                                                                       model.image_size)
            z = model.encode_obs({"visual": visual, "proprio": p.reshape(len(part), 2, -1)})
            sums[0] += float(((z["visual"][:, 1] - z["visual"][:, 0]) ** 2).mean(dim=(1, 2)).sum())
            sums[1] += float(((z["proprio"][:, 1] - z["proprio"][:, 0]) ** 2).mean(dim=1).sum())
        n = max(len(chosen), 1)
        out.append(FrameskipChange(fs, len(chosen), sums[0] / n, sums[1] / n))
    return out


def checkpoint_split(store: Store, ckpt: RunCheckpoint) -> tuple[np.ndarray, ArrayStats]:
    """`(episodes, proprio statistics)` for measuring a checkpoint's data: the validation episodes of
    its split (the store's default split when it records none; all episodes when that has no validation
    episode) and its proprio statistics (else its split's training statistics)."""
    split = ckpt.split or EpisodeSplit()
    episodes = split.episodes(store.num_episodes, "val")
    if len(episodes) == 0:
        episodes = np.arange(store.num_episodes)
    normalizer = ckpt.normalizer or training_normalizer(store, split.episodes(store.num_episodes, "train"))
    return episodes, normalizer.proprio
