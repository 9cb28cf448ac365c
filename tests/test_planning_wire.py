"""The planning wire format (msgpack, arrays as raw bytes, never pickle), shared by server and client."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest

from fcs_train.planning.wire import WireError, pack, unpack


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "float16", "float32", ">f8", "bool", "complex64"])
def test_arrays_of_every_numeric_dtype_round_trip_exactly(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    out = unpack(pack({"cmd": "plan", "image": a, "cost": np.float32(0.5), "n": np.int64(3)}))
    assert out["image"].dtype == a.dtype and out["image"].shape == a.shape
    np.testing.assert_array_equal(out["image"], a)
    assert out["image"].flags.writeable and out["cost"] == 0.5 and out["n"] == 3


def test_non_contiguous_and_empty_arrays_round_trip():
    a = np.arange(30, dtype=np.float32).reshape(5, 6)[:, ::2]
    np.testing.assert_array_equal(unpack(pack({"a": a}))["a"], a)
    assert unpack(pack({"a": np.zeros((0, 8))}))["a"].shape == (0, 8)


def test_object_and_string_arrays_are_never_sent():
    with pytest.raises(TypeError, match="only numeric"):
        pack({"a": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(TypeError, match="only numeric"):
        pack({"a": np.array(["abc"])})


def _raw_array(**fields) -> bytes:
    base = {"__ndarray__": True, "data": b"\x00" * 8, "dtype": "<f4", "shape": [2]}
    return msgpack.packb({"cmd": "plan", "image": {**base, **fields}}, use_bin_type=True)


@pytest.mark.parametrize(("message", "match"), [
    (pickle.dumps({"cmd": "plan"}), "pickled message"),
    (pickle.dumps({"cmd": "plan"}, protocol=2), "pickled message"),
    ("{\"cmd\": \"plan\"}", "text message"),
    (b"\xc1\x00", "not a msgpack message"),
    (msgpack.packb([1, 2, 3]), "must be a map"),
    (msgpack.packb({"a": 1}) + b"\x01", "not a msgpack message"),
    (_raw_array(dtype="|O"), "refused"),
    (_raw_array(dtype="<U2"), "refused"),
    (_raw_array(dtype="f4,i4"), "refused"),
    (_raw_array(dtype="no-such-type"), "unknown array dtype"),
    (_raw_array(shape=[3]), "needs 12 bytes"),
    (_raw_array(shape=[2 ** 62, 2 ** 62]), "needs"),
    (_raw_array(shape=[-2]), "non-negative"),
    (_raw_array(shape=[True, 2]), "non-negative"),
    (_raw_array(extra=1), "exactly the keys"),
    (_raw_array(data="text"), "must be bytes"),
])
def test_bad_messages_are_wire_errors_that_say_what_is_wrong(message, match):
    with pytest.raises(WireError, match=match):
        unpack(message)
