"""`StorageTracker`: every tensor storage a step allocates and frees, in order, with what it belongs to.

A `TorchDispatchMode` sees every ATen op's outputs; a storage is new when the tracker has not seen
it, and freed when its weakref dies (a view or an in-place result shares its base's storage, so
it costs nothing). Each allocation carries a label, the part of the step that made it (the module
running, or the phase: inputs, backward, optimizer), and a label can change while the storage is
alive: a gradient the backward pass produced becomes `gradients` when it lands in `.grad`, a moment
the optimizer created becomes `optimizer state`. Kernel scratch memory that no op returns
(`kernels.workspace_bytes`) is recorded as a short-lived allocation around its op.

Nothing here rounds or knows about CUDA: the result is a `Trace` of raw byte counts, which
`fcs_train.fit.allocator` replays as the CUDA caching allocator would. It works the same on fake
tensors (a prediction) and real ones.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ALLOC, FREE = 0, 1

# report categories, in display order; every label maps to one
CATEGORIES = ("parameters", "gradients", "optimizer state", "inputs", "encoder", "predictor attention", "predictor",
              "decoder", "embeddings", "backward in flight", "optimizer temporaries", "kernel workspace", "other")


@dataclass
class Trace:
    """An allocation history.

    events `(E, 2)` int64: `(kind, allocation)` with kind ALLOC or FREE, in program order.
    sizes `(A,)` int64: raw bytes of each allocation (unrounded).
    ledger `(K, 4)` int64: `(event position, category, allocation, sign)`: the bytes of `allocation` enter
        (sign > 0) or leave (< 0) `category` once `events[:position]` happened: +-1 for allocations and
        frees, +-2 for a relabelling.
    marks: `(event position, phase)`: a phase (e.g. "step 2 backward") starts at that position.
    """

    events: np.ndarray
    sizes: np.ndarray
    ledger: np.ndarray
    marks: list[tuple[int, str]] = field(default_factory=list)
    attention_kernels: dict[str, int] = field(default_factory=dict)

    def phase_at(self, position: int) -> str:
        """The phase running when `events[position]` happened."""
        name = ""
        for start, phase in self.marks:
            if start > position:
                break
            name = phase
        return name

    def structure(self) -> tuple[bytes, bytes]:
        """What must be equal for two traces to be the same program on differently sized inputs."""
        return self.events.tobytes(), self.ledger[:, :2].tobytes() + self.ledger[:, 3].tobytes()


class _Record:
    __slots__ = ("alloc", "category", "ref")

    def __init__(self, alloc: int, category: int, ref: weakref.ref | None):
        self.alloc, self.category, self.ref = alloc, category, ref


class StorageTracker(TorchDispatchMode):
    """Records a `Trace` of the ops run while it is active (enter it inside `FakeTensorMode` for fake tensors).

    workspace: bytes of kernel scratch memory per op (`kernels.workspace_bytes`), or None.
    output_bytes: storage bytes of an op's output where they differ from its tensor's (e.g.
        `kernels.cpu_output_bytes`), or None.
    """

    def __init__(self, workspace: Callable[[Any, tuple], int] | None = None,
                 output_bytes: Callable[[Any, tuple], int | None] | None = None):
        super().__init__()
        self.workspace = workspace
        self.output_bytes = output_bytes
        self._events: list[tuple[int, int]] = []
        self._sizes: list[int] = []
        self._ledger: list[tuple[int, int, int, int]] = []
        self._live: dict[int, _Record] = {}
        self._labels: list[int] = []
        self.default = CATEGORIES.index("other")
        self.marks: list[tuple[int, str]] = []
        self.closed = False

    # -- recording --------------------------------------------------------------------------------
    def _allocate(self, nbytes: int, category: int) -> int:
        alloc = len(self._sizes)
        self._sizes.append(nbytes)
        self._events.append((ALLOC, alloc))
        self._ledger.append((len(self._events), category, alloc, 1))
        return alloc

    def _free(self, alloc: int, category: int) -> None:
        self._events.append((FREE, alloc))
        self._ledger.append((len(self._events), category, alloc, -1))

    def _died(self, key: int, _ref: weakref.ref) -> None:
        rec = self._live.pop(key, None)
        if rec is not None and not self.closed:
            self._free(rec.alloc, rec.category)

    def category(self) -> int:
        return self._labels[-1] if self._labels else self.default

    def track(self, t: torch.Tensor, category: str | None = None, nbytes: int | None = None) -> None:
        """Count `t`'s storage from now on. Tensors made before the tracker started (parameters) must be
        tracked this way first, else the first view of one an op returns counts it as new."""
        st = t.untyped_storage()
        key = id(st)
        if key in self._live or st.nbytes() == 0:
            return
        cat = CATEGORIES.index(category) if category else self.category()
        size = st.nbytes() if nbytes is None else max(nbytes, st.nbytes())
        self._live[key] = _Record(self._allocate(size, cat), cat, weakref.ref(st, lambda r, k=key: self._died(k, r)))

    def relabel(self, t: torch.Tensor, category: str) -> None:
        """`t`'s storage belongs to `category` from now on (tracked first if it is not yet)."""
        rec = self._live.get(id(t.untyped_storage()))
        if rec is None:
            self.track(t, category)
            return
        new = CATEGORIES.index(category)
        if rec.category != new:
            pos = len(self._events)
            self._ledger.append((pos, rec.category, rec.alloc, -2))
            self._ledger.append((pos, new, rec.alloc, 2))
            rec.category = new

    def mark(self, phase: str) -> None:
        self.marks.append((len(self._events), phase))

    @contextlib.contextmanager
    def label(self, category: str) -> Iterator[None]:
        """Allocations made inside belong to `category` (unless a module hook says otherwise)."""
        self._labels.append(CATEGORIES.index(category))
        try:
            yield
        finally:
            self._labels.pop()

    def label_modules(self, modules: dict[torch.nn.Module, str]) -> Callable[[], None]:
        """Allocations made while one of `modules` runs its forward belong to its category; returns
        the function that removes the hooks. A module may run several times per step."""
        handles = []
        for module, category in modules.items():
            cat = CATEGORIES.index(category)

            def push(_m: torch.nn.Module, _args: Any, c: int = cat) -> None:
                self._labels.append(c)

            def pop(_m: torch.nn.Module, _args: Any, _out: Any) -> None:
                self._labels.pop()

            handles += [module.register_forward_pre_hook(push), module.register_forward_hook(pop)]
        return lambda: [h.remove() for h in handles]

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        scratch = self.workspace(func, args) if self.workspace is not None else 0
        ws = self._allocate(scratch, CATEGORIES.index("kernel workspace")) if scratch else None
        out = func(*args, **(kwargs or {}))
        override = self.output_bytes(func, args) if self.output_bytes is not None else None
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t, nbytes=override)
        if ws is not None:
            self._free(ws, CATEGORIES.index("kernel workspace"))
        return out

    def result(self, attention_kernels: dict[str, int] | None = None) -> Trace:
        """The trace so far; storages still alive stay allocated (freeing them later is not recorded).

        Storages freed together (a graph or a dict released at once) die in an arbitrary order; each
        such run of frees is put in allocation order, so one program always gives one trace.
        """
        self.closed = True
        events = np.asarray(self._events, np.int64).reshape(-1, 2)
        ledger = np.asarray(self._ledger, np.int64).reshape(-1, 4)
        frees = events[:, 0] == FREE
        if frees.any():
            runs = np.cumsum(~frees)  # an allocation and the frees after it, up to the next allocation
            events = events[np.lexsort((events[:, 1], events[:, 0], runs))]
            freed_at = np.full(len(self._sizes), -1, np.int64)
            is_free = events[:, 0] == FREE
            freed_at[events[is_free, 1]] = np.nonzero(is_free)[0] + 1
            freed = ledger[:, 3] == -1  # relabelling moves bytes with +-2
            ledger = ledger.copy()
            ledger[freed, 0] = freed_at[ledger[freed, 2]]
            ledger = ledger[np.argsort(ledger[:, 0], kind="stable")]
        return Trace(events, np.asarray(self._sizes, np.int64), ledger, list(self.marks), dict(attention_kernels or {}))


