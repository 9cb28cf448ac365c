"""Reading pickles without running them: the globals a pickle names, and an unpickler limited to an allow-list.

Both `fcs_data.safe_io` (plain data in logger files) and `fcs_train`'s reference-checkpoint importer
(inert stand-ins for the reference's classes) judge a pickle by the globals it names, in their
Python 3 spelling (protocol 2 pickles say `__builtin__.set`), before anything is executed.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from fcs_data.errors import UnreadableFileError, UnsafePickleError

TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (non-zip) torch.save file
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}


def python3_name(module: str, name: str) -> str:
    """`module.name` as Python 3 resolves it (protocol 2 pickles say `__builtin__.dict`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


class AllowlistUnpickler(pickle.Unpickler):
    """An unpickler that resolves a global only when `resolve(full_name)` returns it; any other global
    raises `UnsafePickleError` naming the file and the global, before it can run."""

    def __init__(self, file: Any, path: str | Path, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.path = Path(path)

    def resolve(self, module: str, name: str) -> Any:
        """The object for global `module.name` (Python 3 names), or None to refuse it."""
        raise NotImplementedError

    def find_class(self, module: str, name: str) -> Any:
        full = python3_name(module, name)
        module, name = full.rsplit(".", 1)
        found = self.resolve(module, name)
        if found is None:
            raise UnsafePickleError(self.path, f"global {full}")
        return found


def _globals_of_one_pickle(f: io.BufferedIOBase) -> tuple[set[str], Any]:
    """The globals named by the pickle at `f`'s position (which ends after its STOP), and its value
    when it is a plain int (the legacy torch.save magic number)."""
    found: set[str] = set()
    memo: dict[int, Any] = {}
    pushed: list[Any] = []
    only_int = None
    for op, arg, _ in pickletools.genops(f):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.add(python3_name(*str(arg).split(" ", 1)))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            mod, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            found.add(python3_name(mod, attr) if isinstance(mod, str) and isinstance(attr, str)
                      else "<unresolvable global>")
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
            only_int = arg if not pushed else None
            pushed.append(None)
        elif name in ("PROTO", "FRAME", "STOP"):
            continue
        else:
            pushed.append(None)
    return found, only_int


def pickle_globals(path: Path) -> set[str]:
    """Every global the pickled object of `path` names: `torch.save` zip or legacy format, or a plain pickle.

    Nothing is unpickled. `UnreadableFileError` when the file is neither.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names:
                    raise UnreadableFileError(path, "a zip file without data.pkl: not a torch.save checkpoint")
                return _globals_of_one_pickle(io.BytesIO(z.read(names[0])))[0]
        with path.open("rb") as f:
            found, magic = _globals_of_one_pickle(f)
            if magic != TORCH_MAGIC:
                return found  # a plain pickle: its one object is what would be loaded
            for _ in range(3):  # protocol version, sys info, then the object (storages follow)
                more, _ = _globals_of_one_pickle(f)
                found |= more
            return found
    except (ValueError, EOFError) as e:  # pickletools: an unknown opcode, or the data ends before STOP
        raise UnreadableFileError(path, f"not a readable pickle or torch.save file ({type(e).__name__}: {e})") from None
