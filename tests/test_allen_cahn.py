"""The Allen-Cahn system: full and partial force, their cost, free energy, gradient flow,
time integration and initial states."""

import math
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import state_subset_cases
from jaxpr_probe import trace_sizes

from macroclosure.integrators import rk4_step
from macroclosure.simulate import SPLIT_STREAMS, advance, simulate
from macroclosure.store import open_store, read
from macroclosure.systems import build_system, dimensions, known_systems


def system(cells):
    return build_system("allen_cahn", {"cells": cells})


def epsilon(cells):
    return 10.0 / cells / (2.0 * math.sqrt(2.0) * math.atanh(0.9))


def corner_and_edge_units(cells):
    """The four corners and one cell on each edge (row-major numbering)."""
    last = cells - 1
    cells_rc = [(0, 0), (0, last), (last, 0), (last, last), (0, 2), (last, 3), (2, 0), (3, last)]
    return np.array([r * cells + c for r, c in cells_rc])


def random_cases(cells, dtype, count=6, seed=0):
    """Random states with random subsets of 8, and corners plus edges."""
    return state_subset_cases(cells * cells, corner_and_edge_units(cells), (-1.5, 1.5), dtype, count, seed)


# --- partial force ---------------------------------------------------------------------


@pytest.mark.parametrize("precision, dtype", [("float32", np.float32), ("float64", np.float64)])
def test_partial_force_equals_full_force_at_the_sampled_units(request, precision, dtype):
    request.getfixturevalue(precision)
    ac = system(7)
    full_jit, partial_jit = jax.jit(ac.rhs), jax.jit(ac.partial_rhs)
    for x, units in random_cases(7, dtype):
        rows = np.asarray(ac.unit_rows(units))
        eager = np.asarray(ac.partial_rhs(x, units))
        jitted = np.asarray(partial_jit(x, units))
        assert eager.dtype == jitted.dtype == np.dtype(dtype)
        assert np.array_equal(eager, np.asarray(ac.rhs(x))[rows])
        # under jit XLA may fuse the rate's one multiply-add into an FMA: in both alike
        assert np.array_equal(jitted, np.asarray(full_jit(x))[rows])


@pytest.mark.parametrize("precision, dtype", [("float32", np.float32), ("float64", np.float64)])
def test_batched_partial_force_equals_batched_full_force_under_jit(request, precision, dtype):
    """The way sampling and simulation call them: jit(vmap(...)) over a batch of states."""
    request.getfixturevalue(precision)
    cells = 16
    ac = system(cells)
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.uniform(-1.5, 1.5, (5, cells * cells)).astype(dtype))
    units = np.stack([rng.choice(cells * cells, size=9, replace=False) for _ in range(5)])
    units[0, :8] = corner_and_edge_units(cells)
    full = np.asarray(jax.jit(jax.vmap(ac.rhs))(x))
    got = np.asarray(jax.jit(jax.vmap(ac.partial_rhs))(x, jnp.asarray(units)))
    assert np.array_equal(got, np.take_along_axis(full, units, axis=1))


def test_partial_force_of_every_unit_at_once_is_the_full_force(float64):
    ac = system(6)
    x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, 36))
    assert np.array_equal(np.asarray(ac.partial_rhs(x, jnp.arange(36))), np.asarray(ac.rhs(x)))


def stencil_of(unit, cells):
    """The cell and its in-grid neighbours (a missing neighbour is the cell itself)."""
    row, col = divmod(unit, cells)
    near = [(row, col), (row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)]
    return {r * cells + c for r, c in near if 0 <= r < cells and 0 <= c < cells}


def test_partial_force_reads_only_the_stencils_of_its_units(float64):
    cells = 12
    ac = system(cells)
    x = np.random.default_rng(1).uniform(-1, 1, cells * cells)
    for units in (corner_and_edge_units(cells), np.array([13, 77, 50, 130, 14, 143, 66, 1])):
        stencil = sorted(set().union(*(stencil_of(int(u), cells) for u in units)))
        poisoned = np.full_like(x, np.nan)
        poisoned[stencil] = x[stencil]
        expected = np.asarray(ac.partial_rhs(jnp.asarray(x), jnp.asarray(units)))
        got = np.asarray(ac.partial_rhs(jnp.asarray(poisoned), jnp.asarray(units)))
        assert np.isfinite(got).all()
        assert np.array_equal(got, expected)


