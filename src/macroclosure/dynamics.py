"""Latent dynamics models g(z) -> dz/dt and the RK4 rollout used to evaluate them.

Every model maps a batch of latent states [B, d] to their time derivatives [B, d].
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from macroclosure.integrators import rk4_step

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def feedforward(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Fully connected network through the given layer sizes, activation between layers only."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1])


class MLP(nn.Module):
    """Unstructured baseline: dz/dt is a plain feed-forward network of z."""

    def __init__(self, dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        self.net = feedforward([dim, *hidden, dim], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class OnsagerNet(nn.Module):
    """dz/dt = -(M(z) + W(z)) grad V(z) + f(z): dissipative structure learnt from data.

    M = L L^T + alpha I is positive definite and W = A - A^T antisymmetric, so without the
    forcing f the potential V(z) = beta |z|^2 + |U(z)|^2 / 2 can only decrease along
    trajectories; beta > 0 keeps V coercive. Each part is a two-hidden-layer tanh network.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        n_potential: int | None = None,
        alpha: float = 0.1,
        beta: float = 0.1,
        forcing: bool = True,
    ):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive for M to be positive definite, got {alpha}")
        self.dim = dim
        self.alpha = alpha
        self.beta = beta
        self.dissipation_net = feedforward([dim, hidden, hidden, dim * dim], "tanh")
        self.antisymmetric_net = feedforward([dim, hidden, hidden, dim * dim], "tanh")
        n_potential = dim if n_potential is None else n_potential
        self.potential_net = feedforward([dim, hidden, hidden, n_potential], "tanh")
        self.forcing = nn.Linear(dim, dim) if forcing else None

    def _square(self, flat: Tensor) -> Tensor:
        """Reshape a network output [..., d*d] into matrices [..., d, d]."""
        return flat.unflatten(-1, (self.dim, self.dim))

    def potential(self, z: Tensor) -> Tensor:
        """V(z) = beta |z|^2 + |U(z)|^2 / 2 per sample, bounded below by 0."""
        return self.beta * z.square().sum(-1) + 0.5 * self.potential_net(z).square().sum(-1)

    def potential_gradient(self, z: Tensor) -> Tensor:
        """grad V(z) per sample.

        torch.func.grad works inside torch.no_grad() rollouts and, when grad mode is on,
        stays differentiable with respect to the parameters for training.
        """
        return torch.func.grad(lambda batch: self.potential(batch).sum())(z)

    def dissipation(self, z: Tensor) -> Tensor:
        """Positive definite M(z) = L L^T + alpha I, [..., d, d]."""
        lower = self._square(self.dissipation_net(z))
        identity = torch.eye(self.dim, dtype=z.dtype, device=z.device)
        return lower @ lower.mT + self.alpha * identity

    def antisymmetric(self, z: Tensor) -> Tensor:
        """Antisymmetric W(z) = A - A^T, [..., d, d]."""
        matrix = self._square(self.antisymmetric_net(z))
        return matrix - matrix.mT

    def forward(self, z: Tensor) -> Tensor:
        operator = self.dissipation(z) + self.antisymmetric(z)
        velocity = -(operator @ self.potential_gradient(z).unsqueeze(-1)).squeeze(-1)
        return velocity if self.forcing is None else velocity + self.forcing(z)


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "onsager": OnsagerNet}


def build_model(name: str, dim: int, settings: dict) -> nn.Module:
    """Instantiate the latent model registered under `name` with its keyword settings."""
    if name not in MODELS:
        raise ValueError(f"unknown latent model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](dim, **settings)


def rk4_rollout(model: nn.Module, z0: Tensor, n_steps: int, dt: float, substeps: int = 1) -> Tensor:
    """Integrate dz/dt = model(z) from z0 [B, d]; returns [B, n_steps + 1, d] at multiples of dt.

    Each saved step is split into `substeps` RK4 steps. Runs without building a graph.
    """
    step = dt / substeps
    states = [z0]
    with torch.no_grad():
        for _ in range(n_steps):
            z = states[-1]
            for _ in range(substeps):
                z = rk4_step(model, z, step)
            states.append(z)
    return torch.stack(states, dim=1)
