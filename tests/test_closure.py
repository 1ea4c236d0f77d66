import pytest
import torch

from macroclosure.closure import (
    Autoencoder,
    autoencoder_loss,
    closure_data,
    closure_net_jacobian,
    latent_gram,
    encoder_jacobian,
    gram_condition_number,
    fit_autoencoder,
    load_closure,
    pseudo_inverse_rows,
    run_closure,
)

N_DOF = 10


def half_means(x):
    """Mean of each half of x: two observables, like mean u and mean v."""
    return torch.stack([x[..., : N_DOF // 2].mean(-1), x[..., N_DOF // 2 :].mean(-1)], dim=-1)


def make_model(latent_dim=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    return Autoencoder(N_DOF, latent_dim, half_means, 2, hidden=(16, 16), **kwargs)


def orthonormal_rows(d, n, generator):
    """A d x n matrix with orthonormal rows, float64."""
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=generator, dtype=torch.float64))
    return q.T


def test_encode_starts_with_the_observables():
    model = make_model()
    x = torch.randn(7, N_DOF)
    z = model.encode(x)
    assert z.shape == (7, 4)
    assert torch.equal(z[:, :2], half_means(x))
    assert model(x).shape == x.shape


def test_standardisation_statistics_are_buffers():
    mean, std = torch.arange(N_DOF) * 1.0, torch.full((N_DOF,), 2.0)
    model = make_model(x_mean=mean, x_std=std)
    state = model.state_dict()
    assert torch.equal(state["x_mean"], mean) and torch.equal(state["x_std"], std)


def test_latent_dim_must_exceed_observables():
    with pytest.raises(ValueError, match=r"latent_dim \(2\).*n_observables \(2\)"):
        Autoencoder(N_DOF, 2, half_means, 2)


def test_encoder_jacobian_matches_autograd():
    model = make_model().double()
    x = torch.randn(3, N_DOF, dtype=torch.float64)
    J = encoder_jacobian(model, x)
    assert J.shape == (3, 4, N_DOF)
    for sample, jacobian in zip(x, J):
        expected = torch.autograd.functional.jacobian(model.encode, sample)
        torch.testing.assert_close(jacobian, expected, rtol=1e-12, atol=1e-12)


def test_condition_penalty_is_differentiable_in_parameters():
    model = make_model()
    x = torch.randn(8, N_DOF)
    losses = autoencoder_loss(model, closure_data(model, x, 4), condition_weight=1.0)
    losses["condition"].backward()
    # biases of the last layer shift z but leave J unchanged, so only weights must get gradients
    grads = [p.grad for name, p in model.closure_net.named_parameters() if name.endswith("weight")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_the_closure_losss_gram_is_j_jt():
    """The closure loss's J J^T from the once-per-state ClosureData equals that of J itself
    (MLP encoder: the inputs' Jacobian is the identity), standardisation included: the loss never
    forms the closure rows, only their two factors (closure.ClosureNetJacobian)."""
    generator = torch.Generator().manual_seed(3)
    std = torch.rand(N_DOF, generator=generator, dtype=torch.float64) + 0.5
    model = make_model(x_mean=torch.randn(N_DOF, generator=generator), x_std=std).double()
    x = torch.randn(5, N_DOF, dtype=torch.float64)
    J = encoder_jacobian(model, x)
    with torch.no_grad():
        gram = latent_gram(closure_data(model, x, 2), closure_net_jacobian(model, model.standardised_inputs(x)))
    torch.testing.assert_close(gram, J @ J.mT, rtol=1e-12, atol=1e-12)


def test_the_l_z_target_from_one_forward_pass_is_j_f():
    """train.latent_rate (a jvp along the force) gives z and J f, as J itself would."""
    from macroclosure.train import latent_rate

    model = make_model().double()
    x, force = torch.randn(2, 5, N_DOF, dtype=torch.float64)
    z, rate = latent_rate(model, x, force)
    torch.testing.assert_close(z, model.encode(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(rate, torch.einsum("bdn,bn->bd", encoder_jacobian(model, x), force), rtol=1e-12, atol=1e-12)


def test_pseudo_inverse_is_a_right_inverse():
    model = make_model().double()
    J = encoder_jacobian(model, torch.randn(5, N_DOF, dtype=torch.float64))
    all_rows = torch.arange(N_DOF).expand(5, N_DOF)
    identity = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    torch.testing.assert_close(J @ pseudo_inverse_rows(J, all_rows), identity, rtol=0, atol=1e-10)


def test_pseudo_inverse_subset_is_rows_of_the_full_one():
    generator = torch.Generator().manual_seed(1)
    J = torch.randn(6, 3, N_DOF, generator=generator, dtype=torch.float64)
    full = pseudo_inverse_rows(J, torch.arange(N_DOF).expand(6, N_DOF))
    rows = torch.stack([torch.randperm(N_DOF, generator=generator)[:4] for _ in range(6)])
    expected = torch.stack([full[b, rows[b]] for b in range(6)])
    torch.testing.assert_close(pseudo_inverse_rows(J, rows), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full, torch.linalg.pinv(J), rtol=1e-10, atol=1e-10)


def test_condition_number_values():
    generator = torch.Generator().manual_seed(2)
    orthonormal = orthonormal_rows(3, N_DOF, generator)
    one = torch.tensor(1.0, dtype=torch.float64)
    torch.testing.assert_close(gram_condition_number(orthonormal @ orthonormal.mT), one)
    diagonal = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(gram_condition_number(diagonal @ diagonal.mT), torch.tensor([9.0]))
    torch.testing.assert_close(gram_condition_number(diagonal @ diagonal.mT, rows=slice(1, None)), torch.tensor([4.0]))


def test_penalty_vanishes_for_perfect_conditioning():
    generator = torch.Generator().manual_seed(3)
    projection = orthonormal_rows(2, N_DOF, generator)
    torch.manual_seed(0)
    model = Autoencoder(N_DOF, 4, lambda x: x @ projection.T, 2, hidden=(8,)).double()
    x = torch.randn(6, N_DOF, generator=generator, dtype=torch.float64)
    losses = autoencoder_loss(model, closure_data(model, x, 6), condition_weight=10.0, penalty_rows=slice(0, 2))
    assert losses["condition"] < 1e-20
    unpenalised = autoencoder_loss(model, closure_data(model, x, 6), condition_weight=10.0)
    assert unpenalised["condition"] > 0
    torch.testing.assert_close(
        unpenalised["total"], unpenalised["reconstruction"] + 10.0 * unpenalised["condition"]
    )


def manifold_data(n_points=256):
    """Points on a smooth 2-D surface embedded in R^10."""
    generator = torch.Generator().manual_seed(4)
    t = torch.rand(n_points, 2, generator=generator) * 2 - 1
    features = torch.stack([t[:, 0], t[:, 1], t[:, 0] * t[:, 1], torch.sin(2 * t[:, 0])], dim=-1)
    return features @ torch.randn(4, N_DOF, generator=generator)


def fit(x, seed):
    model = make_model(latent_dim=3, x_mean=x.mean(0), x_std=x.std(0))
    settings = dict(epochs=30, batch_size=32, lr=1e-2, weight_decay=1e-4, condition_weight=1e-6)
    history = fit_autoencoder(model, closure_data(model, x, 32), seed=seed, progress=False, **settings)
    return model, history


def test_fit_reduces_reconstruction_and_is_reproducible():
    x = manifold_data()
    model, history = fit(x, seed=0)
    assert [record["epoch"] for record in history] == list(range(1, 31))
    assert set(history[0]) == {"epoch", "total", "reconstruction", "condition"}
    assert history[-1]["reconstruction"] < 0.2 * history[0]["reconstruction"]

    again, _ = fit(x, seed=0)
    other, _ = fit(x, seed=1)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[name], state_again[name]) for name in state)
    assert not all(torch.equal(state[name], state_other[name]) for name in state)


@pytest.mark.parametrize("standardise", [True, False])
def test_closure_standardises_x_only_when_asked(train_store, tmp_path, standardise):
    settings = {"latent_dim": 3, "hidden": [4], "epochs": 1, "standardise": standardise}
    run_closure(str(train_store), str(tmp_path / "closure"), settings, device="cpu", progress=False)
    model, _, _ = load_closure(tmp_path / "closure")
    assert torch.equal(model.x_mean == 0, torch.full_like(model.x_mean, not standardise, dtype=torch.bool))
    assert torch.equal(model.x_std == 1, torch.full_like(model.x_std, not standardise, dtype=torch.bool))
