"""The classical fourth-order Runge-Kutta step, shared by JAX simulations and torch rollouts.

It uses only arithmetic on the arrays, so the same function serves jax.Array and
torch.Tensor (and traces under jax.jit).
"""


def rk4_step(rate, x, dt):
    """One RK4 step of dx/dt = rate(x)."""
    k1 = rate(x)
    k2 = rate(x + 0.5 * dt * k1)
    k3 = rate(x + 0.5 * dt * k2)
    k4 = rate(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