def _state(cells):
    """An abstract state: tracing needs only its shape, so large grids cost nothing."""
    return jax.ShapeDtypeStruct((cells * cells,), jnp.float64)


@pytest.mark.parametrize("cells", [50, 3000])
def test_partial_force_traces_to_work_of_size_k_only(float64, cells):
    n = cells * cells
    units = jnp.array([0, cells + 7, n - 1])
    k = units.size
    equations, sizes = trace_sizes(system(cells).partial_rhs, _state(cells), units)
    assert max(sizes) <= 5 * k  # no intermediate (nor constant) grows with N: k stencils of 5 rows
    for eqn in equations:  # the state itself is only ever gathered from
        if any(int(np.prod(v.aval.shape)) >= n for v in eqn.invars if hasattr(v, "aval")):
            assert eqn.primitive.name == "gather"
            assert all(int(np.prod(v.aval.shape)) == 5 * k for v in eqn.outvars)


def test_partial_force_trace_does_not_depend_on_the_grid_size(float64):
    def primitives(cells):
        equations, _ = trace_sizes(system(cells).partial_rhs, _state(cells), jnp.array([1, 2, 3]))
        return [eqn.primitive.name for eqn in equations]

    assert primitives(50) == primitives(3000)


@pytest.mark.parametrize("cells", [50, 3000])
def test_full_force_does_work_of_size_n(float64, cells):
    _, sizes = trace_sizes(system(cells).rhs, _state(cells))
    assert max(sizes) >= cells * cells  # sanity check of the probe used on the partial force


# --- full force ------------------------------------------------------------------------


def test_full_force_matches_a_graph_laplacian_on_three_by_three_cells(float64):
    """Zero flux = no boundary edges: lap_i = sum over in-grid neighbours of (u_j - u_i) / h^2."""
    cells = 3
    u = np.array([[0.2, -0.5, 0.9], [0.6, 0.1, -0.4], [-1.1, 0.3, 0.7]])
    eps2 = epsilon(cells) ** 2
    expected = np.empty_like(u)
    for r in range(cells):
        for c in range(cells):
            lap = sum(
                u[r + dr, c + dc] - u[r, c]
                for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= r + dr < cells and 0 <= c + dc < cells
            )
            expected[r, c] = (u[r, c] - u[r, c] ** 3) / eps2 + lap * cells**2
    got = np.asarray(system(cells).rhs(jnp.asarray(u.ravel())))
    np.testing.assert_allclose(got, expected.ravel(), rtol=1e-14, atol=1e-12)
    corner = (0.2 - 0.2**3) / eps2 + 9 * ((-0.5 - 0.2) + (0.6 - 0.2))  # one value spelt out fully
    assert got[0] == pytest.approx(corner, rel=1e-14)


def test_constant_states_in_the_wells_are_steady(float64):
    ac = system(5)
    for value in (-1.0, 0.0, 1.0):
        assert np.array_equal(np.asarray(ac.rhs(jnp.full(25, value))), np.zeros(25))


# --- free energy -----------------------------------------------------------------------


def free_energy(ac, x):
    return ac.observables(torch.as_tensor(x, dtype=torch.float64))


@pytest.mark.parametrize("cells", [4, 9])
def test_free_energy_of_a_constant_field_is_the_bulk_density(cells):
    ac = system(cells)
    for c in (0.3, -0.7, 1.6):
        energy = free_energy(ac, np.full(cells * cells, c))
        assert energy.shape == (1,)
        # area 1 and no gradient: E = (c^2 - 1)^2 / (4 eps^2)
        assert energy.item() == pytest.approx((c * c - 1) ** 2 / (4 * epsilon(cells) ** 2), rel=1e-14)


def test_free_energy_vanishes_in_the_wells_and_keeps_batch_shape():
    ac = system(6)
    x = torch.stack([torch.ones(36), -torch.ones(36)]).to(torch.float64)
    energy = ac.observables(x.reshape(2, 1, 36))
    assert energy.shape == (2, 1, 1)
    assert torch.equal(energy, torch.zeros(2, 1, 1, dtype=torch.float64))


def tanh_profile(cells, shift=0.0):
    """u = tanh((x - 0.5 - shift) / (sqrt(2) eps)) at cell centres, constant along y."""
    centres = (np.arange(cells) + 0.5) / cells
    return np.tanh((centres - 0.5 - shift) / (math.sqrt(2) * epsilon(cells)))


