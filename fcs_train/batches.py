"""The next batch of a loader, with a stuck, dead or failing DataLoader worker turned into a `TrainError`.

The DataLoader's own `timeout` (`train.loader_timeout`) bounds the wait; the loader's
`LoaderWatchdog` says which worker it was waiting for (the one busy the longest) or which one is
gone, by id and pid. An exception raised inside a worker arrives as its original error line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from fcs_data.loader import WatchedLoader
from fcs_train.errors import TrainError


def _worker_error(message: str) -> str:
    """The original error line of an exception a DataLoader worker raised (torch re-raises it with the
    worker's traceback as its message): `StoreDataError: /s.zarr: data/rgb/...: shard file is missing`."""
    lines = [line for line in message.splitlines() if line.strip()]
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(\w+: )", r"\1", lines[-1].strip()) if lines else message


def next_batch(it: Iterator, loader: WatchedLoader) -> dict | None:
    """`next(it)` of `iter(loader)`, or None at the end of the epoch."""
    t0 = time.monotonic()
    try:
        return next(it)
    except StopIteration:
        return None
    except Exception as e:
        msg = str(e)
        if "Original Traceback" in msg:  # torch's ExceptionWrapper: an error raised inside a worker
            raise TrainError(f"a DataLoader worker failed: {_worker_error(msg)}") from None
        watchdog = loader.watchdog
        if not isinstance(e, RuntimeError) or watchdog is None:
            raise
        dead = watchdog.dead()
        if dead:
            w = dead[0]
            raise TrainError(
                f"DataLoader worker (pid {w.pid}) exited unexpectedly (worker {w.worker}): a DataLoader worker died, "
                "most often killed for memory (see dmesg) or by a crash in a native library; lower data.num_workers "
                "or train.batch_size and resume with --resume") from e
        if loader.timeout and time.monotonic() - t0 >= loader.timeout:
            stuck = watchdog.stuck()
            who = f"{stuck.worker} (pid {stuck.pid})" if stuck else "? (pid ?)"
            raise TrainError(
                f"DataLoader worker {who} sent no batch for {loader.timeout:.0f} s (train.loader_timeout); it is stuck "
                "or the storage is unreachable") from e
        raise
