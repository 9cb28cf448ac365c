"""What a bug report needs: Python, torch, CUDA and the GPUs, fcs and its extras (`fcs env`, crash files).

Package versions come from their metadata, so nothing heavy is imported; with `devices=True`
torch is asked about CUDA.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from fcs import __version__

# what fcs needs, then what its extras add
PACKAGES = ("torch", "torchvision", "numpy", "zarr", "numcodecs", "h5py", "pydantic", "typer", "rich", "timm",
            "torchmetrics", "matplotlib", "omegaconf", "websockets", "msgpack", "gymnasium", "wandb", "tensorboard",
            "accelerate", "hypothesis")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                           "gpus": []}
    if out["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 2),
                                "capability": f"{p.major}.{p.minor}"})
    return out


def environment(devices: bool = True) -> dict[str, Any]:
    """Versions and hardware as JSON-able data; `devices=False` never imports torch."""
    env: dict[str, Any] = {
        "fcs": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {p: _version(p) for p in PACKAGES},
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "FCS_CACHE_DIR")
                if k in os.environ},
    }
    if devices and env["packages"]["torch"]:
        try:
            env |= _devices()
        except Exception as e:  # a broken CUDA install is exactly what a bug report must show
            env["cuda_error"] = f"{type(e).__name__}: {e}"
    return env


def environment_text(env: dict[str, Any]) -> str:
    """`environment()` as the lines of a bug report."""
    lines = [f"fcs {env['fcs']}, Python {env['python']}, {env['platform']}, {env['cpus']} CPUs"]
    if "cuda_available" in env:
        gpus = "; ".join(f"{g['index']}: {g['name']} ({g['memory_gib']} GiB, sm {g['capability']})"
                         for g in env["gpus"]) or "none"
        lines.append(f"CUDA available: {env['cuda_available']} (torch built for CUDA {env['torch_cuda']}, cuDNN "
                     f"{env['cudnn']}); GPUs: {gpus}")
    if "cuda_error" in env:
        lines.append(f"CUDA error: {env['cuda_error']}")
    lines.append("packages: " + ", ".join(f"{p} {v}" for p, v in env["packages"].items() if v))
    missing = [p for p, v in env["packages"].items() if not v]
    if missing:
        lines.append("not installed: " + ", ".join(missing))
    if env["env"]:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in env["env"].items()))
    return "\n".join(lines)


