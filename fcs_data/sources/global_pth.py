"""The v1 logger: `states.pth (N, T_max, S)` and `actions.pth (N, T_max, A)` at the dataset root."""

from __future__ import annotations

import torch

from fcs_data.errors import FcsError, UnreadableFileError
from fcs_data.safe_io import load_tensor
from fcs_data.schemas import Finding, SourceManifest
from fcs_data.sources.base import StepArrays, file_finding
from fcs_data.sources.episode_dirs import EpisodeDirSource

_REAL = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16,
         torch.int32, torch.int64)


class GlobalPthSource(EpisodeDirSource):
    """v1 logger (data_logger.py): `states.pth (N, T_max, S)` and `actions.pth (N, T_max, A)` float32 at the
    root, zero-padded past each episode's length."""

    _states: torch.Tensor | None = None
    _actions: torch.Tensor | None = None

    def _tensor(self, name: str) -> torch.Tensor:
        return load_tensor(self.root / name, mmap=True)

    def _scan_kind(self, manifest: SourceManifest, findings: list[Finding]) -> None:
        n = manifest.num_episodes
        for name, dim, code, what in (
            (self.layout.sources.states_file, self.layout.state_dim, "state-dim", "state"),
            (self.layout.sources.actions_file, self.layout.action_dim, "action-dim", "action"),
        ):
            try:
                t = self._tensor(name)
            except (FcsError, OSError) as e:
                findings.append(file_finding(e, self.root / name, self.root))
                continue
            if t.dtype not in _REAL:
                findings.append(Finding.make(code, f"{name} has dtype {t.dtype}, expected float32", file=name,
                                             field=what))
                continue
            if t.ndim != 3:
                findings.append(Finding.make(code, f"{name} has shape {tuple(t.shape)}, expected (N, T_max, {dim})",
                                             file=name, field=what))
                continue
            if t.shape[2] != dim:
                findings.append(Finding.make(
                    code, f"{name}: {what} dimension is {t.shape[2]}, layout {self.layout.name} says {dim}",
                    file=name, field=what,
                ))
            if t.shape[0] != n:
                findings.append(Finding.make(
                    "row-count", f"{name} has {t.shape[0]} rows for {n} episodes", file=name, field=what,
                ))
            for e in manifest.episodes:
                if e.length is not None and e.length > t.shape[1]:
                    findings.append(Finding.make(
                        "length-exceeds-tmax",
                        f"metadata length {e.length} exceeds T_max {t.shape[1]} of {name}",
                        episode=e.index, file=name,
                    ))
            if not t.dtype.is_floating_point:
                findings.append(Finding.make(code, f"{name} has dtype {t.dtype}, expected float32", file=name))

    def _rows(self, name: str, tensor: torch.Tensor, dim: int, episode: int, length: int) -> torch.Tensor:
        path = self.root / name
        if tensor.dtype not in _REAL or tensor.ndim != 3 or tensor.shape[2] != dim:
            raise UnreadableFileError(path, f"holds {tuple(tensor.shape)} {tensor.dtype}, expected (N, T_max, {dim}) "
                                            "float32")
        if episode >= tensor.shape[0] or length > tensor.shape[1]:
            raise UnreadableFileError(path, f"has {tuple(tensor.shape[:2])} rows and steps; episode {episode} needs "
                                            f"{length} steps")
        return tensor[episode, :length]

    def read_steps(self, episode: int, length: int) -> StepArrays:
        if self._states is None or self._actions is None:
            self._states = self._tensor(self.layout.sources.states_file)
            self._actions = self._tensor(self.layout.sources.actions_file)
        src = self.layout.sources
        state = self._rows(src.states_file, self._states, self.layout.state_dim, episode, length)
        action = self._rows(src.actions_file, self._actions, self.layout.action_dim, episode, length)
        return StepArrays(state.to(torch.float32).numpy().copy(), action.to(torch.float32).numpy().copy())
