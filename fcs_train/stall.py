"""`StallWatchdog`: a run that stops making progress is stopped with a diagnosis, never left frozen.

The DataLoader's own timeout cannot see every hang: a worker stopped while it hands over a batch
leaves the main process blocked in `read()` on the worker's socket, and with `loader_timeout 0`
nothing waits at all. A thread of the main process therefore watches the beats the trainer gives
(every batch received, every optimizer step). When none came for `timeout_s`, it writes every
thread's stack (faulthandler) and each loader worker's state (pid, process status, seconds on its
batch) to `RUN/stall-<time>.txt`, names the culprit (a stopped worker, else the one busy the
longest) and interrupts the main thread's wait with `StallError`. The trainer writes a resumable
checkpoint, then `stop_culprit()` kills the worker: killing it earlier would let torch's SIGCHLD
handler raise in the middle of that checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fcs_data.watchdog import LoaderWatchdog
from fcs_train.errors import StallError
from fcs_train.run_dir import RunDir

_INTERRUPT = signal.SIGUSR2


@dataclass(frozen=True)
class WorkerReport:
    loader: str
    worker: int
    pid: int
    status: str  # psutil's: running, sleeping, stopped, disk-sleep, zombie, gone
    busy_s: float

    def line(self) -> str:
        return (f"{self.loader} loader worker {self.worker} (pid {self.pid}): {self.status}, "
                f"{self.busy_s:.0f} s on its batch" if self.busy_s else
                f"{self.loader} loader worker {self.worker} (pid {self.pid}): {self.status}, idle")


def worker_reports(loaders: dict[str, LoaderWatchdog | None]) -> list[WorkerReport]:
    """Every worker of the named loaders, with its process status read from the OS."""
    import psutil

    out = []
    for name, watchdog in loaders.items():
        for w in watchdog.workers() if watchdog is not None else []:
            try:
                status = psutil.Process(w.pid).status()
            except psutil.NoSuchProcess:
                status = "gone"
            out.append(WorkerReport(name, w.worker, w.pid, status, w.busy_s))
    return out


def culprit(reports: list[WorkerReport]) -> WorkerReport | None:
    """The worker to blame: a stopped one first, else the one busy on its batch the longest."""
    stopped = [r for r in reports if r.status in ("stopped", "tracing-stop")]
    if stopped:
        return stopped[0]
    busy = [r for r in reports if r.busy_s > 0 and r.status != "gone"]
    return max(busy, key=lambda r: r.busy_s) if busy else None


class StallWatchdog:
    """Watch `beat()`s from the main thread; on `timeout_s` without one, diagnose and end the wait."""

    def __init__(self, timeout_s: float, run: RunDir, loaders: Callable[[], dict[str, LoaderWatchdog | None]],
                 setting: str = "train.stall_timeout"):
        self.timeout_s = timeout_s
        self.run = run
        self.loaders = loaders
        self.setting = setting
        self.reason: str | None = None
        self.report: Path | None = None
        self.culprit: WorkerReport | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        self._last = time.monotonic()

    @contextlib.contextmanager
    def watching(self) -> Iterator[StallWatchdog]:
        """Watch while the block runs (from the main thread; a timeout of 0 watches nothing)."""
        if self.timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(_INTERRUPT, self._interrupted)
        self._stop.clear()
        self.beat()
        self._thread = threading.Thread(target=self._watch, name="fcs-stall-watchdog", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            signal.signal(_INTERRUPT, previous)

    def _interrupted(self, _signum: int, _frame: object) -> None:
        raise StallError(self.reason or f"no progress for {self.timeout_s:.0f} s ({self.setting})")

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, max(self.timeout_s / 4, 0.2))):
            idle = time.monotonic() - self._last
            if idle >= self.timeout_s and self.reason is None:
                self._fire(idle)
                return

    def _fire(self, idle: float) -> None:
        reports = worker_reports(self.loaders())
        blame = culprit(reports)
        self.report = self._write_report(idle, reports)
        where = f"; every thread's stack and the workers' states are in {self.report}" if self.report else ""
        self.culprit = blame
        if blame is not None:
            self.reason = (f"no training progress for {idle:.0f} s ({self.setting}): DataLoader worker {blame.worker} "
                           f"(pid {blame.pid}) of the {blame.loader} loader is {blame.status}"
                           f"{f' on one batch for {blame.busy_s:.0f} s' if blame.busy_s else ''}; fcs stopped it "
                           f"(a stuck read, a dead network mount, or a stopped process){where}")
        else:
            self.reason = (f"no training progress for {idle:.0f} s ({self.setting}) and no DataLoader worker is busy: "
                           f"the main process is stuck{where}")
        signal.pthread_kill(threading.main_thread().ident or 0, _INTERRUPT)

    def stop_culprit(self, settle_s: float = 2.0) -> None:
        """Kill the worker blamed (after the checkpoint is written), and absorb the error torch's SIGCHLD
        handler raises for it, so it cannot replace the diagnosis."""
        if self.culprit is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.culprit.pid, signal.SIGKILL)
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except RuntimeError:  # "DataLoader worker (pid N) is killed by signal", raised by torch's handler
                return

    def _write_report(self, idle: float, reports: list[WorkerReport]) -> Path | None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.run.stall_report(stamp)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as f:
                f.write(f"no progress for {idle:.0f} s ({self.setting} = {self.timeout_s:g} s)\n\n")
                f.write("DataLoader workers:\n")
                f.writelines(f"  {r.line()}\n" for r in reports)
                if not reports:
                    f.write("  none\n")
                f.write("\nthreads of the main process:\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
        except OSError:
            return None
        return path
