"""`open_store` and the direct chunk readers: zarr-python's values, checksums, and loud damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec

from fcs_data._chunks import ArrayReader
from fcs_data.converters.to_zarr import convert_to_zarr
from fcs_data.errors import StoreDataError, StoreError
from fcs_data.format import ACTION, EPISODE_ENDS, RGB, STATE, chunk_file, shard_file
from fcs_data.store import open_store
from fcs_data.windows import WindowDataset


@pytest.fixture(scope="module", params=["lz4", "none"])
def store_path(request: pytest.FixtureRequest, pristine_v1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "lz4":
        return request.getfixturevalue("pristine_v1_lz4")
    out = tmp_path_factory.mktemp("store") / f"{request.param}.zarr"
    return convert_to_zarr(pristine_v1, out, codec=request.param, workers=1, shard_frames=16).store


@pytest.fixture
def damaged(store_path: Path, tmp_path: Path) -> Path:
    """A private copy of a clean store, to break."""
    return Path(shutil.copytree(store_path, tmp_path / "s.zarr"))


def _flip_byte_of_chunk(store: Path, array: str, k: int) -> Path:
    """Flip one byte in the middle of chunk `k`'s encoded bytes (found through the shard index)."""
    path, _fd, off, nbytes = ArrayReader(store, array)._locate(k)
    raw = bytearray(Path(path).read_bytes())
    raw[off + nbytes // 2] ^= 0x40
    Path(path).write_bytes(bytes(raw))
    return Path(path)


def test_store_api(store_path: Path) -> None:
    s = open_store(store_path)
    assert s.num_episodes == 3 and s.num_frames == int(s.episode_lengths.sum())
    assert s.layout.name == "franka_cube_stack_v1" and s.stats.state.dim == 22
    assert s.format_version == 2 and s.is_current_format
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
    frames = ArrayReader(store_path, RGB)
    n = g["data/rgb"].shape[0]
    order = np.random.default_rng(0).permutation(n)
    out = np.empty((n, 256, 256, 3), np.uint8)
    frames.read_into(order, out)
    np.testing.assert_array_equal(out, g["data/rgb"][:][order])
    for name in (STATE, ACTION):
        rows = ArrayReader(store_path, name)
        for a, b in ((0, n), (7, 8), (3, n - 2), (n, n)):
            np.testing.assert_array_equal(rows.read(a, b), g[name][a:b], err_msg=f"{name}[{a}:{b}]")


def test_every_array_of_a_format_2_store_carries_chunk_checksums(store_path: Path) -> None:
    for array in (RGB, STATE, ACTION, EPISODE_ENDS):
        meta = ArrayReader(store_path, array).meta
        assert meta.chunk_crc, f"{array} chunks carry no crc32c"
    assert ArrayReader(store_path, RGB).meta.index_crc and ArrayReader(store_path, STATE).meta.shard_rows


@pytest.mark.parametrize(
    "compressors,index_location",
    [
        ([BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")], "end"),
        ([ZstdCodec(level=2), Crc32cCodec()], "start"),
        ([GzipCodec(level=1)], "end"),
        (None, "start"),
    ],
)
def test_frame_reader_handles_other_codecs_and_index_placement_and_names_a_missing_shard(
    tmp_path: Path, compressors, index_location: str
) -> None:
    data = np.random.default_rng(1).integers(0, 255, (21, 8, 6, 3), dtype=np.uint8)
    data[4] = 0
    arr = zarr.create_array(
        str(tmp_path / "a"), shape=data.shape, dtype="uint8", chunks=(8, 8, 6, 3),
        serializer=ShardingCodec(chunk_shape=(1, 8, 6, 3), codecs=[BytesCodec(), *(compressors or [])],
                                 index_location=index_location),
        compressors=None, fill_value=0, config={"write_empty_chunks": True},
    )
    arr[0:16] = data[0:16]  # shard 2 (frames 16..20) is never written
    reader = ArrayReader(tmp_path, "a")
    out = np.empty((16, 8, 6, 3), np.uint8)
    reader.read_into(np.arange(16), out)
    np.testing.assert_array_equal(out, data[:16])
    with pytest.raises(StoreDataError, match="shard file is missing") as info:
        reader.read_into(np.array([17]), np.empty((1, 8, 6, 3), np.uint8))
    assert (info.value.file, info.value.array, info.value.rows) == ("a/c/2/0/0/0", "a", (16, 21))


def test_an_absent_chunk_inside_a_shard_is_an_error_not_a_fill_value(tmp_path: Path) -> None:
    data = np.full((8, 4, 4, 3), 7, np.uint8)
    data[2] = 0  # zarr's default skips chunks equal to the fill value: the index marks chunk 2 empty
    arr = zarr.create_array(str(tmp_path / "a"), shape=data.shape, dtype="uint8", chunks=(1, 4, 4, 3),
                            shards=(8, 4, 4, 3), fill_value=0)
    arr[:] = data
    reader = ArrayReader(tmp_path, "a")
    with pytest.raises(StoreDataError, match="chunk 2 of the shard is absent"):
        reader.read_into(np.array([2]), np.empty((1, 4, 4, 3), np.uint8))


def test_arrays_outside_the_supported_layouts_are_refused_by_name(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "tiles"), shape=(4, 2, 2, 3), dtype="uint8", chunks=(2, 1, 2, 3))
    with pytest.raises(StoreError, match=r"tiles/zarr\.json.*do not span whole rows"):
        ArrayReader(tmp_path, "tiles")
    zarr.create_array(str(tmp_path / "v2keys"), shape=(10, 3), dtype="float32", chunks=(4, 3),
                      chunk_key_encoding={"name": "default", "separator": "."})
    with pytest.raises(StoreError, match="chunk key encoding"):
        ArrayReader(tmp_path, "v2keys")


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
    reader = ArrayReader(store_path, RGB, max_open_files=2)
    reader.read_into(np.arange(reader.shape[0]), np.empty((reader.shape[0], 256, 256, 3), np.uint8))
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


# ---- damage: every kind is an error naming the file, the array and the episode's frames ------------


def test_a_deleted_frame_shard_is_an_error_naming_file_array_and_frames_never_black_frames(damaged: Path) -> None:
    shard_file(damaged, 1).unlink()
    s = open_store(damaged)
    with pytest.raises(StoreDataError, match=r"data/rgb/c/1/0/0/0: shard file is missing") as info:
        s.read_frames(np.array([20]))
    err = info.value
    assert (err.array, err.rows) == (RGB, (16, 32))
    lengths = s.episode_lengths.tolist()
    assert f"episode 0 (frames 16..{min(lengths[0], 32) - 1})" in err.where
    ds = WindowDataset(damaged, num_hist=1, frameskip=1, split="all")
    with pytest.raises(StoreDataError, match="shard file is missing"):
        for i in range(len(ds)):
            ds[i]


def test_a_deleted_state_chunk_is_an_error_not_zeros(damaged: Path) -> None:
    chunk_file(damaged, STATE, 0, 2).unlink()
    with pytest.raises(StoreDataError, match=r"data/state/c/0/0: shard file is missing \(data/state rows 0\.\."):
        open_store(damaged).read_rows("state", 3, 9)


@pytest.mark.parametrize("codec", ["none", "lz4", "lz4-bit"])
def test_a_flipped_byte_in_a_frame_chunk_fails_its_checksum(pristine_v1: Path, tmp_path: Path, codec: str) -> None:
    store = convert_to_zarr(pristine_v1, tmp_path / "s.zarr", codec=codec, workers=1, shard_frames=16).store
    _flip_byte_of_chunk(store, RGB, 5)
    s = open_store(store)
    np.testing.assert_array_equal(s.read_frames(np.array([4, 6])).shape, (2, 256, 256, 3))  # others are fine
    with pytest.raises(StoreDataError, match=r"c/0/0/0/0: fails its crc32c checksum.*episode 0 \(frame 5\)"):
        s.read_frames(np.array([5]))
    unchecked = open_store(store, verify=False)  # what the checksum protects against: silent wrong pixels
    assert not np.array_equal(unchecked.read_frames(np.array([5])),
                              zarr.open_group(str(tmp_path / "s.zarr"), mode="r")[RGB][4:5])


def test_a_flipped_byte_in_a_state_chunk_fails_its_checksum(damaged: Path) -> None:
    _flip_byte_of_chunk(damaged, STATE, 0)
    with pytest.raises(StoreDataError, match="fails its crc32c checksum"):
        open_store(damaged).read_rows("state", 0, 4)


def test_a_truncated_shard_is_an_error_naming_it(damaged: Path) -> None:
    p = shard_file(damaged, 0)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    with pytest.raises(StoreDataError, match=r"data/rgb/c/0/0/0/0: (truncated|the shard index)"):
        open_store(damaged).read_frames(np.array([0]))


def test_a_corrupt_shard_index_is_an_error(damaged: Path) -> None:
    p = shard_file(damaged, 0)
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, caught by its crc32c
    p.write_bytes(bytes(raw))
    with pytest.raises(StoreDataError, match="shard index fails its crc32c"):
        open_store(damaged).read_frames(np.array([3]))


def test_garbage_root_metadata_is_a_store_error(damaged: Path) -> None:
    (damaged / "zarr.json").write_bytes(os.urandom(300) + b"\xff\xfe")
    with pytest.raises(StoreError, match=r"zarr\.json: not valid JSON"):
        open_store(damaged)


def test_bad_array_metadata_is_a_store_error_naming_the_file(damaged: Path) -> None:
    (damaged / "data" / "rgb" / "zarr.json").write_text('{"shape": [3]')
    with pytest.raises(StoreError, match=r"data/rgb/zarr\.json is not valid Zarr v3 array metadata"):
        open_store(damaged)


def test_episode_ends_that_do_not_increase_are_refused_on_open(damaged: Path) -> None:
    arr = zarr.open_array(str(damaged / EPISODE_ENDS), mode="r+")
    ends = arr[:]
    arr[:] = np.array([ends[1], ends[0], ends[2]])
    with pytest.raises(StoreError, match=r"meta/episode_ends is not strictly increasing: episode 1"):
        open_store(damaged)


def test_episode_ends_that_disagree_with_the_arrays_are_refused_on_open(damaged: Path) -> None:
    arr = zarr.open_array(str(damaged / EPISODE_ENDS), mode="r+")
    ends = arr[:]
    arr[:] = ends - np.array([0, 0, 1])
    with pytest.raises(StoreError, match="episode_ends ends at row"):
        open_store(damaged)
    doc = json.loads((damaged / "zarr.json").read_text())
    doc["attributes"]["fcs"]["num_frames"] = int(ends[-1]) - 1
    (damaged / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"data/rgb has shape"):
        open_store(damaged)


def test_a_format_1_store_stays_readable(format1_store: Path) -> None:
    s = open_store(format1_store)
    assert s.format_version == 1 and not s.is_current_format
    assert not ArrayReader(format1_store, RGB).meta.chunk_crc and ArrayReader(format1_store, STATE).meta.shard_rows is None
    g = zarr.open_group(str(format1_store), mode="r")
    np.testing.assert_array_equal(s.read_frames(np.arange(s.num_frames)), g[RGB][:])
    for name in ("state", "action"):
        np.testing.assert_array_equal(s.read_rows(name, 0, s.num_frames), g[f"data/{name}"][:])
        np.testing.assert_array_equal(s.read_rows(name, 5, 9), g[f"data/{name}"][5:9])
    ds = WindowDataset(format1_store, num_hist=2, frameskip=2, split="all")
    assert ds[0]["visual"].shape == (3, 3, 32, 32)
    shard_file(format1_store, 2).unlink()
    with pytest.raises(StoreDataError, match="shard file is missing"):
        open_store(format1_store).read_frames(np.array([17]))


def test_the_identity_is_what_the_store_holds_not_when_or_where_it_was_written(pristine_v1: Path,
                                                                               tmp_path: Path) -> None:
    first = open_store(convert_to_zarr(pristine_v1, tmp_path / "first.zarr", workers=1).store)
    again = open_store(convert_to_zarr(pristine_v1, tmp_path / "again.zarr", workers=1, codec="zstd",
                                       shard_frames=16).store)
    assert again.identity == first.identity, "the same episodes in the same layout, another time, codec and path"
    (tmp_path / "copy").mkdir()
    fewer = open_store(convert_to_zarr(_drop_last_episode(pristine_v1, tmp_path / "copy"), tmp_path / "fewer.zarr",
                                       workers=1).store)
    assert fewer.identity != first.identity
    assert first.content_key([0, 1]) == fewer.content_key([0, 1]), "episodes that are the same hash the same"


def _drop_last_episode(src_path: Path, out: Path) -> Path:
    """A copy of the v1 logger dataset `src_path` without its last episode (as the logger writes it)."""
    import torch
    from helpers import load_pkl, save_pkl

    meta = load_pkl(src_path / "metadata.pkl")
    n = len(meta["episode_lengths"]) - 1
    for i in range(n):
        shutil.copytree(src_path / f"{i:06d}", out / f"{i:06d}")
    for name in ("states.pth", "actions.pth"):
        torch.save(torch.load(src_path / name, weights_only=True)[:n].clone(), out / name)
    save_pkl({**meta, "episode_lengths": meta["episode_lengths"][:n], "n_rollouts": n}, out / "metadata.pkl")
    if (src_path / "seq_lengths.pkl").exists():
        save_pkl(load_pkl(src_path / "seq_lengths.pkl")[:n], out / "seq_lengths.pkl")
    return out


def test_the_writer_the_reader_and_the_validator_share_one_list_of_arrays(store_path: Path) -> None:
    from fcs_data.format import store_arrays

    s = open_store(store_path)
    arrays = store_arrays(s.layout)
    assert s.arrays == arrays and {a.path for a in arrays.values()} == {RGB, STATE, ACTION}
    group = zarr.open_group(str(store_path), mode="r")
    written = {f"data/{name}" for name in group["data"].array_keys()}
    assert written == {a.path for a in arrays.values()}, "the converter wrote exactly these"
    assert s.frames_name() == "rgb" and s.row_shape("action") == (s.layout.action_dim,)
