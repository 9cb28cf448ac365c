"""SIGTERM and SIGUSR1 as a resumable stop, like Ctrl-C.

SLURM, `docker stop` and `kill` send SIGTERM; SLURM sends SIGUSR1 ahead of a pre-emption
(`#SBATCH --signal=USR1@120`). While `stop_signals()` is active in the main thread either one raises
`Preempted` (a `KeyboardInterrupt`, so every path that writes a checkpoint on Ctrl-C writes one here
too); the command then exits 128 + the signal number (143, 138), as the shell reports a process
killed by it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(KeyboardInterrupt):
    """The run was asked to stop by `signum`; a resumable checkpoint is written on the way out."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, _frame: object) -> None:
    raise Preempted(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM / SIGUSR1 raise `Preempted` inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
