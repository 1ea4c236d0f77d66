"""Lennard-Jones partial forces near their limit: exact on dense physical configurations
(growing their candidate slots when a configuration needs more), NaN and refused beyond.

Every comparison is against jax-md's dense all-pairs forces in float64.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

import jax.numpy as jnp
from macroclosure import lennard_jones_md as lj
from macroclosure import sampling
from macroclosure.config import complete_section
from macroclosure.systems import build_system


def lj_settings(**changes) -> dict:
    return complete_section("lennard_jones", "simulate", {"atoms": 256, "minimise_steps": 100} | changes)


def simple_cubic() -> tuple[dict, np.ndarray]:
    """The first 256 sites of a 7 x 7 x 7 simple-cubic lattice of spacing 0.977 filling its box:
    no pair nearer than 0.977, but 8 atoms where a cell of side r_c / 2 holds 2 on average."""
    spacing = 0.977
    settings = lj_settings(density=256 / (7 * spacing) ** 3)
    sites = np.array(list(itertools.product(range(7), repeat=3)))[:256] * spacing
    return settings, sites + spacing / 2


def fcc(density: float, cells: int, shake: float = 0.01) -> tuple[dict, np.ndarray]:
    """An fcc crystal of cells^3 unit cells at `density`, shaken off its lattice by `shake`."""
    lattice = (4 / density) ** (1 / 3)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    sites = (np.array(list(itertools.product(range(cells), repeat=3)))[:, None] + basis[None]).reshape(-1, 3) * lattice
    return lj_settings(atoms=len(sites), density=density), sites + shake * np.random.default_rng(0).normal(size=sites.shape)


def liquid(atoms: int, density: float) -> tuple[dict, np.ndarray]:
    """A minimised random placement moved 50 velocity-Verlet steps at T0 = 1."""
    settings = lj_settings(atoms=atoms, density=density)
    system = build_system("lennard_jones", settings)
    states, _ = system.initial_conditions(np.random.default_rng(atoms), 1)
    trajectory, _ = system.integrate(states, 1, 50, 1, lambda steps: None)
    return settings, trajectory[0, -1, : 3 * atoms].reshape(atoms, 3)


def nearest_distance(settings: dict, positions: np.ndarray) -> float:
    """Distance of the nearest pair (minimum image)."""
    delta = positions[:, None] - positions[None]
    delta -= lj.box_length(settings) * np.round(delta / lj.box_length(settings))
    return float(np.sqrt(np.square(delta).sum(-1) + np.eye(len(positions)) * 1e9).min())


def state_of(positions: np.ndarray) -> np.ndarray:
    return np.concatenate([positions.ravel(), np.zeros(positions.size)])


def all_pair(settings: dict, positions: np.ndarray) -> np.ndarray:
    box = lj.box_length(settings)
    return np.asarray(lj.all_pair_forces(jnp.asarray(positions), box=box, r_cutoff=settings["r_cutoff"]))


def sampled_forces(settings: dict, positions: np.ndarray, units: np.ndarray):
    """(forces [k, 3] the sample stage computes on `units`, the system that computed them)."""
    system = build_system("lennard_jones", settings)
    states, subsets = jnp.asarray(state_of(positions))[None], jnp.asarray(units)[None]
    values, _, used = sampling.fitted_partial_forces(system, states, subsets, {})
    return np.asarray(values).reshape(len(units), 6)[:, 3:], system, used


CONFIGURATIONS = {  # dense physical configurations: no pair nearer than 0.8 sigma (made once)
    "simple cubic 0.977": functools.cache(simple_cubic),
    "fcc at density 1.1": functools.cache(lambda: fcc(1.1, 4)),
    "liquid at density 0.8": functools.cache(lambda: liquid(800, 0.8)),
    "liquid in a box of 6 cells per side": functools.cache(lambda: liquid(180, 1.0)),  # every column searched, once
}


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_partial_forces_of_every_atom_are_the_all_pairs_forces(float64, name):
    settings, positions = CONFIGURATIONS[name]()
    units = np.random.default_rng(1).permutation(len(positions))
    reference = all_pair(settings, positions)
    forces, _, _ = sampled_forces(settings, positions, units)
    np.testing.assert_allclose(forces, reference[units], rtol=0, atol=1e-10 * np.abs(reference).max())


def test_the_configurations_are_physical_and_dense(float64):
    for name, configuration in CONFIGURATIONS.items():
        settings, positions = configuration()
        assert nearest_distance(settings, positions) > 0.8 and settings["density"] >= 0.8, name


def test_a_configuration_needing_more_candidate_slots_grows_them_and_gets_exact_forces(float64):
    """The simple-cubic lattice packs its 256 atoms at density 1.07 into 3/4 of a box of
    density 0.8, more than the slots sized for the liquid hold: those atoms' forces are NaN
    until the slots grow, and exact after."""
    settings, positions = simple_cubic()
    box, r_cutoff = lj.box_length(settings), settings["r_cutoff"]
    grid = lj.cell_grid(box, r_cutoff, settings["density"])
    atoms = jnp.arange(256)
    needed = np.asarray(lj.candidate_counts(jnp.asarray(positions), atoms, box=box, r_cutoff=r_cutoff, grid=grid))
    unfitted = np.asarray(lj.partial_forces(jnp.asarray(positions), atoms, box=box, r_cutoff=r_cutoff, grid=grid))
    assert needed.max() > grid.capacity
    np.testing.assert_array_equal(np.isnan(unfitted).any(axis=1), needed > grid.capacity)

    forces, system, used = sampled_forces(settings, positions, np.arange(256))
    assert used is not system  # grown, then recomputed
    assert used.fit_partial(jnp.asarray(state_of(positions))[None], atoms[None]) is None  # and now enough
    reference = all_pair(settings, positions)
    np.testing.assert_allclose(forces, reference, rtol=0, atol=1e-10 * np.abs(reference).max())


def test_fitted_grid_grows_with_room_to_spare_and_never_past_the_packing_bound():
    grid = lj.cell_grid(lj.box_length(lj_settings(atoms=6400)), 2.5, 0.8)
    assert lj.fitted_grid(grid, grid.capacity) is None
    grown = lj.fitted_grid(grid, grid.capacity + 40)
    assert grown.capacity == int(np.ceil(lj.CAPACITY_GROWTH * (grid.capacity + 40))) and grown.max_capacity == grid.max_capacity
    assert lj.fitted_grid(grid, grid.max_capacity - 1).capacity == grid.max_capacity
    assert lj.fitted_grid(grid, grid.max_capacity + 1) is None


def test_the_densest_packing_at_the_separation_limit_fits_within_the_bound_and_is_exact(float64):
    """fcc just looser than 0.8-sigma contacts, 3.3 times the liquid's density, shaken: about
    the most any configuration without a nearer pair puts in an atom's neighbourhood."""
    settings, positions = fcc(0.95 * lj.SEPARATED_DENSITY, 6, shake=0.002)
    assert nearest_distance(settings, positions) > 0.8
    box, atoms = lj.box_length(settings), jnp.arange(len(positions))
    grid = lj.cell_grid(box, settings["r_cutoff"], settings["density"])
    assert lj.candidate_counts(jnp.asarray(positions), atoms, box=box, r_cutoff=settings["r_cutoff"], grid=grid).max() <= grid.max_capacity
    reference = all_pair(settings, positions)
    forces, _, _ = sampled_forces(settings, positions, np.arange(len(positions)))
    np.testing.assert_allclose(forces, reference, rtol=0, atol=1e-10 * np.abs(reference).max())


