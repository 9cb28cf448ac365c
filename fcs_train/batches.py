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
from fcs_train.errors import LoaderFailure, StallError
from fcs_train.stall import StallWatchdog


def _worker_error(message: str) -> str:
    """The original error line of an exception a DataLoader worker raised (torch re-raises it with the
    worker's traceback as its message): `StoreDataError: /s.zarr: data/rgb/...: shard file is missing`."""
    lines = [line for line in message.splitlines() if line.strip()]
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(\w+: )", r"\1", lines[-1].strip()) if lines else message


def next_batch(it: Iterator, loader: WatchedLoader, stall: StallWatchdog | None = None) -> dict | None:
    """`next(it)` of `iter(loader)`, or None at the end of the epoch; each batch is a beat of `stall`.

    A failure of the data side is a `LoaderFailure` (the model is sound: the trainer checkpoints);
    after `stall` stopped a stuck worker, its diagnosis is the error.
    """
    t0 = time.monotonic()
    try:
        batch = next(it)
    except StopIteration:
        return None
    except StallError:
        raise
    except Exception as e:
        if stall is not None and stall.reason is not None:
            raise StallError(stall.reason) from None
        msg = str(e)
        if "Original Traceback" in msg:  # torch's ExceptionWrapper: an error raised inside a worker
            raise LoaderFailure(f"a DataLoader worker failed: {_worker_error(msg)}") from None
        watchdog = loader.watchdog
        if not isinstance(e, RuntimeError) or watchdog is None:
            raise
        dead = watchdog.dead()
        if dead:
            w = dead[0]
            raise LoaderFailure(
                f"DataLoader worker (pid {w.pid}) exited unexpectedly (worker {w.worker}): a DataLoader worker died, "
                "most often killed for memory (see dmesg) or by a crash in a native library; lower data.num_workers "
                "or train.batch_size and resume with --resume") from e
        if loader.timeout and time.monotonic() - t0 >= loader.timeout:
            stuck = watchdog.stuck()
            who = f"{stuck.worker} (pid {stuck.pid})" if stuck else "? (pid ?)"
            raise LoaderFailure(
                f"DataLoader worker {who} sent no batch for {loader.timeout:.0f} s (train.loader_timeout); it is stuck "
                "or the storage is unreachable") from e
        raise
    if stall is not None:
        stall.beat()
    return batch