@pytest.mark.parametrize("axis", [0, 1])
def test_free_energy_of_a_planar_interface_matches_the_discrete_sum(axis):
    cells = 40
    h, eps = 1.0 / cells, epsilon(cells)
    profile = tanh_profile(cells, shift=0.3 * h)
    field = np.tile(profile, (cells, 1)) if axis == 1 else np.tile(profile[:, None], (1, cells))
    # by hand: every one of the `cells` lines across the interface has the same 1-D energy
    line = h * h * np.sum((profile**2 - 1) ** 2 / (4 * eps**2)) + 0.5 * np.sum(np.diff(profile) ** 2)
    assert free_energy(system(cells), field.ravel()).item() == pytest.approx(cells * line, rel=1e-13)


@pytest.mark.parametrize("cells", [50, 200])
def test_free_energy_of_a_planar_interface_against_the_continuum_value(cells):
    """The continuum interface energy per unit length is 2 sqrt(2) / (3 eps). The discrete sum
    differs by -(h / eps)^2 / 60 relative, to leading order: the cell sums are midpoint rules
    (spectrally accurate for the smooth tanh), and the forward difference gives
    (Delta u)^2 / h = h (u'^2 - h^2 u''^2 / 12 + ...), with int u''^2 / int u'^2 = 4 / (5 * 2 eps^2)
    and the gradient term half the total. Since eps / h is fixed (about 2.40), this relative
    difference is a constant, about -2.89e-3; measured -2.866e-3, the next order is
    O((h / eps)^4) ~ 3e-2 times a small coefficient, hence the 1e-4 tolerance."""
    h, eps = 1.0 / cells, epsilon(cells)
    field = np.tile(tanh_profile(cells, shift=0.17 * h), (cells, 1))
    continuum = 2 * math.sqrt(2) / (3 * eps)
    relative = free_energy(system(cells), field.ravel()).item() / continuum - 1
    assert relative == pytest.approx(-((h / eps) ** 2) / 60, abs=1e-4)


@pytest.mark.parametrize("cells", [5, 8])
def test_scheme_is_the_gradient_flow_of_the_free_energy(float64, cells):
    """dE/du = -h^2 rhs(u), exactly for this discretisation."""
    ac = system(cells)
    rng = np.random.default_rng(cells)
    for _ in range(3):
        x = rng.uniform(-1.5, 1.5, cells * cells)
        u = torch.tensor(x, requires_grad=True)
        (gradient,) = torch.autograd.grad(ac.observables(u).sum(), u)
        expected = -np.asarray(ac.rhs(jnp.asarray(x))) / cells**2
        np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


# --- time integration ------------------------------------------------------------------


def test_free_energy_never_increases_along_rk4_trajectories(float64):
    cells, steps = 16, 400
    ac = system(cells)
    x0, _ = ac.initial_conditions(np.random.default_rng(5), 3)
    dt = 0.1 / cells**2
    _, saved, first_bad = advance(
        ac.rhs, jnp.asarray(x0), 0, jnp.full(3, -1), dt=dt, save_every=1, frames=steps
    )
    assert (np.asarray(first_bad) < 0).all()
    states = np.concatenate([x0[None], np.asarray(saved)])  # [steps + 1, 3, N]
    energy = free_energy(ac, states)[..., 0].numpy()
    increase = np.diff(energy, axis=0)
    assert (increase <= 1e-12 * energy[:-1]).all()
    assert (energy[-1] < 0.9 * energy[0]).all()  # and it really moves


