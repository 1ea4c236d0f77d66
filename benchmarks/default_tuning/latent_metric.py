"""Diagnostic: how the micro-space losses weight the latent components, against L_z.

    .venv/bin/python benchmarks/default_tuning/latent_metric.py RESULTS/SYSTEM [--states 200] [--fraction 0.2]

g predicts standardised rates r; the rate is mu + sigma r. L_z weights an error e in r by the
identity; L_x weights it by M = diag(sigma) (J J^T)^-1 diag(sigma) / N (J^+ = J^T (J J^T)^-1),
and L_x,p by diag(sigma) G_I diag(sigma) with G_I = J^+[I,:]^T J^+[I,:] / k, whose mean over
subsets is M. If M is ill-conditioned, the micro-space losses hardly see errors along its
weak directions, however exact the forces. For `--states` training states of the system's
trajectory store and closure (under RESULTS/SYSTEM), prints the median and range of:
kappa(J J^T), kappa(M), kappa(G_I) for one random subset of `--fraction` of the rows, each
latent component's share of trace(M), and |f - J^+ J f| / |f| (the force outside J's row
space: label noise under subsampling), with f the system's full force.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import torch

from macroclosure.closure import encoder_jacobian, gram_condition_number, load_closure, pseudo_inverse_rows
from macroclosure.runtime import use_float64
from macroclosure.store import open_store
from macroclosure.systems import build_system


def summary(values: np.ndarray) -> str:
    return f"median {np.median(values):.3g} (range {values.min():.3g}-{values.max():.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system_results", type=Path, help="RESULTS/SYSTEM: holds trajectories/ and closure/")
    parser.add_argument("--states", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    use_float64(True)
    store = open_store(args.system_results / "trajectories" / "train.zarr", "trajectories")
    system_name = store.attrs["system"]
    settings = json.loads(store.attrs["provenance"])["settings"]
    system = build_system(system_name, settings)
    states = store["state"].values.reshape(-1, store.sizes["dof"])
    rng = np.random.default_rng(0)
    x = torch.as_tensor(states[rng.choice(len(states), args.states, replace=False)], dtype=torch.float64)
    model, _, normalisation = load_closure(args.system_results / "closure")
    model = model.double()
    with torch.no_grad():
        J = encoder_jacobian(model, x)
    gram = J @ J.mT
    sigma = torch.as_tensor(normalisation.rate_std)
    n = J.shape[-1]
    metric = sigma[:, None] * torch.linalg.inv(gram) * sigma[None, :] / n
    k = max(1, round(args.fraction * n))
    rows = torch.stack([torch.as_tensor(rng.choice(n, k, replace=False)) for _ in range(len(x))])
    pinv_rows = pseudo_inverse_rows(J, rows)
    subset_metric = sigma[:, None] * (pinv_rows.mT @ pinv_rows / k) * sigma[None, :]
    force = torch.as_tensor(np.asarray(jax.vmap(system.rhs)(x.numpy())), dtype=torch.float64)
    lifted = (J.mT @ torch.linalg.solve(gram, (J @ force.unsqueeze(-1)))).squeeze(-1)
    share = (torch.diagonal(metric, dim1=-2, dim2=-1) / torch.diagonal(metric, dim1=-2, dim2=-1).sum(-1, keepdim=True)).numpy()
    print(f"{system_name}: {len(x)} training states, N = {n}, d = {J.shape[1]}, subsets of {k} rows")
    print("kappa(J J^T):", summary(gram_condition_number(gram).numpy()))
    print("kappa(M), the L_x weighting of standardised rate errors:", summary(gram_condition_number(metric).numpy()))
    print("kappa(G_I), one subset's L_x,p weighting:", summary(gram_condition_number(subset_metric).numpy()))
    print("share of trace(M) per latent component (observables first):",
          ", ".join(f"{np.median(column):.3g}" for column in share.T))
    print("|f - J+ J f| / |f|:", summary((torch.linalg.norm(force - lifted, dim=-1) / torch.linalg.norm(force, dim=-1)).numpy()))


if __name__ == "__main__":
    main()
