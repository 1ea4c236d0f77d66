"""Batched RK4 simulation: accuracy, blow-up handling, reproducibility, the trajectory store."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import simulate_tiny, tiny_settings

from macroclosure.integrators import rk4_step
from macroclosure.runtime import digest
from macroclosure.simulate import SimulationDiverged, advance, integrate_batch, simulate
from macroclosure.store import open_store, read
from macroclosure.systems import build_system


class NoProgress:
    def update(self, steps):
        pass


def pp_system(**changes):
    return build_system("predator_prey", tiny_settings(**changes))


def final_state(system, x0, dt, t_end):
    steps = round(t_end / dt)
    x, _, first_bad = advance(system.rhs, x0, 0, jnp.full(x0.shape[0], -1), dt=dt, save_every=steps, frames=1)
    assert (np.asarray(first_bad) == -1).all()
    return np.asarray(x)


def test_rk4_converges_at_fourth_order(float64):
    system = pp_system(cells=8, diffusion_u=0.1)
    x0 = jnp.asarray(system.initial_conditions(np.random.default_rng(0), 2)[0])
    dt, t_end = 0.05, 1.0
    reference = final_state(system, x0, dt / 64, t_end)
    errors = [np.abs(final_state(system, x0, dt / 2**j, t_end) - reference).max() for j in range(3)]
    assert errors[2] > 1e-12  # well above round-off, so the ratios measure truncation error
    for coarse, fine in zip(errors, errors[1:]):
        assert 12 < coarse / fine < 20


def test_saved_frames_are_every_save_every_steps_of_rk4(float64):
    system = pp_system()
    x0 = jnp.asarray(system.initial_conditions(np.random.default_rng(1), 2)[0])
    states = integrate_batch(system, np.asarray(x0), tiny_settings(steps=6, save_every=3), 0, "train", NoProgress())
    assert states.shape == (2, 3, 10)
    one_step = jax.jit(lambda x: rk4_step(jax.vmap(system.rhs), x, 0.01))
    x = x0
    for step in range(1, 7):
        x = one_step(x)
        if step % 3 == 0:
            np.testing.assert_allclose(states[:, step // 3], np.asarray(x), rtol=0, atol=1e-14)
    assert np.array_equal(states[:, 0], np.asarray(x0))


def test_integration_compiles_once_however_many_chunks(float64):
    """Chunks (for progress) reuse one compiled loop; tracing the rate again means recompiling."""
    system = pp_system()
    x0 = system.initial_conditions(np.random.default_rng(0), 2)[0]
    traces = []

    def counted(steps):
        def rate(x):
            traces.append(steps)
            return system.rhs(x)

        integrate_batch(system._replace(rhs=rate), x0, tiny_settings(steps=steps, save_every=1), 0, "train", NoProgress())
        return traces.count(steps)

    one_chunk, many_chunks = counted(1), counted(60)  # 60 frames: 20 chunks of 3
    assert one_chunk > 0 and many_chunks == one_chunk


def test_nonfinite_initial_state_is_reported_with_split_trajectory_and_step(float64):
    system = pp_system()
    x0 = system.initial_conditions(np.random.default_rng(0), 3)[0]
    x0[1, 4] = np.nan
    with pytest.raises(SimulationDiverged, match=r"test trajectory 11 became non-finite at step 1\b"):
        integrate_batch(system, x0, tiny_settings(), 10, "test", NoProgress())


def first_nonfinite_step(system, x0, dt, steps):
    """Reference: the first RK4 step after which each trajectory is non-finite (-1: never)."""
    first = np.full(x0.shape[0], -1)
    one_step = jax.jit(lambda x: rk4_step(jax.vmap(system.rhs), x, dt))
    x = jnp.asarray(x0)
    for step in range(1, steps + 1):
        x = one_step(x)
        bad = ~np.isfinite(np.asarray(x)).all(axis=1)
        first[(first < 0) & bad] = step
    return first


def test_blow_up_stops_simulate_naming_the_first_bad_step_and_leaves_no_store(float64, tmp_path):
    changes = dict(dt=2.0, steps=20, save_every=5, seed=3, trajectories={"train": 3, "test": 1}, batch_size=3)
    system = pp_system(**changes)
    x0 = system.initial_conditions(np.random.default_rng([3, 0]), 3)[0]  # the train stream of seed 3
    expected = first_nonfinite_step(system, x0, 2.0, 20)
    assert (expected > 0).any()  # the reference confirms the run does blow up
    out = tmp_path / "train.zarr"
    with pytest.raises(SimulationDiverged) as caught:
        simulate_tiny(out, **changes)
    found = re.search(r"^train trajectory (\d+) became non-finite at step (\d+)", str(caught.value))
    assert found, str(caught.value)
    trajectory, step = int(found[1]), int(found[2])
    assert step == expected[trajectory]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no .train.zarr.partial-* left behind


def test_blow_up_in_a_later_batch_removes_the_partly_written_store(float64, tmp_path, monkeypatch):
    system = pp_system()
    out = tmp_path / "test.zarr"
    settings = tiny_settings(trajectories={"train": 1, "test": 4}, batch_size=2)
    states = system.initial_conditions(np.random.default_rng(0), 4)[0]
    states[3, 0] = np.inf  # the last trajectory, in the second batch

    def initial_conditions(rng, count):
        return states[:count], {"a0": np.zeros(count), "b0": np.zeros(count)}

    rigged = system._replace(initial_conditions=initial_conditions)
    monkeypatch.setattr("macroclosure.simulate.build_system", lambda name, settings: rigged)
    with pytest.raises(SimulationDiverged, match=r"test trajectory 3 became non-finite at step 1\b"):
        simulate("predator_prey", settings, "test", str(out), device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []  # the first batch was written, then thrown away


def states_of(path):
    return read(open_store(path, "trajectories"), "state")


def test_same_seed_gives_bit_identical_states(train_store, tmp_path):
    again = simulate_tiny(tmp_path / "train.zarr")
    first, second = states_of(train_store), states_of(again)
    assert first.dtype == second.dtype == np.float64
    assert np.array_equal(first, second)


def test_other_seed_or_split_gives_other_states(train_store, tmp_path):
    reference = states_of(train_store)
    other_seed = states_of(simulate_tiny(tmp_path / "seed1.zarr", seed=1))
    test_split = states_of(simulate_tiny(tmp_path / "test.zarr", split="test", trajectories={"train": 3, "test": 3}))
    assert not np.array_equal(reference, other_seed)
    assert not np.array_equal(reference, test_split)


def test_batch_size_does_not_change_the_trajectories(train_store, tmp_path):
    one_batch = states_of(simulate_tiny(tmp_path / "train.zarr", batch_size=64))
    np.testing.assert_allclose(one_batch, states_of(train_store), rtol=0, atol=1e-14)


def test_store_follows_the_trajectory_contract(train_store):
    settings = tiny_settings()
    ds = open_store(train_store, "trajectories", system="predator_prey")
    assert ds["state"].dims == ("trajectory", "time", "dof")
    assert ds["state"].shape == (3, settings["steps"] // settings["save_every"] + 1, 10)
    time = ds["time"].values
    assert time[0] == 0.0
    np.testing.assert_allclose(np.diff(time), settings["dt"] * settings["save_every"], rtol=1e-12)
    assert ds.attrs["system"] == "predator_prey"
    assert ds.attrs["integrator"] == "rk4"
    assert ds.attrs["dt"] == settings["dt"]
    assert ds.attrs["split"] == "train"
    assert json.loads(ds.attrs["dof_layout"]) == {"fields": ["u", "v"], "cells": 5}


def test_store_records_provenance(train_store):
    ds = open_store(train_store, "trajectories")
    provenance = json.loads(ds.attrs["provenance"])
    assert provenance["config_digest"] == digest(tiny_settings())
    assert provenance["settings"] == tiny_settings()
    assert provenance["seed"] == 0
    assert {"macroclosure", "jax", "numpy", "xarray", "zarr"} <= set(provenance["versions"])


def test_store_keeps_the_initial_parameters_of_each_trajectory(train_store):
    ds = open_store(train_store, "trajectories")
    a0, b0, state = read(ds, "a0"), read(ds, "b0"), read(ds, "state")
    assert ds["a0"].dims == ds["b0"].dims == ("trajectory",)
    centres = (np.arange(5) + 0.5) / 5
    expected = b0[:, None] + a0[:, None] * np.cos(5 * np.pi * centres)[None, :]
    np.testing.assert_allclose(state[:, 0, :5], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(state[:, 0, 5:], 1 - expected, rtol=0, atol=1e-15)


def test_float32_settings_give_a_float32_store(tmp_path):
    ds = open_store(simulate_tiny(tmp_path / "train.zarr", dtype="float32"), "trajectories")
    assert ds["state"].dtype == np.float32
