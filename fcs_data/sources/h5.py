"""Reading datasets from users' HDF5 files without trusting them.

Every dataset fcs reads goes through `read` (or `inspect` when only its shape and dtype matter), which
checks, before any value is used, that the name leads to a dataset stored in the file itself (not a
group, not an external link, not a dangling link), that it holds data (not a null dataspace), and that
its dtype and shape are the ones the layout declares. A surprise is a `DatasetError` (fcs_data.errors)
naming the file, the dataset and what was expected, which validation turns into a finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fcs_data.errors import DatasetError, UnreadableFileError

Shape = tuple[int, ...]
ANY = -1  # a shape entry that may take any size (the time axis of a demo)


def shape_text(shape: Shape) -> str:
    """`(T, 224, 224, 3)` style, `T` for a free axis."""
    parts = ["T" if s == ANY else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def dtype_ok(dtype: np.dtype, spec: str) -> bool:
    """`spec` is `real` (any integer or float), `integer`, or an exact numpy dtype name."""
    if spec == "real":
        return dtype.kind in "fiu"
    if spec == "integer":
        return dtype.kind in "iu"
    return dtype == np.dtype(spec)


def _spec_text(spec: str) -> str:
    return {"real": "a real number dtype", "integer": "an integer dtype"}.get(spec, spec)


def shape_ok(shape: Shape, expected: Shape) -> bool:
    return len(shape) == len(expected) and all(e in (ANY, s) for s, e in zip(shape, expected, strict=True))


@contextmanager
def open_file(path: str | Path) -> Iterator[Any]:
    """`h5py.File(path, "r")`, a file that is not HDF5 (truncated, empty, another format) an
    `UnreadableFileError`."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise UnreadableFileError(path, f"not a readable HDF5 file ({str(e).splitlines()[0] if str(e) else e})") from e
    try:
        yield f
    finally:
        f.close()


def has_link(group: Any, name: str) -> bool:
    """Whether `name` (nested with `/`) names something in `group`, dangling links included."""
    import h5py

    obj = group
    for part in name.split("/"):
        if not isinstance(obj, h5py.Group) or obj.get(part, getlink=True) is None:
            return False
        try:
            obj = obj[part]
        except (KeyError, OSError, RuntimeError, ValueError):
            return True  # a link that exists but cannot be followed
    return True


def resolve(group: Any, name: str, path: str | Path) -> Any:
    """The `h5py.Dataset` `name` of `group`, or a `DatasetError` saying why not."""
    import h5py

    obj = group
    parts = name.split("/")
    for i, part in enumerate(parts):
        where = "/".join(parts[:i])
        if not isinstance(obj, h5py.Group):
            raise DatasetError(path, name, f"cannot exist: {where} is a dataset, not a group")
        link = obj.get(part, getlink=True)
        if link is None:
            raise DatasetError(path, name, "is missing")
        if isinstance(link, h5py.ExternalLink):
            raise DatasetError(path, name, f"is an external link to {link.filename}:{link.path}",
                               "data stored in the file itself")
        try:
            obj = obj[part]
        except (KeyError, OSError, RuntimeError, ValueError) as e:
            kind = "a dangling soft link" if isinstance(link, h5py.SoftLink) else "unreadable"
            raise DatasetError(path, name, f"cannot be opened ({kind}: {str(e).splitlines()[0] if str(e) else e})"
                               ) from e
    if isinstance(obj, h5py.Group):
        raise DatasetError(path, name, "is a group, not a dataset")
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(path, name, f"is a {type(obj).__name__}, not a dataset")
    return obj


def inspect(group: Any, name: str, path: str | Path, shape: Shape | None = None, dtype: str | None = None) -> Any:
    """The dataset `name`, checked: it holds data, its dtype is `dtype` and its shape `shape` (when given)."""
    ds = resolve(group, name, path)
    expected = " ".join(x for x in (_spec_text(dtype) if dtype else "", shape_text(shape) if shape else "") if x)
    if ds.shape is None:
        raise DatasetError(path, name, "holds no data (a null dataspace)", expected)
    try:
        found_dtype = ds.dtype
    except (TypeError, ValueError, OSError) as e:
        raise DatasetError(path, name, f"has a dtype numpy cannot represent ({e})", expected) from e
    if dtype is not None and not dtype_ok(found_dtype, dtype):
        raise DatasetError(path, name, f"has dtype {found_dtype}", expected)
    if shape is not None and not shape_ok(tuple(ds.shape), shape):
        raise DatasetError(path, name, f"has shape {shape_text(tuple(ds.shape))}", expected)
    return ds


def read(group: Any, name: str, path: str | Path, shape: Shape | None = None, dtype: str | None = None,
         rows: slice | np.ndarray | None = None) -> np.ndarray:
    """The values of dataset `name` (or its `rows`), after `inspect`; a decoding failure (a corrupt
    chunk, a truncated file) is an `UnreadableFileError` naming the file and the dataset."""
    ds = inspect(group, name, path, shape, dtype)
    try:
        return np.asarray(ds[()] if rows is None else ds[rows])
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise DatasetError(path, name, f"cannot be decoded ({str(e).splitlines()[0] if str(e) else e})") from e


def describe(group: Any, name: str, path: str | Path) -> tuple[Shape, str] | str:
    """`(shape, dtype)` of dataset `name`, or what is wrong with it in words (detection's probe)."""
    try:
        ds = inspect(group, name, path)
        return tuple(ds.shape), str(ds.dtype)
    except DatasetError as e:
        return e.problem
