"""Training losses for the latent dynamics g (METHOD.md "Three losses for g_omega").

g predicts standardised derivatives; callers convert them to physical dz/dt before the
micro-space loss, which compares J^+ dz/dt with the microscopic forces.
"""

from torch import Tensor


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
