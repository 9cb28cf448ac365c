"""One process or many (torchrun): rank, world size and device, with the same code path.

`torchrun --nproc_per_node N -m fcs train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
process group uses NCCL on CUDA and gloo on CPU. Without those variables this is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(values: dict[str, float], info: DistInfo, weight: float = 1.0) -> dict[str, float]:
    """Weighted means of scalar values over all processes (identity with one process)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64,
                     device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def mean_tensor(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over all processes (itself with one process); one collective, on its device."""
    if not info.distributed:
        return values
    out = values.detach().to(info.device if info.device.type == "cuda" else "cpu", torch.float64).clone()
    dist.all_reduce(out)
    return out / info.world_size


def broadcast_from_main(info: DistInfo, value: str) -> str:
    """Rank 0's `value` on every rank (e.g. the run directory rank 0 chose); as is without DDP."""
    if not info.distributed:
        return value
    box = [value if info.is_main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return str(box[0])
