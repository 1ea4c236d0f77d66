"""The predator-prey system: full and partial force, their cost, observables, initial states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import state_subset_cases, tiny_settings
from jaxpr_probe import trace_sizes

from macroclosure.systems import build_system, dimensions

A, B, D = 3.0, 0.4, 0.3


def system(cells, a=A, b=B, diffusion_u=D):
    return build_system("predator_prey", tiny_settings(cells=cells, a=a, b=b, diffusion_u=diffusion_u))


def random_cases(cells, dtype, count=6, seed=0):
    """Random states with random subsets of 4, and the 4 edge cells."""
    edges = np.array([0, cells - 1, cells, 2 * cells - 1])
    return state_subset_cases(2 * cells, edges, (-1.0, 2.0), dtype, count, seed)


@pytest.mark.parametrize("precision, dtype", [("float32", np.float32), ("float64", np.float64)])
def test_partial_force_equals_full_force_at_the_sampled_units(request, precision, dtype):
    request.getfixturevalue(precision)
    pp = system(7)
    full_jit, partial_jit = jax.jit(pp.rhs), jax.jit(pp.partial_rhs)
    for x, units in random_cases(7, dtype):
        rows = np.asarray(pp.unit_rows(units))
        eager = np.asarray(pp.partial_rhs(x, units))
        jitted = np.asarray(partial_jit(x, units))
        assert eager.dtype == jitted.dtype == np.dtype(dtype)
        # compare like with like: XLA contracts multiply-adds differently under jit
        assert np.array_equal(eager, np.asarray(pp.rhs(x))[rows])
        assert np.array_equal(jitted, np.asarray(full_jit(x))[rows])


def test_partial_force_of_every_unit_at_once_is_the_full_force(float64):
    pp = system(7)
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, 14))
    assert np.array_equal(np.asarray(pp.partial_rhs(x, jnp.arange(14))), np.asarray(pp.rhs(x)))


def test_partial_force_reads_only_the_stencils_of_its_units(float64):
    cells = 20
    pp = system(cells)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 2 * cells)
    for units in ([0, 19, 20, 39], [5, 27, 26, 12]):
        stencil = set()
        for unit in units:
            kind, cell = divmod(unit, cells)
            stencil |= {kind * cells + max(cell - 1, 0), unit, kind * cells + min(cell + 1, cells - 1)}
            stencil |= {cell, cells + cell}  # u and v at the unit's cell
        poisoned = np.full_like(x, np.nan)
        poisoned[sorted(stencil)] = x[sorted(stencil)]
        expected = np.asarray(pp.partial_rhs(jnp.asarray(x), jnp.asarray(units)))
        got = np.asarray(pp.partial_rhs(jnp.asarray(poisoned), jnp.asarray(units)))
        assert np.isfinite(got).all()
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("cells", [50, 5000])
def test_partial_force_traces_to_work_of_size_k_only(float64, cells):
    k, n = 3, 2 * cells
    pp = system(cells)
    equations, sizes = trace_sizes(pp.partial_rhs, jnp.zeros(n), jnp.array([0, cells + 7, n - 1]))
    assert max(sizes) <= 5 * k  # no intermediate (nor constant) grows with N: k stencils of 5 rows
    for eqn in equations:  # the state itself is only ever gathered from
        if any(int(np.prod(v.aval.shape)) >= n for v in eqn.invars if hasattr(v, "aval")):
            assert eqn.primitive.name == "gather"
            assert all(int(np.prod(v.aval.shape)) == 5 * k for v in eqn.outvars)


def test_partial_force_trace_does_not_depend_on_the_grid_size(float64):
    def primitives(cells):
        equations, _ = trace_sizes(system(cells).partial_rhs, jnp.zeros(2 * cells), jnp.array([1, 2, 3]))
        return [eqn.primitive.name for eqn in equations]

    assert primitives(50) == primitives(5000)


@pytest.mark.parametrize("cells", [50, 5000])
def test_full_force_does_work_of_size_n(float64, cells):
    _, sizes = trace_sizes(system(cells).rhs, jnp.zeros(2 * cells))
    assert max(sizes) >= 2 * cells  # sanity check of the probe used on the partial force


def test_full_force_matches_a_hand_computation_on_three_cells(float64):
    a, b, d = 2.5, 0.3, 0.7
    u = [0.2, 0.5, 0.9]
    v = [0.6, 0.1, 0.4]
    # zero-flux ends: the ghost cell repeats the edge cell, so the edge Laplacian is one-sided
    lap_u = [u[1] - u[0], u[0] - 2 * u[1] + u[2], u[1] - u[2]]
    lap_v = [v[1] - v[0], v[0] - 2 * v[1] + v[2], v[1] - v[2]]
    expected = [d * lap_u[i] + u[i] * (1 - u[i] - v[i]) for i in range(3)]
    expected += [lap_v[i] + a * v[i] * (u[i] - b) for i in range(3)]
    got = np.asarray(system(3, a, b, d).rhs(jnp.asarray(u + v)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert got[0] == pytest.approx(0.7 * 0.3 + 0.2 * 0.2)  # one value spelt out fully


def test_observables_are_the_means_of_u_and_v():
    pp = system(4)
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 1.5, 1.5], [0, 0, 0, 4.0, -1, 1, -2, 2]], dtype=torch.float64)
    assert torch.equal(pp.observables(x), torch.tensor([[3.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert pp.observable_names == ("mean_u", "mean_v")
    assert pp.dims.observables == 2


def test_observable_jacobian_is_one_over_cells_on_its_own_species():
    cells = 5
    pp = system(cells)
    x = torch.rand(2 * cells, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(pp.observables, x)
    expected = torch.zeros(2, 2 * cells, dtype=torch.float64)
    expected[0, :cells] = 1.0 / cells
    expected[1, cells:] = 1.0 / cells
    torch.testing.assert_close(jacobian, expected, rtol=0, atol=1e-15)


def test_dimensions_describe_a_coordinate_per_grid_value():
    dims = dimensions("predator_prey", {"cells": 50})
    assert (dims.dof, dims.units, dims.rows_per_unit, dims.unit) == (100, 100, 1, "coordinate")


def test_unknown_system_is_refused_by_name():
    with pytest.raises(ValueError, match="lennard_jones_typo"):
        build_system("lennard_jones_typo", {})


def initial_states(cells=50, count=200, seed=0):
    return system(cells).initial_conditions(np.random.default_rng(seed), count)


def test_initial_species_sum_to_one():
    x0, _ = initial_states()
    np.testing.assert_allclose(x0[:, :50] + x0[:, 50:], 1.0, rtol=0, atol=1e-15)


def test_initial_parameters_lie_in_their_ranges():
    _, params = initial_states()
    assert params["a0"].shape == params["b0"].shape == (200,)
    assert (params["a0"] >= 0).all() and (params["a0"] <= 0.2).all()
    assert (params["b0"] >= 0.4).all() and (params["b0"] <= 0.6).all()
    assert np.ptp(params["a0"]) > 0.1 and np.ptp(params["b0"]) > 0.1  # really drawn, not fixed


def test_initial_prey_is_a_cosine_at_cell_centres():
    cells = 8
    x0, params = initial_states(cells, count=3)
    centres = (np.arange(cells) + 0.5) / cells
    for i in range(3):
        expected = params["b0"][i] + params["a0"][i] * np.cos(5 * np.pi * centres)
        np.testing.assert_allclose(x0[i, :cells], expected, rtol=0, atol=1e-15)


def test_initial_conditions_depend_on_the_seed_only():
    first, _ = initial_states(seed=4)
    again, _ = initial_states(seed=4)
    other, _ = initial_states(seed=5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("cells", [3, 8, 50])
def test_initial_profile_is_a_zero_flux_eigenmode_of_the_laplacian(float64, cells):
    """cos(5 pi x) at cell centres is a Neumann mode: with a = 0 the predator rate is
    lap v = 4 sin^2(5 pi / (2 cells)) a0 cos(5 pi x), at the edge cells too."""
    pp = system(cells, a=0.0)
    x0, params = pp.initial_conditions(np.random.default_rng(2), 4)
    rates = np.asarray(jax.vmap(pp.rhs)(jnp.asarray(x0)))[:, cells:]
    centres = (np.arange(cells) + 0.5) / cells
    eigenvalue = 4 * np.sin(5 * np.pi / (2 * cells)) ** 2
    expected = eigenvalue * params["a0"][:, None] * np.cos(5 * np.pi * centres)[None, :]
    np.testing.assert_allclose(rates, expected, rtol=0, atol=1e-12)
