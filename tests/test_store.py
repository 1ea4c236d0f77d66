"""Zarr stores: readers refuse what is missing, foreign or damaged; writers are atomic."""

import re
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

from macroclosure.store import (
    TARGET_CHUNK_BYTES,
    StoreError,
    atomic_directory,
    chunk_shape,
    open_store,
    read,
    streamed_store,
    write_store,
)


def forces_dataset(seed=0, samples=6, k=3):
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            "trajectory": (("sample",), rng.integers(0, 3, samples)),
            "time_index": (("sample",), rng.integers(0, 5, samples)),
            "index": (("sample", "row"), rng.integers(0, 10, (samples, k))),
            "force": (("sample", "row"), rng.normal(size=(samples, k))),
        },
        attrs={"system": "predator_prey", "p": 0.3},
    )


def refused(path, match, **kwargs):
    """open_store(path, ...) must raise a StoreError naming `path` and matching `match`."""
    kind = kwargs.pop("kind", "trajectories")
    with pytest.raises(StoreError, match=re.escape(str(path))) as caught:
        open_store(path, kind, **kwargs)
    assert re.search(match, str(caught.value)), str(caught.value)


@pytest.fixture
def trajectories(train_store, tmp_path):
    """A private copy of the tiny training store, free to damage."""
    return shutil.copytree(train_store, tmp_path / "train.zarr")


@pytest.fixture
def forces_store(tmp_path):
    path = tmp_path / "seed0.zarr"
    write_store(forces_dataset(), path, "forces")
    return path


def test_missing_store_is_refused(tmp_path):
    refused(tmp_path / "absent.zarr", "does not exist")


def test_empty_directory_is_refused(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    refused(tmp_path / "empty.zarr", "not a zarr v3 store")


def test_store_without_its_group_metadata_is_refused(trajectories):
    (trajectories / "zarr.json").unlink()
    refused(trajectories, "not a zarr v3 store")


def test_store_with_garbled_metadata_is_refused(trajectories):
    (trajectories / "zarr.json").write_text("{ half written")
    refused(trajectories, "cannot be opened")


def test_store_of_the_other_kind_is_refused(forces_store):
    refused(forces_store, "'forces' store; expected a 'trajectories' store")


def test_plain_zarr_store_is_refused_as_foreign(tmp_path):
    forces_dataset().to_zarr(tmp_path / "plain.zarr", consolidated=False, zarr_format=3)
    refused(tmp_path / "plain.zarr", "not a macroclosure store", kind="forces")


def test_store_of_another_system_is_refused(train_store):
    refused(train_store, "'predator_prey', expected 'allen_cahn'", system="allen_cahn")
    assert open_store(train_store, "trajectories", system="predator_prey").attrs["system"] == "predator_prey"


def test_store_lacking_a_variable_is_refused(tmp_path):
    path = tmp_path / "forces.zarr"
    write_store(forces_dataset().drop_vars("force"), path, "forces")
    refused(path, "lacks the variable 'force'", kind="forces")


def test_store_with_wrong_dimensions_is_refused(tmp_path):
    path = tmp_path / "flat.zarr"
    write_store(xr.Dataset({"state": (("trajectory", "dof"), np.zeros((2, 4)))}), path, "trajectories")
    refused(path, r"'state' has dimensions \('trajectory', 'dof'\), expected \('trajectory', 'time', 'dof'\)")


def test_forces_store_with_an_altered_integer_chunk_is_refused(forces_store):
    index = zarr.open_array(forces_store / "index", mode="r+")
    index[0, 0] = (index[0, 0] + 1) % 10  # a valid chunk with other values
    refused(forces_store, "'index' does not match its checksum", kind="forces")


def test_forces_store_with_a_lost_integer_chunk_is_refused(forces_store):
    chunks = [path for path in (forces_store / "time_index" / "c").rglob("*") if path.is_file()]
    assert chunks
    for chunk in chunks:
        chunk.unlink()
    refused(forces_store, "'time_index' does not match its checksum", kind="forces")


def state_chunks(store):
    chunks = sorted(path for path in (store / "state" / "c").rglob("*") if path.is_file())
    assert len(chunks) == 2  # 3 trajectories written in batches of 2: chunks of 2 trajectories
    return chunks


def test_read_refuses_a_lost_chunk(trajectories):
    state_chunks(trajectories)[1].unlink()
    ds = open_store(trajectories, "trajectories")  # lazy: the damage shows on reading
    assert np.isfinite(read(ds, "state", trajectory=[0, 1])).all()  # intact chunk still reads
    with pytest.raises(StoreError, match=re.escape(str(trajectories))) as caught:
        read(ds, "state")
    assert "'state' holds non-finite values" in str(caught.value)


def test_store_with_a_lost_time_coordinate_is_refused(trajectories):
    for chunk in (trajectories / "time" / "c").rglob("*"):
        chunk.unlink()
    refused(trajectories, "coordinate 'time' holds non-finite values")


def test_read_refuses_a_garbled_chunk(trajectories):
    chunk = state_chunks(trajectories)[0]
    chunk.write_bytes(b"\x00garbage" * 7)
    ds = open_store(trajectories, "trajectories")
    with pytest.raises(StoreError, match=re.escape(str(trajectories))) as caught:
        read(ds, "state", trajectory=[0])
    assert "'state' cannot be read" in str(caught.value)


def test_read_refuses_non_finite_values(tmp_path):
    path = tmp_path / "bad.zarr"
    write_store(xr.Dataset({"state": (("trajectory", "time", "dof"), np.array([[[1.0, np.inf]]]))}), path, "trajectories")
    with pytest.raises(StoreError, match=re.escape(str(path))):
        read(open_store(path, "trajectories"), "state")


def test_write_store_round_trips_the_data(forces_store):
    ds = open_store(forces_store, "forces")
    for name, values in forces_dataset().items():
        assert np.array_equal(read(ds, name), values.values)
    assert ds.attrs["p"] == 0.3


def leftovers(folder, name):
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(f".{name}.partial-"))


