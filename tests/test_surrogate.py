"""The local force surrogate of L_x,p,c (surrogate.py) and its control variate (train.unresolved_force)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from macroclosure.closure import pseudo_inverse_rows
from macroclosure.losses import estimated_rate, micro_moments
from macroclosure.surrogate import fit, fold_of, forces_everywhere, monomials
from macroclosure.systems import build_system


def test_monomials_are_every_product_up_to_the_degree_constant_first():
    values = torch.tensor([[2.0, 3.0]])
    # 1, a, b, a^2, ab, b^2, a^3, a^2 b, a b^2, b^3
    assert monomials(values, 3).tolist() == [[1, 2, 3, 4, 6, 9, 8, 12, 18, 27]]
    assert monomials(torch.zeros(7, 5), 3).shape == (7, math.comb(5 + 3, 3))


def sampled_rows(system, states: np.ndarray, k: int, seed: int):
    """Stencil values [S, k, s], laws [S, k], rows [S, k] and true forces [S, k] of k random rows per state."""
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(system.dims.dof, k, replace=False) for _ in states])
    forces = np.stack([np.asarray(system.partial_rhs(jnp.asarray(x), jnp.asarray(r))) for x, r in zip(states, rows)])
    stencil_rows, laws = system.stencil(np.arange(system.dims.dof))
    values = np.take_along_axis(states[:, None, :], stencil_rows[rows].reshape(len(states), 1, -1), 2)
    as_tensor = lambda a: torch.as_tensor(np.asarray(a))  # noqa: E731
    return (as_tensor(values.reshape(*rows.shape, -1)), as_tensor(laws[rows]), as_tensor(rows),
            as_tensor(forces).double(), as_tensor(stencil_rows), as_tensor(laws))


@pytest.mark.parametrize("name, settings", [
    ("predator_prey", {"cells": 12, "a": 3.0, "b": 0.4, "diffusion_u": 0.0, "dt": 0.01}),
    ("allen_cahn", {"cells": 6, "dt_over_h2": 0.1}),
])
def test_partial_forces_identify_a_polynomial_force_law_everywhere(float64, name, settings):
    """Both grids' force laws are cubic in their stencil values, so the degree-3 surrogate fitted on
    a fifth of the rows of 200 states (more rows than the 56 coefficients per law and fold) predicts
    the force on every row of other states, to rounding."""
    system = build_system(name, settings)
    rng = np.random.default_rng(0)
    states = rng.uniform(-1.0, 1.0, (200, system.dims.dof))
    values, laws, _, forces, stencil_rows, every_law = sampled_rows(system, states, system.dims.dof // 5, seed=1)
    generator = torch.Generator().manual_seed(0)
    folds = fold_of(len(states), generator)
    surrogate, error = fit(values, laws, forces, folds, 3, int(every_law.max()) + 1, generator)
    assert error < 1e-9
    fresh = torch.as_tensor(rng.uniform(-1.0, 1.0, (3, system.dims.dof)))
    predicted = forces_everywhere(surrogate, fresh, torch.tensor([0, 1, 0]), stencil_rows, every_law)
    exact = torch.stack([torch.as_tensor(np.array(system.rhs(jnp.asarray(x.numpy())))) for x in fresh])
    torch.testing.assert_close(predicted, exact, rtol=0, atol=1e-8 * float(exact.abs().max()))


def test_each_fold_is_predicted_by_the_fit_that_never_saw_its_forces(float64):
    """Cross-fitting: changing the forces of fold 0's configurations leaves fold 0's coefficients
    (fitted on fold 1) unchanged, and changes fold 1's."""
    system = build_system("predator_prey", {"cells": 8, "a": 3.0, "b": 0.4, "diffusion_u": 0.0, "dt": 0.01})
    states = np.random.default_rng(2).uniform(0.0, 1.0, (20, system.dims.dof))
    values, laws, _, forces, _, _ = sampled_rows(system, states, 4, seed=3)
    folds = fold_of(len(states), torch.Generator().manual_seed(0))
    noisy = forces + (folds == 0).double()[:, None] * torch.randn(forces.shape, generator=torch.Generator().manual_seed(1))
    (clean, _), (changed, _) = (fit(values, laws, f, folds, 2, 2, torch.Generator().manual_seed(0)) for f in (forces, noisy))
    assert torch.equal(clean.coefficients[0], changed.coefficients[0])
    assert not torch.allclose(clean.coefficients[1], changed.coefficients[1])


def test_the_control_variate_leaves_the_loss_unchanged_up_to_a_constant_and_removes_the_noise_when_exact(float64):
    """With every row the corrected targets give L_x's moments exactly (gram and cross: the estimate of
    the force outside J's row space is orthogonal to every J^+ g), whatever the surrogate predicts; and
    with an exact surrogate a subset of 5 of 40 rows gives the least-squares rate J f, noise-free."""
    from macroclosure.train import ForceSurrogate, unresolved_force

    generator = torch.Generator().manual_seed(0)
    n, d = 40, 3
    J = torch.randn(2, d, n, generator=generator, dtype=torch.float64)
    f = torch.randn(2, n, generator=generator, dtype=torch.float64)
    every = torch.arange(n).expand(2, -1)

    def control_predicting(f_hat):
        """A one-law degree-1 surrogate whose stencil is the row itself: f_hat = slope x, x = f_hat."""
        from macroclosure.surrogate import Surrogate

        coefficients = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64).expand(2, 1, 2)
        return ForceSurrogate(Surrogate(coefficients, 1), torch.tensor([0, 1]), torch.arange(n)[:, None],
                              torch.zeros(n, dtype=torch.long), 0.0), f_hat

    control, x = control_predicting(torch.randn(2, n, generator=generator, dtype=torch.float64))
    pinv = pseudo_inverse_rows(J, every)
    corrected = micro_moments(pinv, f - unresolved_force(control, torch.tensor([0, 1]), x, J, pinv, every))
    plain = micro_moments(pinv, f)
    torch.testing.assert_close(corrected["cross"], plain["cross"], rtol=1e-10, atol=1e-12)

    control, x = control_predicting(f)
    subset = torch.stack([torch.randperm(n, generator=generator)[:5] for _ in range(2)])
    pinv = pseudo_inverse_rows(J, subset)
    targets = f.gather(1, subset) - unresolved_force(control, torch.tensor([0, 1]), x, J, pinv, subset)
    moments = micro_moments(pinv, targets)
    exact_rate = (J @ f.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(estimated_rate(moments["gram"], moments["cross"]), exact_rate, rtol=1e-9, atol=1e-10)
    noisy = micro_moments(pinv, f.gather(1, subset))
    assert (estimated_rate(noisy["gram"], noisy["cross"]) - exact_rate).abs().max() > 1e-3  # L_x,p's own target is not
