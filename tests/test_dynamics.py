import pytest
import torch
from torch import nn

from macroclosure.dynamics import GFINN, MLP, OnsagerNet, ResidualOnsagerNet, build_model, quadratic_ramp, rk4_rollout

DIM = 4


class Linear(nn.Module):
    """dz/dt = A z with a fixed matrix, whose exact flow is exp(A t)."""

    def __init__(self, matrix):
        super().__init__()
        self.register_buffer("matrix", matrix)

    def forward(self, z):
        return z @ self.matrix.T


def randomised(model, seed, scale=0.5):
    """The model with all parameters redrawn from N(0, scale^2), beyond the default init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
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
        ResidualOnsagerNet(DIM, hidden=16, layers=1, forcing=False),
        build_model("onsager", DIM, {"hidden": 8, "trunk_layers": 2}),
    ],
)
def test_models_map_states_to_derivatives(model):
    assert model(torch.randn(5, DIM)).shape == (5, DIM)


ONSAGER_FORMS = {"separate": OnsagerNet, "residual": ResidualOnsagerNet}


@pytest.mark.parametrize("form", ONSAGER_FORMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_onsager_structure(form, seed):
    torch.manual_seed(seed)
    model = randomised(ONSAGER_FORMS[form](DIM, hidden=16, alpha=0.1), seed).double()
    z = 3 * torch.randn(64, DIM, dtype=torch.float64)
    dissipation, antisymmetric = model.dissipation(z), model.antisymmetric(z)
    torch.testing.assert_close(dissipation, dissipation.mT)
    assert (torch.linalg.eigvalsh(dissipation) >= 0.1 * (1 - 1e-9)).all()
    torch.testing.assert_close(antisymmetric, -antisymmetric.mT)
    assert (model.potential(z) >= 0).all()


def test_build_model_selects_the_onsager_form_by_trunk_layers():
    assert type(build_model("onsager", DIM, {"hidden": 8})) is OnsagerNet
    residual = build_model("onsager", DIM, {"hidden": 8, "trunk_layers": 3})
    assert type(residual) is ResidualOnsagerNet and len(residual.trunk) == 3


def test_quadratic_ramp_is_zero_then_quadratic_then_linear():
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(quadratic_ramp(x), torch.tensor([0.0, 0.0, 0.0625, 0.25, 1.75], dtype=torch.float64))
    # its slope is continuous at the joins 0 and 1/2 (so grad V of the residual form is continuous)
    joins = torch.tensor([0.0, 0.5], dtype=torch.float64)
    step = 1e-7
    left = (quadratic_ramp(joins) - quadratic_ramp(joins - step)) / step
    right = (quadratic_ramp(joins + step) - quadratic_ramp(joins)) / step
    torch.testing.assert_close(left, right, atol=1e-6, rtol=0)


@pytest.mark.parametrize("forcing", [True, False])
def test_residual_onsager_forward_is_its_parts_composed(forcing):
    """The one-pass forward equals -(M + W) grad V + f(h) assembled from the separately computed parts."""
    torch.manual_seed(0)
    model = randomised(ResidualOnsagerNet(DIM, hidden=16, layers=3, forcing=forcing), 3).double()
    z = torch.randn(7, DIM, dtype=torch.float64, requires_grad=True)
    (grad_v,) = torch.autograd.grad(model.potential(z).sum(), z)
    operator = model.dissipation(z) + model.antisymmetric(z)
    expected = -(operator @ grad_v.unsqueeze(-1)).squeeze(-1)
    if forcing:
        expected = expected + model.forcing(model.features(z))
    torch.testing.assert_close(model(z), expected)


def test_onsager_potential_gradient_matches_autograd():
    torch.manual_seed(0)
    model = OnsagerNet(DIM, hidden=16).double()
    z = torch.randn(6, DIM, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(model.potential(z).sum(), z)
    torch.testing.assert_close(model.potential_gradient(z), expected)


@pytest.mark.parametrize(
    "build, learnt_through_gradients",
    [
        (lambda: OnsagerNet(DIM, hidden=16), ["potential_net.0"]),
        (lambda: ResidualOnsagerNet(DIM, hidden=16), ["potential_head", "potential_linear"]),
        (lambda: GFINN(DIM, hidden=16), ["energy_net.0", "entropy_net.0"]),
    ],
    ids=["onsager", "residual_onsager", "gfinn"],
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
        assert model.get_submodule(name).weight.grad.abs().sum() > 0


@pytest.mark.parametrize("form", ONSAGER_FORMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_potential_decays_without_forcing(form, seed):
    torch.manual_seed(seed)
    # the residual trunk's quadratic ramp compounds large weights layer by layer: at scale 0.5 its flow is
    # too stiff for RK4 at this step, at 0.3 it still moves by |dz/dt| up to ~10^3
    scale = {"separate": 0.5, "residual": 0.3}[form]
    model = randomised(ONSAGER_FORMS[form](DIM, hidden=16, forcing=False), seed, scale).double()
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