def test_a_state_crammed_to_a_tenth_of_sigma_stays_nan_and_the_sampler_refuses_it_naming_it(float64):
    """1 000 atoms 0.1 sigma apart in one corner: every atom's neighbourhood holds more than
    close packing at 0.8 sigma allows, so growing cannot help; the sampler names the state."""
    settings = lj_settings(atoms=1000)
    crammed = np.array(list(itertools.product(range(10), repeat=3))) * 0.1 + 1.0
    system = build_system("lennard_jones", settings)
    states, units = jnp.asarray(state_of(crammed))[None], jnp.arange(0, 1000, 16)[None]
    values, _, used = sampling.fitted_partial_forces(system, states, units, {})
    assert used is system and np.isnan(np.asarray(values)[:, 3::6]).all()
    with pytest.raises(ValueError, match=r"non-finite forces in 1 of 1 configurations \(first at trajectory 3, time index 7\)"):
        sampling.refuse_non_finite(np.asarray(values), np.array([3]), np.array([7]), "train.zarr")


def test_a_pair_at_a_tenth_of_sigma_makes_nan_on_its_two_atoms_only_and_the_sampler_refuses_it(float64):
    """A liquid with atom 1 moved to 0.1 sigma from atom 0: its force is finite (4.8e14) but no
    state of the fluid, so the two atoms' forces are NaN and every other atom's stays exact."""
    settings, positions = CONFIGURATIONS["liquid at density 0.8"]()
    near = positions.copy()
    near[1] = near[0] + np.array([0.1, 0.0, 0.0])
    units = np.concatenate([[0, 1], np.arange(2, 800, 7)])
    forces, _, _ = sampled_forces(settings, near, units)
    refused = np.isnan(forces).any(axis=1)
    assert refused[:2].all() and not refused[2:].any()
    reference = all_pair(settings, near)[units[2:]]
    np.testing.assert_allclose(forces[2:], reference, rtol=0, atol=1e-10 * np.abs(reference).max())
    with pytest.raises(ValueError, match=r"first at trajectory 0, time index 4\).*nearer than 0.5 sigma"):
        sampling.refuse_non_finite(forces.reshape(1, -1), np.array([0]), np.array([4]), "train.zarr")


def test_the_batches_after_the_slots_grow_are_sized_for_the_grown_system(float64, monkeypatch):
    """The simple-cubic configurations need more slots than a liquid: the first batch grows
    them, and the next batches are sized by the grown system's memory, not the first's."""
    settings, positions = simple_cubic()
    system = build_system("lennard_jones", settings)
    states = np.stack([state_of(positions)] * 6)
    units = np.stack([np.random.default_rng(seed).permutation(256)[:64] for seed in range(6)])
    sized_for = []
    monkeypatch.setattr(sampling, "configurations_per_batch", lambda rhs, state, chosen, limit: sized_for.append(rhs) or 2)
    forces, _ = sampling.batched_partial_forces(system, lambda part: states[part], units, 1024, None)
    assert len(sized_for) == 2 and sized_for[0] is system.partial_rhs and sized_for[1] is not system.partial_rhs
    reference = all_pair(settings, positions)
    for chosen, row in zip(units, forces):
        np.testing.assert_allclose(row.reshape(-1, 6)[:, 3:], reference[chosen], rtol=0, atol=1e-10 * np.abs(reference).max())
