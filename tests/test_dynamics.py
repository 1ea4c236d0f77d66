import pytest
import torch
from torch import nn

from macroclosure.dynamics import GFINN, MLP, OnsagerNet, build_model, rk4_rollout

DIM = 4


class Linear(nn.Module):
    """dz/dt = A z with a fixed matrix, whose exact flow is exp(A t)."""

    def __init__(self, matrix):
        super().__init__()
        self.register_buffer("matrix", matrix)

    def forward(self, z):
        return z @ self.matrix.T


def randomised(model, seed):
    """The model with all parameters redrawn from N(0, 0.5^2), beyond the default init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.mark.parametrize(
    "model",
    [
        MLP(DIM),
        MLP(DIM, hidden=(16,), activation="tanh"),
        OnsagerNet(DIM, hidden=16),
        OnsagerNet(DIM, hidden=16, n_potential=7, forcing=False),
        build_model("mlp", DIM, {"hidden": [8, 8]}),
        build_model("onsager", DIM, {"hidden": 8, "alpha": 0.5}),
    ],
)
def test_models_map_states_to_derivatives(model):
    assert model(torch.randn(5, DIM)).shape == (5, DIM)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_onsager_structure(seed):
    torch.manual_seed(seed)
    model = randomised(OnsagerNet(DIM, hidden=16, alpha=0.1), seed).double()
    z = 3 * torch.randn(64, DIM, dtype=torch.float64)
    dissipation, antisymmetric = model.dissipation(z), model.antisymmetric(z)
    torch.testing.assert_close(dissipation, dissipation.mT)
    assert (torch.linalg.eigvalsh(dissipation) >= 0.1 * (1 - 1e-9)).all()
    torch.testing.assert_close(antisymmetric, -antisymmetric.mT)
    assert (model.potential(z) >= 0).all()


def test_onsager_potential_gradient_matches_autograd():
    torch.manual_seed(0)
    model = OnsagerNet(DIM, hidden=16).double()
    z = torch.randn(6, DIM, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(model.potential(z).sum(), z)
    torch.testing.assert_close(model.potential_gradient(z), expected)


@pytest.mark.parametrize(
    "build, learnt_through_gradients",
    [
        (lambda: OnsagerNet(DIM, hidden=16), ["potential_net"]),
        (lambda: GFINN(DIM, hidden=16), ["energy_net", "entropy_net"]),
    ],
    ids=["onsager", "gfinn"],
)
def test_gradient_models_train_through_the_gradients_and_run_without_grad(build, learnt_through_gradients):
    torch.manual_seed(0)
    model = build()
    z = torch.randn(6, DIM)
    with torch.no_grad():
        rollout_output = model(z)
    assert not rollout_output.requires_grad
    training_output = model(z)
    torch.testing.assert_close(rollout_output, training_output)
    training_output.square().sum().backward()
    # these networks enter only through their gradients: they learn only if the gradients have a graph
    for name in learnt_through_gradients:
        assert getattr(model, name)[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_potential_decays_without_forcing(seed):
    torch.manual_seed(seed)
    model = randomised(OnsagerNet(DIM, hidden=16, forcing=False), seed).double()
    trajectory = rk4_rollout(model, torch.randn(8, DIM, dtype=torch.float64), n_steps=100, dt=1e-3)
    potential = model.potential(trajectory)
    assert (potential.diff(dim=1) <= 1e-12).all()
    assert (potential[:, -1] < potential[:, 0]).all()


def test_rk4_is_fourth_order():
    matrix = torch.tensor([[-0.5, 2.0], [-2.0, -0.3]], dtype=torch.float64)
    model = Linear(matrix)
    z0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=torch.float64)
    n_steps, dt = 10, 0.1
    exact = z0 @ torch.linalg.matrix_exp(matrix * n_steps * dt).T

    def final_error(substeps):
        trajectory = rk4_rollout(model, z0, n_steps, dt, substeps)
        assert trajectory.shape == (2, n_steps + 1, 2)
        assert torch.equal(trajectory[:, 0], z0)
        return (trajectory[:, -1] - exact).abs().max()

    ratio = final_error(2) / final_error(4)
    assert 14 < ratio < 18


def test_build_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="mlp.*onsager"):
        build_model("sindy", DIM, {})