def test_failed_atomic_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(path) as temporary:
            forces_dataset().to_zarr(temporary, consolidated=False, zarr_format=3)
            assert temporary.exists() and temporary != path
            raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "out.zarr"
    stale = tmp_path / ".out.zarr.partial-999999"
    stale.mkdir()
    write_store(forces_dataset(), path, "forces")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_interrupted_atomic_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(path) as temporary:
            temporary.mkdir()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_store_survives_a_failed_rewrite_and_is_replaced_by_a_good_one(forces_store):
    before = forces_dataset(seed=0)["force"].values
    with pytest.raises(RuntimeError):
        with atomic_directory(forces_store) as temporary:
            forces_dataset(seed=1).to_zarr(temporary, consolidated=False, zarr_format=3)
            raise RuntimeError("killed mid-write")
    assert np.array_equal(read(open_store(forces_store, "forces"), "force"), before)
    assert leftovers(forces_store.parent, forces_store.name) == []

    write_store(forces_dataset(seed=1), forces_store, "forces")
    after = read(open_store(forces_store, "forces"), "force")
    assert np.array_equal(after, forces_dataset(seed=1)["force"].values)
    assert not np.array_equal(after, before)
    assert leftovers(forces_store.parent, forces_store.name) == []


def test_a_store_written_before_rows_were_labelled_still_opens(tmp_path):
    """Stores of earlier versions: no coordinates, no units, int32 indices."""
    old = forces_dataset().assign(index=lambda ds: ds["index"].astype(np.int32))
    write_store(old, tmp_path / "old.zarr", "forces")
    assert open_store(tmp_path / "old.zarr", "forces")["index"].dtype == np.int32


