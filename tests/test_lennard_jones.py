"""Lennard-Jones fluid: forces against jax-md and ASE, partial forces, NVE, neighbour lists.

Configurations are minimised once per session (a few seconds each) and shared. Positions
are float64 unless a test says otherwise.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from ase import Atoms
from ase.calculators.lj import LennardJones

import jax
import jax.numpy as jnp
from conftest import jax_x64
from jaxpr_probe import trace_sizes
from macroclosure.config import ConfigError, complete_section, validate
from macroclosure.simulate import SimulationDiverged, integrate_batch, simulate
from macroclosure.store import open_store
from macroclosure.systems import build_system
from macroclosure import lennard_jones_md as lj

R_CUTOFF = 2.5


def lj_settings(**changes) -> dict:
    """Settings of the jax-md engine, whose MD these tests check (test_lammps_engine compares LAMMPS with it)."""
    return complete_section("lennard_jones", "simulate", {"atoms": 256, "minimise_steps": 200, "engine": "jax-md"} | changes)


def random_positions(atoms: int, seed: int) -> np.ndarray:
    box = lj.box_length(lj_settings(atoms=atoms))
    return np.random.default_rng(seed).uniform(0.0, box, (atoms, 3))


@pytest.fixture(scope="module")
def minimised():
    """{atoms: a minimised float64 state x [6 atoms] at T0 = 1} for 256 and 800 atoms."""
    states = {}
    with jax_x64(True):
        for atoms in (256, 800):
            settings = lj_settings(atoms=atoms)
            sim = lj.simulation_functions(settings)
            states[atoms] = lj.initial_states(sim, np.random.default_rng(atoms), settings, np.array([1.0]))[0]
    return states


def positions_of(x, atoms):
    return jnp.asarray(x[: 3 * atoms].reshape(atoms, 3))


def neighbour_list_forces(positions, atoms):
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    return np.asarray(sim.force_fn(positions, lj.allocate(sim, positions)))


def partial(positions, atoms, chosen):
    box = lj.box_length(lj_settings(atoms=atoms))
    grid = lj.cell_grid(box, R_CUTOFF, lj_settings(atoms=atoms)["density"])
    return np.asarray(lj.partial_forces(positions, jnp.asarray(chosen), box=box, r_cutoff=R_CUTOFF, grid=grid))


# --- partial forces -----------------------------------------------------------------------
@pytest.mark.parametrize("atoms", [256, 800])  # 8 and 11 cells per side: 49 and 45 of the 7 x 7 columns
def test_partial_forces_equal_jax_md_neighbour_list_forces_on_the_chosen_atoms(float64, minimised, atoms):
    positions = positions_of(minimised[atoms], atoms)
    full = neighbour_list_forces(positions, atoms)
    for seed in range(3):
        chosen = np.random.default_rng(seed).choice(atoms, size=atoms // 16, replace=False)
        np.testing.assert_allclose(partial(positions, atoms, chosen), full[chosen], rtol=0, atol=1e-11 * np.abs(full).max())


def test_partial_forces_in_float32_match_float64_to_single_precision(minimised):
    x = minimised[800]
    with jax_x64(True):
        reference = neighbour_list_forces(positions_of(x, 800), 800)
    with jax_x64(False):
        single = partial(positions_of(x.astype(np.float32), 800), 800, np.arange(800))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_partial_rhs_of_every_atom_is_the_all_pairs_rhs_in_the_unit_row_order(float64, minimised):
    system = build_system("lennard_jones", lj_settings(atoms=256))
    x = jnp.asarray(minimised[256])
    units = jnp.asarray(np.random.default_rng(0).permutation(256))
    rows = np.asarray(system.unit_rows(units))
    np.testing.assert_allclose(np.asarray(system.partial_rhs(x, units)), np.asarray(system.rhs(x))[rows], rtol=0, atol=1e-11)


def test_unit_rows_are_the_three_position_then_three_velocity_rows_of_each_atom():
    system = build_system("lennard_jones", lj_settings(atoms=256))
    rows = np.asarray(system.unit_rows(jnp.array([2, 0])))
    assert rows.tolist() == [6, 7, 8, 774, 775, 776, 0, 1, 2, 768, 769, 770]


def test_position_rows_of_the_partial_rate_are_the_velocities(float64, minimised):
    system = build_system("lennard_jones", lj_settings(atoms=256))
    x = jnp.asarray(minimised[256])
    rate = np.asarray(system.partial_rhs(x, jnp.array([5, 9]))).reshape(2, 6)
    velocities = np.asarray(x[768:]).reshape(256, 3)
    np.testing.assert_array_equal(rate[:, :3], velocities[[5, 9]])


def test_an_overfull_neighbourhood_makes_the_forces_nan_never_drops_pairs(float64):
    atoms = 800
    positions = jnp.asarray(random_positions(atoms, 0) * 0.2)  # every atom crammed into a corner
    forces = partial(positions, atoms, np.array([0, 1]))
    assert np.isnan(forces).all()


def test_sampling_refuses_nan_forces_naming_the_configuration(tmp_path, monkeypatch):
    from macroclosure import sampling

    store = tmp_path / "train.zarr"
    simulate("lennard_jones", lj_settings(steps=10, save_every=5, trajectories={"train": 2, "test": 1}), "train", str(store), device="cpu", progress=False)
    system = sampling.system_of(open_store(str(store), "trajectories"))
    broken = system._replace(partial_rhs=lambda x, units: jnp.full(units.shape[0] * 6, jnp.nan, x.dtype))
    monkeypatch.setattr(sampling, "system_of", lambda ds: broken)
    with pytest.raises(ValueError, match=r"non-finite forces.*trajectory 0, time index"):
        sampling.sample(str(store), str(tmp_path / "forces.zarr"), 0.0625, 0, {"configurations": 4}, device="cpu", progress=False)
    assert not (tmp_path / "forces.zarr").exists()


@pytest.mark.parametrize("atoms", [6400, 51200])
def test_partial_force_traces_to_linear_binning_plus_pair_work_of_size_k(float64, atoms):
    """No intermediate is O(atoms x k) or O(atoms^2): binning is O(atoms), pair work O(k)."""
    k = 8
    box = lj.box_length(lj_settings(atoms=atoms))
    grid = lj.cell_grid(box, R_CUTOFF, lj_settings(atoms=atoms)["density"])
    pair_work = k * max(grid.capacity, 2 * len(grid.columns)) * 3
    _, sizes = trace_sizes(
        lambda positions, chosen: lj.partial_forces(positions, chosen, box=box, r_cutoff=R_CUTOFF, grid=grid),
        jnp.zeros((atoms, 3)), jnp.arange(k),
    )
    binning = max(6 * atoms, grid.per_side**2 * (grid.per_side + grid.ghosts) + 1)  # positions with their ghosts
    assert max(sizes) <= max(binning, pair_work)
    assert pair_work < atoms * k and binning < atoms * k


# --- independent implementation ---------------------------------------------------------
def ase_forces_and_energy(positions: np.ndarray, box: float):
    atoms = Atoms(f"Ar{len(positions)}", positions=positions, cell=[box] * 3, pbc=True)
    atoms.calc = LennardJones(sigma=1.0, epsilon=1.0, rc=R_CUTOFF, smooth=False)
    return atoms.get_forces(), atoms.get_potential_energy()


def pair_distances(positions: np.ndarray, box: float) -> np.ndarray:
    delta = positions[:, None] - positions[None]
    return np.sqrt(np.square(delta - box * np.round(delta / box)).sum(-1))


def pairs_inside_cutoff(positions: np.ndarray, box: float) -> int:
    return int(np.count_nonzero(np.triu(pair_distances(positions, box) < R_CUTOFF, k=1)))


def nearest_neighbour_distance(positions: np.ndarray, box: float) -> np.ndarray:
    return (pair_distances(positions, box) + np.diag(np.full(len(positions), np.inf))).min(axis=1)


@pytest.mark.parametrize("kind", ["random", "minimised"])
def test_forces_and_energy_agree_with_ase(float64, minimised, kind):
    atoms = 800
    box = lj.box_length(lj_settings(atoms=atoms))
    positions = random_positions(atoms, 1) if kind == "random" else np.asarray(positions_of(minimised[atoms], atoms))
    reference, ase_energy = ase_forces_and_energy(positions, box)
    ours = partial(jnp.asarray(positions), atoms, np.arange(atoms))
    corrupt = nearest_neighbour_distance(positions, box) < lj.CORRUPT_SEPARATION  # refused: NaN (a random placement has some)
    assert np.isnan(ours[corrupt]).all() and (corrupt.any() == (kind == "random"))
    scale = np.linalg.norm(reference[~corrupt], axis=1, keepdims=True)
    assert np.all(np.linalg.norm(ours[~corrupt] - reference[~corrupt], axis=1, keepdims=True) <= 1e-5 * scale)
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    energy = float(sim.energy_fn(jnp.asarray(positions), lj.allocate(sim, jnp.asarray(positions))))
    shift = float(lj.pair_energy(jnp.asarray(R_CUTOFF - 1e-12), R_CUTOFF))  # ASE shifts each pair by U(r_c)
    assert energy == pytest.approx(ase_energy + pairs_inside_cutoff(positions, box) * shift, rel=1e-8)


# --- molecular dynamics -------------------------------------------------------------------
def total_energy_per_atom(states: np.ndarray, atoms: int) -> np.ndarray:
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    potential_energy = jax.jit(sim.energy_fn)
    energies, neighbor = [], None
    for x in states:
        positions = jnp.asarray(x[: 3 * atoms].reshape(atoms, 3))
        neighbor = lj.neighbours_for(sim, positions, neighbor)
        energies.append((float(potential_energy(positions, neighbor)) + 0.5 * np.sum(np.square(x[3 * atoms :]))) / atoms)
    return np.array(energies)


def test_nve_energy_drift_over_1000_steps_at_800_atoms_stays_below_1e_2_per_atom(float64, minimised):
    """Measured: |E(t) - E(0)| <= 4.3e-3 per atom over 1 000 steps (3 starts, T0 0.76-1.14,
    float32 and float64 alike).

    Truncation without shift makes U jump by U(r_c) = -0.0163 whenever a pair crosses r_c,
    so the energy random-walks; LAMMPS shows ~1e-2 per 1 000 steps on this system. The
    bound also catches a wrong Verlet half-step or a force sign, which drift by O(1).
    """
    settings = lj_settings(atoms=800)
    system = build_system("lennard_jones", settings)
    states, first_bad = system.integrate(minimised[800][None], 20, 50, 20, lambda steps: None)
    assert (first_bad == -1).all()
    energy = total_energy_per_atom(states[0], 800)
    assert np.abs(energy - energy[0]).max() < 1e-2


def test_positions_are_unwrapped_continuously_during_the_simulation(float64, minimised):
    system = build_system("lennard_jones", lj_settings(atoms=256))
    states, _ = system.integrate(minimised[256][None], 20, 25, 20, lambda steps: None)
    positions = states[0, :, :768].reshape(-1, 256, 3)
    box = system.layout["box_length"]
    assert np.abs(np.diff(positions, axis=0)).max() < 0.2  # no jump by a box length
    assert ((positions[-1] < 0) | (positions[-1] >= box)).any()  # some atom has left the box


def test_neighbour_list_overflow_on_a_compressed_configuration_is_detected_and_recovered(float64, minimised):
    atoms = 800
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    x = minimised[atoms]
    spread = jnp.asarray(positions_of(x, atoms))
    compressed = spread.at[:, 0].multiply(0.8)  # a denser slab: more neighbours per atom
    velocities = jnp.asarray(x[3 * atoms :].reshape(atoms, 3))
    small = lj.allocate(sim, spread)  # sized for the uncompressed liquid
    overflowed = lj.verlet_frames(sim, compressed, velocities, small, jnp.array(-1), dt=0.001, save_every=5, frames=2)
    assert overflowed[2].did_buffer_overflow
    recovered = lj.run_chunk(sim, compressed, velocities, small, dt=0.001, save_every=5, frames=2)
    assert not recovered[2].did_buffer_overflow
    fresh = lj.run_chunk(sim, compressed, velocities, lj.allocate(sim, compressed), dt=0.001, save_every=5, frames=2)
    np.testing.assert_allclose(np.asarray(recovered[3]), np.asarray(fresh[3]), rtol=0, atol=1e-10)


def test_neighbour_list_reallocation_gives_up_after_its_retries(float64, minimised, monkeypatch):
    atoms = 800
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    positions = positions_of(minimised[atoms], atoms)
    compressed = positions.at[:, 0].multiply(0.8)
    monkeypatch.setattr(lj, "OVERFLOW_RETRIES", 0)
    with pytest.raises(lj.NeighbourListOverflow, match="overflowed 1 times"):
        lj.run_chunk(sim, compressed, jnp.zeros((atoms, 3)), lj.allocate(sim, positions), dt=0.001, save_every=5, frames=1)


def test_minimisation_whose_list_overflows_is_redone_from_its_start_with_a_new_list(float64, minimised, monkeypatch):
    atoms = 800
    sim = lj.simulation_functions(lj_settings(atoms=atoms))
    positions = positions_of(minimised[atoms], atoms)
    descend, started_with = lj.descend, []

    def overflowing(runs_that_overflow):
        def fake_descend(sim, positions, neighbor, **settings):
            started_with.append(neighbor)
            minimised, _ = descend(sim, positions, neighbor, **settings)
            return minimised, SimpleNamespace(did_buffer_overflow=len(started_with) <= runs_that_overflow)
        return fake_descend

    monkeypatch.setattr(lj, "descend", overflowing(1))
    result, used = lj.minimise(sim, positions, steps=5, soft=False)
    assert len(started_with) == 2 and used is started_with[1] and used is not started_with[0]
    expected, _ = descend(sim, positions, lj.allocate(sim, positions), soft=False, steps=5)
    np.testing.assert_allclose(np.asarray(result), np.asarray(expected), rtol=0, atol=1e-12)

    monkeypatch.setattr(lj, "descend", overflowing(99))
    with pytest.raises(lj.NeighbourListOverflow, match=f"overflowed {lj.OVERFLOW_RETRIES + 1} times in a row during energy"):
        lj.minimise(sim, positions, steps=5, soft=False)


def test_overlapping_atoms_stop_the_simulation_naming_trajectory_and_step(float32, minimised):
    settings = lj_settings(atoms=256, dtype="float32", steps=20, save_every=5)
    system = build_system("lennard_jones", settings)
    x0 = np.stack([minimised[256], minimised[256]]).astype(np.float32)
    x0[1, 3:6] = x0[1, 0:3] + 1e-4  # atom 1 on top of atom 0 in the second trajectory

    class NoProgress:
        def update(self, n):
            pass

    with pytest.raises(SimulationDiverged, match=r"train trajectory 5 became non-finite at step \d+"):
        integrate_batch(system, x0, settings, 4, "train", NoProgress())


# --- observables, initial states, store ---------------------------------------------------
def test_temperature_of_known_velocities_matches_the_hand_computation():
    atoms = 256
    system = build_system("lennard_jones", lj_settings(atoms=atoms))
    x = torch.zeros(2, 6 * atoms, dtype=torch.float64)
    x[0, 3 * atoms :] = 1.0  # sum |v|^2 = 3 atoms
    x[1, 3 * atoms :: 3] = 2.0  # only v_x = 2: sum |v|^2 = 4 atoms
    expected = torch.tensor([[atoms / (atoms - 1)], [4 * atoms / (3 * (atoms - 1))]], dtype=torch.float64)
    torch.testing.assert_close(system.observables(x), expected)


def test_initial_states_are_minimised_at_zero_momentum_and_their_drawn_temperature(float64):
    settings = lj_settings(atoms=256, temperature=[0.5, 1.5])
    system = build_system("lennard_jones", settings)
    states, initial = system.initial_conditions(np.random.default_rng(3), 2)
    sim = lj.simulation_functions(settings)
    for x, temperature in zip(states, initial["initial_temperature"]):
        positions, velocities = x[:768].reshape(256, 3), x[768:].reshape(256, 3)
        assert 0.5 <= temperature <= 1.5
        assert lj.temperature_of(velocities) == pytest.approx(temperature, rel=1e-12)
        np.testing.assert_allclose(velocities.sum(0), 0.0, atol=1e-10)
        assert ((positions >= 0) & (positions < sim.box)).all()
        potential = float(sim.energy_fn(jnp.asarray(positions), lj.allocate(sim, jnp.asarray(positions)))) / 256
        assert potential < -5.5  # a random placement has U/atom ~ 1e10; a minimised liquid ~ -6


def test_shared_start_gives_equal_positions_and_velocities_scaled_by_root_temperature(float64):
    settings = lj_settings(atoms=256, shared_start=True, minimise_steps=50)
    system = build_system("lennard_jones", settings)
    train, train_initial = system.initial_conditions(np.random.default_rng([0, 0]), 3)
    test, test_initial = system.initial_conditions(np.random.default_rng([0, 1]), 1)
    states = np.concatenate([train, test])
    temperatures = np.concatenate([train_initial["initial_temperature"], test_initial["initial_temperature"]])
    assert len(set(temperatures)) == 4
    np.testing.assert_array_equal(states[:, :768], np.broadcast_to(states[0, :768], (4, 768)))
    unit_pattern = states[:, 768:] / np.sqrt(temperatures)[:, None]
    np.testing.assert_allclose(unit_pattern, np.broadcast_to(unit_pattern[0], (4, 768)), rtol=1e-12)
    for x, temperature in zip(states, temperatures):
        assert lj.temperature_of(x[768:].reshape(256, 3)) == pytest.approx(temperature, rel=1e-12)


def test_shared_start_is_refused_for_a_grid_system():
    config = {"systems": {"predator_prey": {"simulate": {"shared_start": True}}}}
    with pytest.raises(ConfigError, match=r"systems\.predator_prey\.simulate.*shared_start"):
        validate(config)


def test_md_stores_record_the_box_label_atoms_and_components_with_units_and_int64_indices(tmp_path):
    """Plain xarray reads what each row of an MD store is (atom, component), its units and
    int64 indices; states default to float32."""
    from macroclosure.sampling import sample

    store, forces_store = tmp_path / "test.zarr", tmp_path / "forces.zarr"
    settings = lj_settings(steps=10, save_every=5, trajectories={"train": 1, "test": 2})
    simulate("lennard_jones", settings, "test", str(store), device="cpu", progress=False)
    ds = open_store(str(store), "trajectories")
    assert ds["state"].dtype == np.float32 and ds["state"].shape == (2, 3, 1536)
    assert ds.attrs["integrator"] == "velocity_verlet"
    assert '"box_length": 6.8399' in ds.attrs["dof_layout"]
    assert ds["initial_temperature"].shape == (2,)
    sample(str(store), str(forces_store), 0.0625, 0, {"configurations": 4}, device="cpu", progress=False)
    ds, forces = (xr.open_zarr(path, consolidated=False) for path in (store, forces_store))
    assert ds["atom"].dims == ds["component"].dims == ("dof",)
    assert list(ds["atom"].values[[0, 3, 768, 1535]]) == [0, 1, 0, 255]  # positions [256, 3], then velocities
    assert list(ds["component"].values[[0, 1, 2, 768, 769, 770]]) == ["x", "y", "z", "vx", "vy", "vz"]
    assert ds["time"].attrs["units"].startswith("tau") and "sigma/tau (velocities)" in ds["state"].attrs["units"]
    assert "sigma/tau^2 (velocity rows)" in forces["force"].attrs["units"]
    indices = [ds["trajectory"], ds["atom"], *(forces[name] for name in ("sample", "trajectory", "time_index", "index"))]
    assert {index.dtype for index in indices} == {np.dtype(np.int64)}  # jax gives int32 rows in float32 runs
    atoms_of_rows = ds["atom"].values[forces["index"].values].reshape(4, -1, 6)  # a stored row's labels: at its index
    assert (atoms_of_rows == atoms_of_rows[..., :1]).all()


def test_a_box_smaller_than_twice_the_cutoff_is_refused_naming_the_key():
    config = {"systems": {"lennard_jones": {"simulate": {"atoms": 100}}}}
    with pytest.raises(ConfigError, match=r"systems\.lennard_jones\.simulate\.atoms': 100 atoms .* box of side"):
        validate(config)


# --- the pipeline -------------------------------------------------------------------------
TINY_PIPELINE = {
    "results": "results",
    "device": "cpu",
    "systems": {
        "lennard_jones": {
            "seeds": [0],
            "simulate": {"atoms": 256, "steps": 20, "save_every": 5, "minimise_steps": 50, "trajectories": {"train": 2, "test": 1}},
            "sample": {"fractions": [0.0625, 1.0], "configurations": 8, "batch_size": 4, "equal_budget": False},  # 0.5 configurations
            "closure": {"latent_dim": 3, "epochs": 1, "hidden": [8], "condition_rows": "closure"},
            "train": {"models": ["mlp", "onsager"], "losses": ["L_z", "L_xp"], "epochs": 2, "mlp": {"hidden": [8]}, "onsager": {"hidden": 8}},
        }
    },
}


def test_every_stage_runs_on_lennard_jones_and_counts_force_evaluations_in_atoms(tmp_path):
    from test_workflow import snakemake, write_config

    write_config(tmp_path, TINY_PIPELINE)
    result = snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    results = tmp_path / "results"
    forces = open_store(str(results / "lennard_jones/forces/p0.0625/seed0.zarr"), "forces")
    assert forces.attrs["k"] == 16 and forces["index"].shape == (8, 16 * 6)  # 16 of 256 atoms, 6 rows each
    for model in ("mlp", "onsager"):
        for run in ("L_z_p1", "L_xp_p0.0625"):
            metrics = (results / f"lennard_jones/evaluation/{model}_{run}_seed0/metrics.json").read_text()
            assert '"force_unit": "atom"' in metrics
    summary = (results / "report/summary.md").read_text()
    assert "| lennard_jones | mlp | L_xp | 0.0625 | 8 | 128 atoms |" in summary
    assert "| lennard_jones | onsager | L_z | 1 | 8 | 2.05e+03 atoms |" in summary
