import torch

from macroclosure.closure import pseudo_inverse_rows
from macroclosure.losses import estimated_rate, latent_loss, micro_loss, micro_loss_from_moments, micro_moments

D, N = 3, 20


def test_latent_loss_hand_value_and_zero():
    prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 2.0]])
    assert latent_loss(prediction, target) == 4.5  # (1 + 4 + 0 + 4) / 2
    assert latent_loss(prediction, prediction) == 0
    assert latent_loss(prediction, prediction + 1e-3) > 0


def test_partial_rows_estimate_the_full_micro_loss_without_bias():
    generator = torch.Generator().manual_seed(0)
    J = torch.randn(1, D, N, generator=generator, dtype=torch.float64)
    dzdt = torch.randn(1, D, generator=generator, dtype=torch.float64)
    force = torch.randn(1, N, generator=generator, dtype=torch.float64)
    all_rows = torch.arange(N).unsqueeze(0)
    full = micro_loss(pseudo_inverse_rows(J, all_rows), dzdt, force)

    n_subsets, k = 4000, 5
    rows = torch.stack([torch.randperm(N, generator=generator)[:k] for _ in range(n_subsets)])
    J_repeated, dzdt_repeated = J.expand(n_subsets, D, N), dzdt.expand(n_subsets, D)
    estimate = micro_loss(pseudo_inverse_rows(J_repeated, rows), dzdt_repeated, force[0, rows])

    # exact standard error of a mean of k rows drawn without replacement, over n_subsets draws
    predicted_force = (pseudo_inverse_rows(J, all_rows) @ dzdt[..., None])[0, :, 0]
    squared_residuals = (predicted_force - force[0]) ** 2
    subset_variance = squared_residuals.var(correction=0) / k * (N - k) / (N - 1)
    standard_error = (subset_variance / n_subsets).sqrt()
    assert abs(estimate - full) < 4 * standard_error
    assert subset_variance > 0


def test_full_micro_loss_splits_into_latent_and_orthogonal_parts():
    generator = torch.Generator().manual_seed(1)
    batch = 4
    J = torch.linalg.qr(torch.randn(batch, N, D, generator=generator, dtype=torch.float64))[0].mT
    dzdt = torch.randn(batch, D, generator=generator, dtype=torch.float64)
    force = torch.randn(batch, N, generator=generator, dtype=torch.float64)
    pinv = pseudo_inverse_rows(J, torch.arange(N).expand(batch, N))

    latent_target = (J @ force[..., None])[..., 0]
    orthogonal_force = force - (J.mT @ latent_target[..., None])[..., 0]
    expected = latent_loss(dzdt, latent_target) + orthogonal_force.square().sum(-1).mean()
    torch.testing.assert_close(N * micro_loss(pinv, dzdt, force), expected, rtol=1e-12, atol=0)


def test_micro_loss_from_moments_equals_micro_loss():
    """The d x d moments give exactly the row-wise loss, for all rows and for a subset."""
    generator = torch.Generator().manual_seed(7)
    pinv_rows = torch.randn(5, 12, 3, generator=generator, dtype=torch.float64)
    force = torch.randn(5, 12, generator=generator, dtype=torch.float64)
    dzdt = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    moments = micro_moments(pinv_rows, force)
    assert torch.allclose(micro_loss_from_moments(**moments, dzdt=dzdt), micro_loss(pinv_rows, dzdt, force), rtol=1e-12)
    subset = micro_moments(pinv_rows[:, :4], force[:, :4])
    assert torch.allclose(micro_loss_from_moments(**subset, dzdt=dzdt), micro_loss(pinv_rows[:, :4], dzdt, force[:, :4]), rtol=1e-12)


def test_lzp_target_is_j_f_from_every_row_and_from_any_rows_when_f_is_in_js_row_space():
    """L_z,p's least-squares rate equals J f exactly with every row (so L_z,p on full forces is
    L_z), and from any k >= d rows when f = J^+ dz/dt (Allen-Cahn's case); otherwise it is the
    minimiser of that configuration's L_x,p."""
    generator = torch.Generator().manual_seed(3)
    batch, k = 6, 5
    J = torch.randn(batch, D, N, generator=generator, dtype=torch.float64)
    force = torch.randn(batch, N, generator=generator, dtype=torch.float64)
    all_rows = torch.arange(N).expand(batch, N)
    moments = micro_moments(pseudo_inverse_rows(J, all_rows), force)
    torch.testing.assert_close(estimated_rate(moments["gram"], moments["cross"]), (J @ force[..., None])[..., 0], rtol=1e-10, atol=1e-12)

    dzdt = torch.randn(batch, D, generator=generator, dtype=torch.float64)
    in_row_space = (pseudo_inverse_rows(J, all_rows) @ dzdt[..., None])[..., 0]
    rows = torch.stack([torch.randperm(N, generator=generator)[:k] for _ in range(batch)])
    pinv_rows = pseudo_inverse_rows(J, rows)
    moments = micro_moments(pinv_rows, torch.gather(in_row_space, 1, rows))
    torch.testing.assert_close(estimated_rate(moments["gram"], moments["cross"]), dzdt, rtol=1e-10, atol=1e-12)

    moments = micro_moments(pinv_rows, torch.gather(force, 1, rows))
    best = estimated_rate(moments["gram"], moments["cross"]).requires_grad_()
    micro_loss_from_moments(**moments, dzdt=best).backward()
    assert best.grad.abs().max() < 1e-10  # the per-configuration L_x,p is stationary there
