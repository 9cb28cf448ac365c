"""The next batch of a DataLoader, with a dead, stuck or failing worker turned into a `TrainError` naming it."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fcs_train.errors import TrainError


def _worker_error(message: str) -> str:
    """The original error line of an exception a DataLoader worker raised (torch re-raises it with the
    worker's traceback as its message): `StoreDataError: /s.zarr: data/rgb/...: shard file is missing`."""
    lines = [line for line in message.splitlines() if line.strip()]
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(\w+: )", r"\1", lines[-1].strip()) if lines else message


def next_batch(it: Iterator, timeout: float) -> dict | None:
    """`next(it)`, turning DataLoader worker deaths, timeouts and worker errors into messages that name them."""
    try:
        return next(it)
    except StopIteration:
        return None
    except Exception as e:
        msg = str(e)
        if "Original Traceback" in msg:
            raise TrainError(f"a DataLoader worker failed: {_worker_error(msg)}") from None
        if not isinstance(e, RuntimeError):
            raise
        if "timed out" in msg:
            worker = getattr(it, "_task_info", {}).get(getattr(it, "_rcvd_idx", -1), (None,))[0]
            workers = getattr(it, "_workers", [])
            pid = workers[worker].pid if worker is not None and worker < len(workers) else "?"
            raise TrainError(
                f"DataLoader worker {worker} (pid {pid}) sent no batch for {timeout:.0f} s "
                "(train.loader_timeout); it is stuck or the storage is unreachable"
            ) from e
        if "DataLoader worker" in msg:
            raise TrainError(
                f"{msg.splitlines()[0]}: a DataLoader worker died, most often killed for memory (see dmesg) or by a "
                "crash in a native library; lower data.num_workers or train.batch_size and resume with --resume"
            ) from e
        raise
