"""A local force surrogate learnt from the partial forces: the control variate of L_x,p,c.

Under the sparsity assumption (METHOD.md) a force component is a function of the few values
its stencil reads, and on a uniform grid it is the same function at every cell for each field
(`System.stencil`). So the k rows computed per configuration, pooled over configurations, are
samples of a handful of functions of ~5 variables, and a polynomial of those values fitted to
them by least squares predicts the force on every row without computing it.

L_x,p's noise is the force outside J's row space, f_perp = (1 - J^+ J) f, seen on k rows
(losses.py). L_x,p,c subtracts the surrogate's estimate of it from the sampled targets,
f_I - [(1 - J^+ J) f_hat]_I, which leaves L_x,p's expectation over subsets unchanged up to a
constant in g (f_hat_perp is orthogonal to every J^+ g), whatever f_hat is: a poor surrogate
only removes less noise. The surrogate is cross-fitted: a configuration's f_hat comes from the
fit on the other half of the configurations, so it is independent of that configuration's own
forces, and the error on the other half is the held-out error reported.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor

FOLDS = 2
FIT_ROWS = 200_000  # sampled rows per fold's fit: the least squares stays ~F x 200 000 whatever N and p are


class Surrogate(NamedTuple):
    """Polynomial coefficients per fold and force law, [folds, laws, features], of the stencil
    values' monomials up to `degree`."""

    coefficients: Tensor
    degree: int


def monomials(values: Tensor, degree: int) -> Tensor:
    """Every monomial of the last axis' s values up to total degree `degree`, constant first:
    [..., s] -> [..., C(s + degree, degree)]."""
    columns = [torch.ones_like(values[..., 0])]
    for order in range(1, degree + 1):
        columns += [values[..., list(powers)].prod(-1) for powers in itertools.combinations_with_replacement(range(values.shape[-1]), order)]
    return torch.stack(columns, dim=-1)


def fit_laws(values: Tensor, laws: Tensor, forces: Tensor, degree: int, law_count: int) -> Tensor:
    """Least-squares coefficients of each force law, [laws, features], from sampled rows:
    stencil values [R, s], law [R], force [R]. A law without rows keeps zero coefficients (the
    surrogate then predicts nothing for it, which costs only variance)."""
    features = monomials(values, degree)
    coefficients = torch.zeros(law_count, features.shape[-1], dtype=values.dtype)
    for law in range(law_count):
        chosen = laws == law
        if bool(chosen.any()):
            solution = torch.linalg.lstsq(features[chosen], forces[chosen].unsqueeze(-1), driver="gelsd").solution
            coefficients[law] = solution.squeeze(-1)
    return coefficients


def predict(coefficients: Tensor, degree: int, values: Tensor, laws: Tensor) -> Tensor:
    """The surrogate's forces, [...], from stencil values [..., s] and laws [...]; coefficients
    [laws, features] of one fold."""
    return (monomials(values, degree) * coefficients[laws]).sum(-1)


def fold_of(count: int, generator: torch.Generator) -> Tensor:
    """Each configuration's fold, [count]: a random half each."""
    return torch.randperm(count, generator=generator) % FOLDS


def fit(values: Tensor, laws: Tensor, forces: Tensor, folds: Tensor, degree: int, law_count: int,
        generator: torch.Generator) -> tuple[Surrogate, float]:
    """The cross-fitted surrogate and its held-out relative rms error.

    values [S, k, s], laws [S, k] and forces [S, k]: the sampled rows of S configurations, with
    their fold [S]. Fold j's coefficients are fitted on the other folds' rows (at most FIT_ROWS,
    drawn with `generator`) and serve fold j's configurations; the error is |f_hat - f| / |f| over
    every sampled row, each predicted by the fit that did not see it.
    """
    coefficients, residual = [], torch.zeros((), dtype=forces.dtype)
    for fold in range(FOLDS):
        train = (folds != fold).nonzero().squeeze(-1)
        rows = (values[train].flatten(0, 1), laws[train].flatten(), forces[train].flatten())
        if len(rows[0]) > FIT_ROWS:
            kept = torch.randperm(len(rows[0]), generator=generator)[:FIT_ROWS]
            rows = tuple(part[kept] for part in rows)
        coefficients.append(fit_laws(*rows, degree, law_count))
        held = folds == fold
        residual += (predict(coefficients[-1], degree, values[held], laws[held]) - forces[held]).square().sum()
    return Surrogate(torch.stack(coefficients), degree), float(residual.sqrt() / forces.norm())


def forces_everywhere(surrogate: Surrogate, x: Tensor, folds: Tensor, stencil_rows: Tensor, laws: Tensor) -> Tensor:
    """f_hat on every row of each configuration from its fold's coefficients: x [B, N], folds [B],
    stencil_rows [N, s] and laws [N] of every row -> [B, N]. One configuration at a time, so memory
    is N x features whatever the batch."""
    return torch.stack([predict(surrogate.coefficients[fold], surrogate.degree, state[stencil_rows], laws)
                        for state, fold in zip(x, folds.tolist())])
