"""How noisy is each partial-force loss's view of dz/dt with the thermodynamic closure (#13)?

From a results folder's Lennard-Jones closure and a full-force (p = 1) sample: per configuration
the exact rate J f, and from k sampled atoms (drawn as the sample stage draws subsets) the two estimates the
partial losses fit: L_z,u's (n / k) J[:, I] f_I and the least-squares rate of the rows I, which is
where a configuration's L_x,p (and L_z,p) is smallest. L_x,p weights that rate's error by
G_I = J+[I, :]^T J+[I, :] / k; its regression on M configurations behaves like a weighted mean.
Printed per latent component, in the standardised units the latent model sees (rate_std):
  signal   the spread of J f over configurations (what a model can learn),
  noise    the spread of estimate - J f (L_z,u; least squares),
  L_x,p    the error of the G-weighted mean of the least-squares estimates over M configurations,
           times sqrt(M), against the plain mean's for L_z,u (noise of one configuration's worth).

    .venv/bin/python benchmarks/particle_closure/partial_rate_noise.py RESULTS [--atoms 50] [--configurations 200]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from macroclosure.closure import encoder_jacobian, latent_names, load_closure, pseudo_inverse_rows
from macroclosure.sampling import draw_subsets
from macroclosure.store import open_store, read, read_states
from macroclosure.systems import system_of


def full_forces(store, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `count` samples' trajectory, time index and full force vector [S, N]."""
    index, force = read(store, "index")[:count], read(store, "force")[:count]
    full = np.zeros_like(force, dtype=np.float64)
    np.put_along_axis(full, index, force, axis=1)
    return read(store, "trajectory")[:count], read(store, "time_index")[:count], full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results")
    parser.add_argument("--atoms", type=int, default=50)
    parser.add_argument("--configurations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.results) / "lennard_jones"
    autoencoder, _, normalisation = load_closure(str(root / "closure"))
    encoder = autoencoder.double()
    trajectories = open_store(str(root / "trajectories/train.zarr"), "trajectories", system="lennard_jones")
    forces = open_store(str(root / "forces/p1/seed0.zarr"), "forces", system="lennard_jones")
    trajectory, time_index, f = full_forces(forces, args.configurations)
    x = torch.as_tensor(read_states(trajectories, trajectory, time_index), dtype=torch.float64)
    f = torch.as_tensor(f)
    n_atoms = x.shape[1] // 6
    system = system_of(trajectories)
    subsets = draw_subsets(n_atoms, args.atoms, len(x), args.seed)
    scale = torch.tensor(normalisation.rate_std, dtype=torch.float64)
    exact, unbiased, least_squares, grams = [], [], [], []
    for batch in torch.arange(len(x)).split(20):
        J = encoder_jacobian(encoder, x[batch]).detach()
        exact.append(torch.einsum("bdn,bn->bd", J, f[batch]))
        rows = torch.as_tensor(np.stack([np.asarray(system.unit_rows(subsets[i])) for i in batch.tolist()]))
        f_rows = torch.gather(f[batch], 1, rows)
        columns = torch.gather(J, 2, rows.unsqueeze(1).expand(-1, J.shape[1], -1))
        unbiased.append(torch.einsum("bdk,bk->bd", columns, f_rows) * n_atoms / args.atoms)
        P = pseudo_inverse_rows(J, rows)
        gram = P.mT @ P / rows.shape[1]
        least_squares.append(torch.linalg.solve(gram, (P.mT @ f_rows.unsqueeze(-1)).squeeze(-1) / rows.shape[1]))
        grams.append(gram * scale[:, None] * scale[None, :])  # G in standardised units
    exact, unbiased, least_squares, grams = (torch.cat(t) for t in (exact, unbiased, least_squares, grams))
    signal = (exact / scale).std(0)
    noise_u = ((unbiased - exact) / scale).std(0)
    noise_ls = ((least_squares - exact) / scale).std(0)
    weighted = torch.linalg.solve(grams.sum(0), torch.einsum("bij,bj->i", grams, (least_squares - exact) / scale))
    print(f"{len(x)} configurations, {n_atoms} atoms, {args.atoms} sampled; latent {latent_names(autoencoder, ['T'])}")
    print("component | signal (std of J f) | noise L_z,u | noise least squares (L_z,p) | L_z,u / signal | least squares / signal")
    for d, name in enumerate(latent_names(autoencoder, ["T"])):
        print(f"{name} | {signal[d]:.3g} | {noise_u[d]:.3g} | {noise_ls[d]:.3g} | {noise_u[d] / signal[d]:.3g} | {noise_ls[d] / signal[d]:.3g}")
    mean_u = ((unbiased - exact) / scale).mean(0) * len(x) ** 0.5
    print("one configuration's worth of error of a constant fit (x sqrt M): L_z,u mean", [f"{v:.3g}" for v in mean_u.tolist()],
          "| L_x,p G-weighted", [f"{v:.3g}" for v in (weighted * len(x) ** 0.5).tolist()])
    condition = torch.linalg.cond(grams)
    print(f"condition number of G (standardised): median {condition.median():.3g}, max {condition.max():.3g}")


if __name__ == "__main__":
    main()
