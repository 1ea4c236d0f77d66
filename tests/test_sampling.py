"""Partial-force sampling: values, subsets, configurations, counts and seeds."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from macroclosure.sampling import draw_configurations, draw_subsets, sample
from macroclosure.store import StoreError, open_store, read, read_states
from macroclosure.systems import system_of

UNITS = 10  # 2 species x 5 cells in the tiny store
SETTINGS = {"configurations": 9, "batch_size": 4}  # three batches, the last one ragged


def sampled(train_store, path, p=0.3, seed=0, **settings):
    sample(str(train_store), str(path), p, seed, SETTINGS | settings, device="cpu", progress=False)
    ds = open_store(path, "forces", system="predator_prey")
    return {name: read(ds, name) for name in ("trajectory", "time_index", "index", "force")}, ds.attrs


@pytest.fixture(scope="module")
def forces(train_store, tmp_path_factory):
    return sampled(train_store, tmp_path_factory.mktemp("forces") / "p0.3.zarr")


def test_sampled_forces_equal_the_full_force_at_the_stored_states(forces, train_store, float64):
    arrays, _ = forces
    trajectories = open_store(train_store, "trajectories")
    system = system_of(trajectories)
    states = read_states(trajectories, arrays["trajectory"], arrays["time_index"])
    full = np.asarray(jax.vmap(system.rhs)(jnp.asarray(states)))
    expected = np.take_along_axis(full, arrays["index"], axis=1)
    assert arrays["force"].dtype == np.float64
    np.testing.assert_allclose(arrays["force"], expected, rtol=0, atol=1e-12)


def test_subsets_have_k_distinct_units(forces):
    arrays, attrs = forces
    k = round(0.3 * UNITS)
    assert attrs["k"] == k and arrays["index"].shape == (9, k)
    assert all(len(set(row)) == k for row in arrays["index"].tolist())
    assert arrays["index"].min() >= 0 and arrays["index"].max() < UNITS


def test_configurations_are_distinct_stored_states(forces):
    arrays, _ = forces
    pairs = set(zip(arrays["trajectory"].tolist(), arrays["time_index"].tolist()))
    assert len(pairs) == 9
    assert arrays["trajectory"].max() < 3 and arrays["time_index"].max() < 5


def test_force_evaluations_count_configurations_times_k(forces):
    _, attrs = forces
    assert attrs["force_evaluations"] == attrs["configurations"] * attrs["k"] == 9 * 3
    assert attrs["p"] == 0.3 and attrs["seed"] == 0 and attrs["unit"] == "coordinate"
    assert attrs["wall_seconds"] >= 0


def test_store_names_the_trajectories_it_was_sampled_from(forces, train_store):
    _, attrs = forces
    made_by = json.loads(open_store(train_store, "trajectories").attrs["provenance"])["config_digest"]
    assert attrs["trajectories_digest"] == made_by


def test_fractions_share_configurations_for_one_seed(forces, train_store, tmp_path):
    arrays, _ = forces
    full, attrs = sampled(train_store, tmp_path / "p1.zarr", p=1.0)
    assert attrs["k"] == UNITS
    assert np.array_equal(full["trajectory"], arrays["trajectory"])
    assert np.array_equal(full["time_index"], arrays["time_index"])
    assert (np.sort(full["index"], axis=1) == np.arange(UNITS)).all()  # p = 1: every unit


def test_same_seed_gives_identical_stores(forces, train_store, tmp_path):
    arrays, _ = forces
    again, _ = sampled(train_store, tmp_path / "again.zarr", batch_size=64)
    for name in arrays:
        assert np.array_equal(again[name], arrays[name]), name


def test_other_seed_gives_other_configurations_and_subsets(forces, train_store, tmp_path):
    arrays, _ = forces
    other, _ = sampled(train_store, tmp_path / "seed1.zarr", seed=1)
    assert not np.array_equal(other["index"], arrays["index"])
    assert not (
        np.array_equal(other["trajectory"], arrays["trajectory"])
        and np.array_equal(other["time_index"], arrays["time_index"])
    )


def test_draws_are_uniform_without_replacement():
    subsets = draw_subsets(20, 5, 4000, seed=0)
    assert all(len(set(row)) == 5 for row in subsets.tolist())
    counts = np.bincount(subsets.ravel(), minlength=20)
    assert np.abs(counts / counts.sum() - 1 / 20).max() < 0.01  # 1000 +- 200 per unit; sd is about 27
    trajectory, time_index = draw_configurations(4, 6, 24, seed=0)
    assert sorted(zip(trajectory.tolist(), time_index.tolist())) == [(t, i) for t in range(4) for i in range(6)]


def test_trajectory_draw_takes_whole_trajectories_in_order(train_store, tmp_path):
    arrays, attrs = sampled(train_store, tmp_path / "whole.zarr", configurations=7, draw="trajectories")
    assert arrays["trajectory"].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert arrays["time_index"].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert attrs["force_evaluations"] == 7 * 3


def test_too_many_configurations_are_refused_naming_the_store(train_store, tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(train_store))):
        sampled(train_store, tmp_path / "many.zarr", configurations=16)  # 3 x 5 stored states
    assert not (tmp_path / "many.zarr").exists()


def test_fraction_sampling_nothing_is_refused(train_store, tmp_path):
    with pytest.raises(ValueError, match=re.escape("p = 0.04")):
        sampled(train_store, tmp_path / "none.zarr", p=0.04)


def test_missing_trajectory_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "nowhere.zarr"))):
        sample(str(tmp_path / "nowhere.zarr"), str(tmp_path / "out.zarr"), 0.5, 0, SETTINGS, progress=False)
