"""One way to run per-episode or per-shard work: inline, or in a pool of worker processes.

Workers start with `forkserver` (never a fork of a parent that may hold zarr, torch or file
state) and limit torch to one intra-op thread each, so N workers use N cores. An `FcsError` raised
in a worker reaches the caller as itself (they pickle intact); a worker that dies becomes an
`FcsError` that says so.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from fcs_data.errors import WorkerDied


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def unguarded_main_script() -> str | None:
    """The running script's path when it has no module-level `if __name__ == "__main__":` test.

    Worker processes started with forkserver or spawn import the main script; without the guard they
    run its work again, and fail while bootstrapping. None for `python -m fcs`, a REPL or a notebook.
    """
    import ast
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(getattr(main, "__spec__", None), "name", "").startswith(("fcs", "pytest")):
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return None
    return str(path)


class WorkerPool:
    """`map(fn, *iterables)` in order; `fn` must be a module-level function when `workers > 1`."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            ctx = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker)
        return self._executor

    def map(self, fn: Callable[..., Any], *iterables: Iterable, parallel: bool = True) -> Iterator[Any]:
        """Results of `fn(*args)`; `parallel=False` (or one worker) runs inline in this process."""
        if self.workers <= 1 or not parallel:
            return map(fn, *iterables)
        return self._results(self._pool().map(fn, *iterables))

    @staticmethod
    def _results(results: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from results
        except BrokenProcessPool as e:
            script = unguarded_main_script()
            if script is not None:
                raise WorkerDied(
                    f"worker processes could not start: {script} runs its code at import time, without an "
                    "`if __name__ == \"__main__\":` guard, and every worker process imports it (Python's "
                    "forkserver/spawn start methods); put the calls that start work under that guard",
                    cause=str(e)) from e
            raise WorkerDied("a worker process died without a result, most often killed for memory (see dmesg); "
                             "run again with fewer --workers", cause=str(e)) from e

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)
