"""`open_store` and the direct chunk readers: same values as zarr-python, per-process files."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

from fcs_data._chunks import ChunkedRows, ShardedFrames, UnsupportedArray
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.errors import StoreError
from fcs_data.store import open_store


@pytest.fixture(scope="module", params=["lz4", "none"])
def store_path(request: pytest.FixtureRequest, pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / f"{request.param}.zarr"
    return convert_to_zarr(pristine_v1, out, codec=request.param, workers=1, shard_frames=16).store


def test_store_api(store_path: Path) -> None:
    s = open_store(store_path)
    assert s.num_episodes == 3 and s.num_frames == int(s.episode_lengths.sum())
    assert s.layout.name == "franka_cube_stack_v1" and s.stats.state.dim == 22
    np.testing.assert_array_equal(s.episode_starts + s.episode_lengths, s.episode_ends)
    g = zarr.open_group(str(store_path), mode="r")
    ep = s.episode(1)
    a, b = int(s.episode_starts[1]), int(s.episode_ends[1])
    assert ep.rgb.shape == (b - a, 256, 256, 3) and ep.state.shape == (b - a, 22) and len(ep) == b - a
    np.testing.assert_array_equal(ep.rgb[3], g["data/rgb"][a + 3])
    np.testing.assert_array_equal(ep.rgb[-1], g["data/rgb"][b - 1])
    np.testing.assert_array_equal(ep.rgb[2:9:3], g["data/rgb"][a + 2 : a + 9 : 3])
    np.testing.assert_array_equal(ep.state[[0, 5, 2]], g["data/state"][[a, a + 5, a + 2]])
    np.testing.assert_array_equal(np.asarray(ep.action), g["data/action"][a:b])
    with pytest.raises(IndexError):
        ep.rgb[b - a]
    with pytest.raises(IndexError):
        s.episode(3)


def test_direct_readers_equal_zarr_python_for_every_frame_and_row(store_path: Path) -> None:
    g = zarr.open_group(str(store_path), mode="r")
    frames = ShardedFrames(store_path / "data" / "rgb")
    n = g["data/rgb"].shape[0]
    order = np.random.default_rng(0).permutation(n)
    np.testing.assert_array_equal(frames.read(order), g["data/rgb"][:][order])
    for name in ("state", "action"):
        rows = ChunkedRows(store_path / "data" / name)
        np.testing.assert_array_equal(rows.read(0, n), g[f"data/{name}"][:])
        np.testing.assert_array_equal(rows.read(7, 8), g[f"data/{name}"][7:8])


@pytest.mark.parametrize(
    "compressors,index_location",
    [
        ([BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")], "end"),
        ([ZstdCodec(level=2)], "start"),
        ([GzipCodec(level=1)], "end"),
        (None, "start"),
    ],
)
def test_frame_reader_handles_other_codecs_index_placement_and_empty_chunks(
    tmp_path: Path, compressors, index_location: str
) -> None:
    from zarr.codecs import ShardingCodec

    data = np.random.default_rng(1).integers(0, 255, (21, 8, 6, 3), dtype=np.uint8)
    data[4] = 0
    arr = zarr.create_array(
        str(tmp_path / "a"), shape=data.shape, dtype="uint8", chunks=(8, 8, 6, 3),
        serializer=ShardingCodec(chunk_shape=(1, 8, 6, 3), codecs=[BytesCodec(), *(compressors or [])],
                                 index_location=index_location),
        compressors=None, fill_value=0,
    )
    arr[0:16] = data[0:16]  # shard 2 (frames 16..20) is never written: all fill value
    expected = arr[:]
    reader = ShardedFrames(tmp_path / "a")
    np.testing.assert_array_equal(reader.read(np.arange(21)), expected)


def test_arrays_outside_the_supported_layouts_are_refused(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "plain"), shape=(4, 2, 2, 3), dtype="uint8", chunks=(2, 2, 2, 3))
    with pytest.raises(UnsupportedArray, match="not sharded"):
        ShardedFrames(tmp_path / "plain")
    zarr.create_array(str(tmp_path / "rows"), shape=(10, 3), dtype="float32", chunks=(4, 3))
    with pytest.raises(UnsupportedArray, match="compressed rows"):
        ChunkedRows(tmp_path / "rows")


def test_store_falls_back_to_zarr_python(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcs_data.store as store_mod

    def unsupported(*args, **kwargs):
        raise UnsupportedArray("pretend")

    s = open_store(store_path)
    fast = s.read_frames(np.array([0, 7, 3]))
    monkeypatch.setattr(store_mod, "ShardedFrames", unsupported)
    monkeypatch.setattr(store_mod, "ChunkedRows", unsupported)
    slow = open_store(store_path)
    np.testing.assert_array_equal(slow.read_frames(np.array([0, 7, 3])), fast)
    np.testing.assert_array_equal(slow.read_rows("state", 2, 9), s.read_rows("state", 2, 9))
    assert type(slow.frame_reader).__name__ == "_ZarrFrames"


def _read_in_child(payload: bytes, q) -> None:
    store = pickle.loads(payload)
    q.put(store.read_frames(np.array([1, 2])).sum())


def test_store_pickles_to_its_path_and_reopens_in_a_child(store_path: Path) -> None:
    s = open_store(store_path)
    expected = int(s.read_frames(np.array([1, 2])).sum())  # opens files in the parent first
    payload = pickle.dumps(s)
    assert len(payload) < 500
    for method in ("fork", "spawn"):
        ctx = multiprocessing.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=_read_in_child, args=(payload, q))
        p.start()
        assert q.get(timeout=60) == expected
        p.join(timeout=60)
        assert p.exitcode == 0


def test_open_files_are_bounded(store_path: Path) -> None:
    reader = ShardedFrames(store_path / "data" / "rgb", max_open_files=2)
    reader.read(np.arange(reader.shape[0]))
    assert reader.open_files <= 2
    reader.close()
    assert reader.open_files == 0


def test_not_a_store_and_unfinished_stores_explain_themselves(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no zarr\.json"):
        open_store(tmp_path)
    zarr.open_group(str(tmp_path / "g"), mode="w")
    with pytest.raises(StoreError, match="not an fcs store"):
        open_store(tmp_path / "g")
    zarr.open_group(str(tmp_path / "p"), mode="w").attrs.update({"fcs_partial": {"fingerprint": "x"}})
    with pytest.raises(StoreError, match="--resume"):
        open_store(tmp_path / "p")
