"""Latent dynamics models g(z) -> dz/dt and the RK4 rollout used to evaluate them.

Every model maps a batch of latent states [B, d] to their time derivatives [B, d].
"""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from macroclosure.integrators import rk4_step
from macroclosure.models import network

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def feedforward(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Fully connected network through the given layer sizes, activation between layers only."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers[:-1])


def batch_gradient(scalar: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """grad of a per-sample scalar function (a batch [B, d] -> [B]) at every sample, [B, d].

    Samples do not interact, so the gradient of the batch sum gives each sample's gradient.
    torch.func.grad works inside torch.no_grad() rollouts and, when grad mode is on, stays
    differentiable with respect to the parameters for training.
    """
    return torch.func.grad(lambda batch: scalar(batch).sum())(z)


class MLP(nn.Module):
    """Unstructured baseline: dz/dt is a plain feed-forward network of z."""

    def __init__(self, dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        self.net = feedforward([dim, *hidden, dim], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _require_positive_alpha(alpha: float) -> None:
    if alpha <= 0:
        raise ValueError(f"alpha must be positive for M to be positive definite, got {alpha}")


class OnsagerNet(nn.Module):
    """dz/dt = -(M(z) + W(z)) grad V(z) + f(z): dissipative structure learnt from data.

    M = L L^T + alpha I is positive definite and W = A - A^T antisymmetric, so without the
    forcing f the potential V(z) = beta |z|^2 + |U(z)|^2 / 2 can only decrease along
    trajectories; beta > 0 keeps V coercive. Each part is a two-hidden-layer tanh network
    (`ResidualOnsagerNet` is the form whose parts share one trunk).
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
        _require_positive_alpha(alpha)
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
        """grad V(z) per sample (see `batch_gradient`: usable in no-grad rollouts and training)."""
        return batch_gradient(self.potential, z)

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


def quadratic_ramp(x: Tensor) -> Tensor:
    """relu(x)^2 - relu(x - 1/2)^2: zero below 0, x^2 up to 1/2, then the line x - 1/4.

    Continuously differentiable, so the gradient of a potential built on it is continuous
    (the activation of the published Lennard-Jones OnsagerNet).
    """
    return torch.relu(x).square() - torch.relu(x - 0.5).square()


class ResidualOnsagerNet(nn.Module):
    """OnsagerNet whose parts share one residual trunk h(z) (the published Lennard-Jones form).

    h is `layers` layers of `hidden` units with the quadratic ramp, each after the first
    adding its input back. From h and z: V = beta |z|^2 + |U(h) + G z|^2 / 2; one d x d
    matrix A(h) gives M = L L^T + alpha I from its lower triangle L and W = R - R^T from
    its strict upper triangle R; the forcing is a linear read-out of h, so unlike the
    separate-network form it is nonlinear in z. The trunk is evaluated once per call: the
    gradient of V returns h beside it. Weights start small (gain 0.1) and A's bias at an
    orthogonal matrix, so M starts near a well-conditioned constant.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        layers: int = 3,
        alpha: float = 0.1,
        beta: float = 0.1,
        forcing: bool = True,
        gain: float = 0.1,
    ):
        super().__init__()
        _require_positive_alpha(alpha)
        if layers < 1:
            raise ValueError(f"a residual trunk needs at least one layer, got {layers}")
        self.dim, self.alpha, self.beta = dim, alpha, beta
        self.trunk = nn.ModuleList(nn.Linear(dim if i == 0 else hidden, hidden) for i in range(layers))
        self.potential_head = nn.Linear(hidden, dim)
        self.potential_linear = nn.Linear(dim, dim)
        self.matrix_head = nn.Linear(hidden, dim * dim)
        self.forcing = nn.Linear(hidden, dim) if forcing else None
        self._initialise(gain)

    def _initialise(self, gain: float) -> None:
        for layer in self.trunk:
            nn.init.xavier_uniform_(layer.weight, gain=gain)
            nn.init.uniform_(layer.bias, 0.0, 0.5 * gain)
        for layer in (self.potential_head, self.potential_linear, self.forcing):
            if layer is not None:
                nn.init.orthogonal_(layer.weight, gain=gain)
                nn.init.uniform_(layer.bias, 0.0, gain)
        nn.init.xavier_uniform_(self.matrix_head.weight, gain=gain)
        with torch.no_grad():
            self.matrix_head.bias.copy_(nn.init.orthogonal_(torch.empty(self.dim, self.dim)).flatten())

    def features(self, z: Tensor) -> Tensor:
        """The trunk h(z), [..., hidden]."""
        h = quadratic_ramp(self.trunk[0](z))
        for layer in self.trunk[1:]:
            h = h + quadratic_ramp(layer(h))
        return h

    def _potential_of(self, z: Tensor, h: Tensor) -> Tensor:
        return self.beta * z.square().sum(-1) + 0.5 * (self.potential_head(h) + self.potential_linear(z)).square().sum(-1)

    def potential(self, z: Tensor) -> Tensor:
        """V(z) = beta |z|^2 + |U(h) + G z|^2 / 2 per sample, bounded below by 0."""
        return self._potential_of(z, self.features(z))

    def _gradient_and_features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        def summed(batch: Tensor) -> tuple[Tensor, Tensor]:
            h = self.features(batch)
            return self._potential_of(batch, h).sum(), h

        return torch.func.grad(summed, has_aux=True)(z)

    def _matrices(self, h: Tensor) -> tuple[Tensor, Tensor]:
        matrix = self.matrix_head(h).unflatten(-1, (self.dim, self.dim))
        lower, upper = matrix.tril(), matrix.triu(1)
        identity = torch.eye(self.dim, dtype=h.dtype, device=h.device)
        return lower @ lower.mT + self.alpha * identity, upper - upper.mT

    def dissipation(self, z: Tensor) -> Tensor:
        """Positive definite M(z) = L L^T + alpha I, [..., d, d]."""
        return self._matrices(self.features(z))[0]

    def antisymmetric(self, z: Tensor) -> Tensor:
        """Antisymmetric W(z) = R - R^T, [..., d, d]."""
        return self._matrices(self.features(z))[1]

    def forward(self, z: Tensor) -> Tensor:
        gradient, h = self._gradient_and_features(z)
        dissipation, antisymmetric = self._matrices(h)
        velocity = -((dissipation + antisymmetric) @ gradient.unsqueeze(-1)).squeeze(-1)
        return velocity if self.forcing is None else velocity + self.forcing(h)


def onsager_net(dim: int, trunk_layers: int = 0, **settings) -> nn.Module:
    """The OnsagerNet of a config block: separate networks (trunk_layers 0) or a residual trunk."""
    if trunk_layers == 0:
        return OnsagerNet(dim, **settings)
    return ResidualOnsagerNet(dim, layers=trunk_layers, **settings)


def _guard(normal: Tensor) -> float:
    """The epsilon added to |n|^2 before dividing by it in a projector away from n.

    It only keeps n = 0 finite (the projector is then I): eps / |n|^2, the relative amount by
    which P n misses 0, stays below 1e-8 for |n| > 1e4 * machine epsilon of the dtype
    (2e-12 in float64, 1e-3 in float32, where the rounding of P n is ~1e-7 anyway).
    """
    return torch.finfo(normal.dtype).eps ** 2


def _project_away(vector: Tensor, normal: Tensor) -> Tensor:
    """(I - n n^T / |n|^2) v per sample for v, n [B, d]: v without its component along n."""
    scale = (normal * vector).sum(-1, keepdim=True) / (normal.square().sum(-1, keepdim=True) + _guard(normal))
    return vector - scale * normal


def _projector(normal: Tensor) -> Tensor:
    """The matrices I - n n^T / |n|^2 per sample, [B, d, d], symmetric and idempotent."""
    outer = normal.unsqueeze(-1) * normal.unsqueeze(-2)
    identity = torch.eye(normal.shape[-1], dtype=normal.dtype, device=normal.device)
    return identity - outer / (normal.square().sum(-1) + _guard(normal))[..., None, None]


class GFINN(nn.Module):
    """GENERIC-formalism informed network: dz/dt = L(z) grad E(z) + M(z) grad S(z).

    E (energy) and S (entropy) are scalar tanh networks. With the projectors
    P_S = I - grad S grad S^T / |grad S|^2 and P_E likewise,

        L = P_S A P_S,  A = A~ - A~^T         (antisymmetric, L grad S = 0)
        M = P_E B B^T P_E,  B in R^(d x rank)  (symmetric positive semi-definite, M grad E = 0)

    with A~ and B tanh networks of z. The degeneracy conditions are built in, so along exact
    trajectories dE/dt = grad E . L grad E = 0 and dS/dt = grad S^T M grad S >= 0 for any
    parameters. The structure survives the diagonal affine standardisation of z used in
    training (L -> D^-1 L D^-1, M -> D^-1 M D^-1).
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2, rank: int | None = None):
        super().__init__()
        rank = dim if rank is None else rank
        if layers < 0:
            raise ValueError(f"layers must be non-negative, got {layers}")
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.dim = dim
        self.rank = rank
        widths = [hidden] * layers
        self.energy_net = feedforward([dim, *widths, 1], "tanh")
        self.entropy_net = feedforward([dim, *widths, 1], "tanh")
        self.poisson_net = feedforward([dim, *widths, dim * dim], "tanh")
        self.friction_net = feedforward([dim, *widths, dim * rank], "tanh")

    def energy(self, z: Tensor) -> Tensor:
        """E(z) per sample, [B]."""
        return self.energy_net(z).squeeze(-1)

    def entropy(self, z: Tensor) -> Tensor:
        """S(z) per sample, [B]."""
        return self.entropy_net(z).squeeze(-1)

    def energy_gradient(self, z: Tensor) -> Tensor:
        """grad E(z) per sample, [B, d] (see `batch_gradient`)."""
        return batch_gradient(self.energy, z)

    def entropy_gradient(self, z: Tensor) -> Tensor:
        """grad S(z) per sample, [B, d] (see `batch_gradient`)."""
        return batch_gradient(self.entropy, z)

    def _skew(self, z: Tensor) -> Tensor:
        """A(z) = A~ - A~^T before projection, [B, d, d]."""
        matrix = self.poisson_net(z).unflatten(-1, (self.dim, self.dim))
        return matrix - matrix.mT

    def _factor(self, z: Tensor) -> Tensor:
        """B(z) before projection, [B, d, rank]."""
        return self.friction_net(z).unflatten(-1, (self.dim, self.rank))

    def poisson(self, z: Tensor) -> Tensor:
        """L(z) = P_S A P_S, antisymmetric with L grad S = 0, [B, d, d]."""
        projector = _projector(self.entropy_gradient(z))
        return projector @ self._skew(z) @ projector

    def friction(self, z: Tensor) -> Tensor:
        """M(z) = P_E B B^T P_E, symmetric positive semi-definite with M grad E = 0, [B, d, d]."""
        projected = _projector(self.energy_gradient(z)) @ self._factor(z)
        return projected @ projected.mT

    def forward(self, z: Tensor) -> Tensor:
        # the same L grad E + M grad S as poisson(z) and friction(z), applied as projections
        grad_energy, grad_entropy = self.energy_gradient(z), self.entropy_gradient(z)
        inner = _project_away(grad_energy, grad_entropy).unsqueeze(-1)
        reversible = _project_away((self._skew(z) @ inner).squeeze(-1), grad_entropy)
        factor = self._factor(z)
        weights = factor.mT @ _project_away(grad_entropy, grad_energy).unsqueeze(-1)
        irreversible = _project_away((factor @ weights).squeeze(-1), grad_energy)
        return reversible + irreversible


def build_model(name: str, dim: int, settings: dict) -> nn.Module:
    """Instantiate the latent model registered under `name` (macroclosure.models) with its keyword settings."""
    return network(name)(dim, **settings)


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