def test_write_into_an_impossible_place_names_the_path(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    path = tmp_path / "file" / "out.zarr"
    with pytest.raises(StoreError, match=re.escape(str(path))):
        write_store(forces_dataset(), path, "forces")


def block(first, count):
    values = np.arange(first, first + count, dtype=np.float64)
    return xr.Dataset(
        {"state": (("trajectory", "time", "dof"), np.broadcast_to(values[:, None, None], (count, 2, 3)).copy()),
         "a0": (("trajectory",), values)},
        coords={"time": [0.0, 0.5]},
    )


def write_by_streaming(ds, path, kind):
    """Write `ds` as the simulate stage does, in one streamed block."""
    with streamed_store(path, kind, ds.attrs, "trajectory") as append:
        append(ds)


@pytest.mark.parametrize("write, ds, kind", [(write_store, forces_dataset(), "forces"),
                                             (write_by_streaming, block(0, 3), "trajectories")])
def test_a_store_is_written_and_opened_by_its_zarr_json_as_the_rules_name_it(tmp_path, write, ds, kind):
    """A rule's output is the store's zarr.json, whose folder Snakemake makes (empty) before the job."""
    path = tmp_path / "out.zarr"
    path.mkdir()
    write(ds, path / "zarr.json", kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert open_store(path / "zarr.json", kind).identical(open_store(path, kind))


def test_streamed_store_appends_blocks_and_keeps_its_attributes(tmp_path):
    path = tmp_path / "streamed.zarr"
    with streamed_store(path, "trajectories", {"system": "predator_prey", "dt": 0.5}, "trajectory") as append:
        assert append(block(0, 2)) == 1
        assert not path.exists()  # only renamed into place when complete
        assert append(block(2, 2)) == 2
        assert append(block(4, 1)) == 3
    ds = open_store(path, "trajectories", system="predator_prey")
    assert ds.attrs["dt"] == 0.5
    assert np.array_equal(read(ds, "a0"), np.arange(5.0))
    assert np.array_equal(read(ds, "state")[:, 1, 2], np.arange(5.0))


def test_streamed_store_that_fails_midway_leaves_nothing(tmp_path):
    path = tmp_path / "streamed.zarr"
    with pytest.raises(RuntimeError, match="diverged"):
        with streamed_store(path, "trajectories", {}, "trajectory") as append:
            append(block(0, 2))
            raise RuntimeError("diverged")
    assert list(tmp_path.iterdir()) == []


def test_streamed_store_with_no_block_is_an_error_naming_the_path(tmp_path):
    path = tmp_path / "streamed.zarr"
    with pytest.raises(StoreError, match=re.escape(str(path))):
        with streamed_store(path, "trajectories", {}, "trajectory"):
            pass
    assert list(tmp_path.iterdir()) == []


CHUNK_CASES = [
    ((40, 301, 100), 8),  # predator-prey default: split along trajectories
    ((10_000, 50), 8),
    ((7,), 4),  # smaller than one chunk: one chunk
    ((90, 251, 307_200), 8),  # Lennard-Jones, 51 200 atoms: one trajectory is 617 MB
    ((3, 2**20), 8),  # one row is 8 MB
]


@pytest.mark.parametrize("shape, itemsize", CHUNK_CASES)
def test_chunks_split_one_axis_and_keep_the_trailing_axes_whole(shape, itemsize):
    chunks = chunk_shape(shape, itemsize)
    assert len(chunks) == len(shape) and all(1 <= c <= s for c, s in zip(chunks, shape))
    partial = [axis for axis, (c, s) in enumerate(zip(chunks, shape)) if c < s]
    if partial:
        split = partial[-1]
        assert all(c == 1 for c in chunks[:split])  # leading axes: one slice at a time
        assert tuple(chunks[split + 1 :]) == tuple(shape[split + 1 :])  # trailing axes: whole


@pytest.mark.parametrize("shape, itemsize", CHUNK_CASES)
def test_chunks_are_about_the_target_size(shape, itemsize):
    chunk_bytes = itemsize * int(np.prod(chunk_shape(shape, itemsize), dtype=np.int64))
    total_bytes = itemsize * int(np.prod(shape, dtype=np.int64))
    assert chunk_bytes <= TARGET_CHUNK_BYTES  # never a chunk too big to hold in memory
    assert chunk_bytes >= min(total_bytes, TARGET_CHUNK_BYTES // 2)