@dataclass(frozen=True)
class Peak:
    """The largest live total of a replayed trace, where it happened and what it was made of.

    bytes: live bytes at the peak; position: index into `Trace.events`; phase: the phase running;
    composition: bytes per category (`CATEGORIES`) at the peak.
    """

    bytes: int
    position: int
    phase: str
    composition: dict[str, int]


def live_bytes(trace: Trace, sizes: np.ndarray) -> np.ndarray:
    """Live bytes after each event `(E,)`, for allocation sizes `sizes (A,)` (e.g. rounded)."""
    kinds, allocs = trace.events[:, 0], trace.events[:, 1]
    return np.cumsum(np.where(kinds == ALLOC, sizes[allocs], -sizes[allocs]))


def composition_at(trace: Trace, sizes: np.ndarray, position: int) -> dict[str, int]:
    """Bytes per category once `events[: position + 1]` happened."""
    led = trace.ledger[trace.ledger[:, 0] <= position + 1]
    totals = np.zeros(len(CATEGORIES), np.int64)
    np.add.at(totals, led[:, 1], np.sign(led[:, 3]) * sizes[led[:, 2]])
    return {CATEGORIES[i]: int(v) for i, v in enumerate(totals) if v}


def peak(trace: Trace, sizes: np.ndarray, start: int = 0, stop: int | None = None) -> Peak:
    """The peak of live bytes over `events[start:stop]` (the whole trace by default)."""
    live = live_bytes(trace, sizes)
    stop = len(live) if stop is None else stop
    if stop <= start:
        return Peak(0, start, trace.phase_at(start), {})
    at = start + int(np.argmax(live[start:stop]))
    return Peak(int(live[at]), at, trace.phase_at(at), composition_at(trace, sizes, at))