def test_rk4_converges_at_fourth_order_in_time(float64):
    """n = 8, T = 50 steps of dt = 0.1 h^2; errors at dt, dt/2, dt/4 against dt/64.
    Measured ratios: about 16.8 and 16.4."""
    cells, steps = 8, 50
    ac = system(cells)
    x0 = jnp.asarray(ac.initial_conditions(np.random.default_rng(0), 1)[0][0])
    total = steps * 0.1 / cells**2

    @jax.jit
    def integrate(x, count):  # one compilation for every step count
        dt = total / count
        return jax.lax.fori_loop(0, count, lambda _, x: rk4_step(ac.rhs, x, dt), x)

    reference = integrate(x0, 64 * steps)
    errors = [float(jnp.max(jnp.abs(integrate(x0, steps * 2**level) - reference))) for level in range(3)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert errors[2] > 1e-13  # well above rounding, so the ratios measure truncation
    assert all(12 < ratio < 20 for ratio in ratios), (errors, ratios)


# --- initial states, dimensions --------------------------------------------------------


def initial_states(cells=200, count=50, seed=0):
    return system(cells).initial_conditions(np.random.default_rng(seed), count)


def test_initial_radii_lie_in_their_ranges():
    _, params = initial_states()
    assert params["r1"].shape == params["r2"].shape == (50,)
    assert (params["r1"] >= 0.30).all() and (params["r1"] <= 0.40).all()
    assert (params["r2"] >= 0.10).all() and (params["r2"] <= 0.15).all()
    assert np.ptp(params["r1"]) > 0.05 and np.ptp(params["r2"]) > 0.025  # really drawn, not fixed


def test_initial_state_is_an_annulus_of_plus_one():
    cells = 200
    x0, params = initial_states(cells)
    assert x0.shape == (50, cells * cells)
    assert (x0 >= -1).all() and (x0 <= 1).all()
    centres = (np.arange(cells) + 0.5) / cells - 0.5
    r = np.hypot(centres[:, None], centres[None, :]).ravel()
    for i in range(x0.shape[0]):
        middle = np.argmin(np.abs(r - 0.5 * (params["r1"][i] + params["r2"][i])))
        assert x0[i, middle] > 0.99  # in the ring
        assert (x0[i, r < 0.5 * params["r2"][i]] < -0.99).all()  # the hole, the centre of the square
        assert (x0[i, r > params["r1"][i] + 0.05] < -0.99).all()  # outside, the corners


def test_initial_state_is_the_tanh_product_at_cell_centres():
    cells = 10
    x0, params = initial_states(cells, count=2)
    width = math.sqrt(2) * epsilon(cells)
    for i in range(2):
        for row, col in ((0, 0), (4, 5), (2, 7), (9, 3)):
            r = math.hypot((col + 0.5) / cells - 0.5, (row + 0.5) / cells - 0.5)
            expected = math.tanh((params["r1"][i] - r) / width) * math.tanh((r - params["r2"][i]) / width)
            assert x0[i, row * cells + col] == pytest.approx(expected, rel=1e-14, abs=1e-15)


def test_initial_conditions_depend_on_the_seed_only():
    first, _ = initial_states(cells=20, seed=4)
    again, _ = initial_states(cells=20, seed=4)
    other, _ = initial_states(cells=20, seed=5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_dimensions_and_layout():
    dims = dimensions("allen_cahn", {"cells": 30})
    assert (dims.dof, dims.units, dims.rows_per_unit, dims.observables, dims.unit) == (900, 900, 1, 1, "coordinate")
    ac = system(30)
    assert ac.dims == dims
    assert ac.observable_names == ("free_energy",)
    assert ac.layout == {"field": "u", "shape": [30, 30], "h": 1 / 30, "epsilon": epsilon(30)}
    assert ac.layout["epsilon"] == pytest.approx(2.4016 / 30, rel=1e-4)  # eps ~ 2.4 h
    assert "allen_cahn" in known_systems()


def test_time_step_is_dt_over_h2_times_h2():
    assert build_system("allen_cahn", {"cells": 20, "dt_over_h2": 0.1}).time_step == pytest.approx(0.1 / 400, rel=1e-15)
    assert system(20).time_step is None  # forces and observables need no time step


def test_simulated_store_holds_the_annulus_and_its_radii(tmp_path):
    settings = {"cells": 6, "steps": 20, "save_every": 10, "trajectories": {"train": 3, "test": 1}, "batch_size": 2}
    simulate("allen_cahn", settings, "train", str(tmp_path / "train.zarr"), device="cpu", progress=False)
    ds = open_store(tmp_path / "train.zarr", "trajectories", system="allen_cahn")
    states = read(ds, "state")
    assert states.shape == (3, 3, 36) and states.dtype == np.float64
    np.testing.assert_allclose(ds["time"].values, [0.0, 1.0 / 36, 2.0 / 36], rtol=1e-14)  # 10 steps of 0.1 h^2
    assert (read(ds, "r1") >= 0.30).all() and (read(ds, "r2") <= 0.15).all()
    x0, _ = system(6).initial_conditions(np.random.default_rng([0, SPLIT_STREAMS["train"]]), 3)
    assert np.array_equal(states[:, 0], x0)
    energy = free_energy(system(6), states)[..., 0].numpy()
    assert (np.diff(energy, axis=1) < 0).all()
