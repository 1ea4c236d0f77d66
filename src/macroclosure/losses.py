"""Training losses for the latent dynamics g (METHOD.md "Three losses for g_omega"), L_x,p,c, L_z,p and L_z,u.

g predicts standardised derivatives; callers convert them to physical dz/dt before the
micro-space loss, which compares J^+ dz/dt with the microscopic forces.

L_z,p is L_z on a rate estimated from partial forces: per configuration the least-squares
dz/dt of the rows I, argmin_r |J^+[I, :] r - f_I|^2, which is where that configuration's
L_x,p is smallest. L_x,p weights a rate error e by G_I = J^+[I,:]^T J^+[I,:] / k; L_z,p weights
it as L_z does (the identity in standardised units), so it is not skewed by how unevenly J^+
scales the latent components. With every row the estimate is J f exactly (L_z); where f lies in
J's row space (Allen-Cahn) it is J f from any rows; otherwise the force outside that space
leaves noise of mean zero to O(1/k).

L_z,u is L_z on the unbiased (Horvitz-Thompson) estimate of J f from the k sampled of n units,
(n / k) sum_{u in I} J[:, rows(u)] f[rows(u)]: its mean over subsets is J f for every system, so
E_I |g - estimate|^2 = |g - J f|^2 + its variance, and SGD minimises L_z. Unlike L_x,p and L_z,p it
does not invert J (no J+, no least squares), so the force outside J's row space adds no noise of its
own; the noise is the spread of the units' terms J[:, rows(u)] f[rows(u)], averaged out over
configurations. One forward-mode pass per configuration, as L_z. Since J^+[I, :]^T = (J J^T)^-1 J[:, I],
its target is (n / k) J J^T J^+[I, :]^T f_I: L_x,p's sampled cross term mapped back through J J^T, which
needs no force. So it uses L_x,p's information in L_z's metric instead of (J J^T)^-1, which for analytic
closure variables (no condition penalty) is ill-conditioned (benchmarks/particle_closure, run 9).

L_x,p,c is L_x,p (`micro_loss`) on the targets f_I - [(1 - J^+ J) f_hat]_I, with f_hat a local force
surrogate learnt from the partial forces (surrogate.py): same expectation over subsets up to a
constant in g, less of the label noise that the force outside J's row space gives L_x,p.
"""

import torch
from torch import Tensor

LOSSES = {
    "L_z": "latent loss |g(z) - J f|^2 on full forces (the baseline)",
    "L_x": "micro-space loss |J+ g(z) - f|^2 on full forces",
    "L_xp": "micro-space loss on the forces of a random fraction p of the units (the method)",
    "L_xpc": "L_xp on the sampled forces less a learnt local force surrogate's part outside J's row space (a control variate)",
    "L_zp": "latent loss on the least-squares dz/dt from the forces of a random fraction p of the units",
    "L_zu": "latent loss on the unbiased estimate (n/k) J[:, I] f_I of dz/dt from the forces of a random fraction p of the units",
}


def latent_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """L_z: mean over the batch of ||prediction - target||^2, [B, d] each."""
    return (prediction - target).square().sum(-1).mean()


def micro_loss(pinv_rows: Tensor, dzdt: Tensor, force: Tensor) -> Tensor:
    """Mean over the batch of (1/k) sum_i ([J^+ dz/dt]_i - f_i)^2 over k rows.

    With every row (k = N) this is L_x; with a uniform random row subset per sample it is
    the unbiased partial-force estimate L_x,p. Shapes: pinv_rows [B, k, d] (the chosen rows
    of J^+), dzdt [B, d], force [B, k] (the forces on those rows).
    """
    predicted_force = (pinv_rows @ dzdt.unsqueeze(-1)).squeeze(-1)
    return (predicted_force - force).square().mean()


def micro_moments(pinv_rows: Tensor, force: Tensor) -> dict[str, Tensor]:
    """Per-sample sufficient statistics of `micro_loss`, which is quadratic in dz/dt.

    (1/k) |P g - f|^2 = g^T (P^T P / k) g - 2 g^T (P^T f / k) + |f|^2 / k, so a sample is
    kept as a d x d matrix, a d-vector and a scalar instead of k x d rows: memory O(d^2)
    whatever N and p are.
    """
    k = force.shape[-1]
    return {
        "gram": pinv_rows.mT @ pinv_rows / k,
        "cross": (pinv_rows.mT @ force.unsqueeze(-1)).squeeze(-1) / k,
        "offset": force.square().mean(-1),
    }


def micro_loss_from_moments(gram: Tensor, cross: Tensor, offset: Tensor, dzdt: Tensor) -> Tensor:
    """`micro_loss` evaluated from `micro_moments`, in the moments' precision."""
    dzdt = dzdt.to(gram.dtype)
    quadratic = torch.einsum("bi,bij,bj->b", dzdt, gram, dzdt)
    return (quadratic - 2.0 * (cross * dzdt).sum(-1) + offset).mean()


def estimated_rate(gram: Tensor, cross: Tensor) -> Tensor:
    """L_z,p's target per sample: the least-squares dz/dt from the rows I, given their
    `micro_moments` (gram = P^T P / k, cross = P^T f_I / k, P = J^+[I, :]): [B, d]."""
    return torch.linalg.solve(gram, cross.unsqueeze(-1)).squeeze(-1)
