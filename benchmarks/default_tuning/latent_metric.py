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


def measure(system_results: Path, states: int = 200, fraction: float = 0.2) -> dict:
    """The metric's statistics for `states` training states of the store and closure under
    `system_results`: per state arrays of kappa(J J^T), kappa(M), kappa(G_I) and the force
    share outside J's row space, and each latent component's median share of trace(M)."""
    torch.set_default_dtype(torch.float64)
    use_float64(True)
    store = open_store(system_results / "trajectories" / "train.zarr", "trajectories")
    system_name = store.attrs["system"]
    settings = json.loads(store.attrs["provenance"])["settings"]
    system = build_system(system_name, settings)
    all_states = store["state"].values.reshape(-1, store.sizes["dof"])
    rng = np.random.default_rng(0)
    x = torch.as_tensor(all_states[rng.choice(len(all_states), states, replace=False)], dtype=torch.float64)
    model, _, normalisation = load_closure(system_results / "closure")
    model = model.double()
    with torch.no_grad():
        J = encoder_jacobian(model, x)
    gram = J @ J.mT
    sigma = torch.as_tensor(normalisation.rate_std)
    n = J.shape[-1]
    metric = sigma[:, None] * torch.linalg.inv(gram) * sigma[None, :] / n
    k = max(1, round(fraction * n))
    rows = torch.stack([torch.as_tensor(rng.choice(n, k, replace=False)) for _ in range(len(x))])
    pinv_rows = pseudo_inverse_rows(J, rows)
    subset_metric = sigma[:, None] * (pinv_rows.mT @ pinv_rows / k) * sigma[None, :]
    force = torch.as_tensor(np.asarray(jax.vmap(system.rhs)(x.numpy())), dtype=torch.float64)
    lifted = (J.mT @ torch.linalg.solve(gram, (J @ force.unsqueeze(-1)))).squeeze(-1)
    diagonal = torch.diagonal(metric, dim1=-2, dim2=-1)
    return {
        "system": system_name, "states": len(x), "N": n, "d": J.shape[1], "k": k, "observables": model.n_observables,
        "kappa_gram": gram_condition_number(gram).numpy(),
        "kappa_metric": gram_condition_number(metric).numpy(),
        "kappa_subset_metric": gram_condition_number(subset_metric).numpy(),
        "trace_share": np.median((diagonal / diagonal.sum(-1, keepdim=True)).numpy(), axis=0),
        "unresolved_force": (torch.linalg.norm(force - lifted, dim=-1) / torch.linalg.norm(force, dim=-1)).numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system_results", type=Path, help="RESULTS/SYSTEM: holds trajectories/ and closure/")
    parser.add_argument("--states", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    m = measure(args.system_results, args.states, args.fraction)
    print(f"{m['system']}: {m['states']} training states, N = {m['N']}, d = {m['d']}, subsets of {m['k']} rows")
    print("kappa(J J^T):", summary(m["kappa_gram"]))
    print("kappa(M), the L_x weighting of standardised rate errors:", summary(m["kappa_metric"]))
    print("kappa(G_I), one subset's L_x,p weighting:", summary(m["kappa_subset_metric"]))
    print("share of trace(M) per latent component (observables first):",
          ", ".join(f"{share:.3g}" for share in m["trace_share"]))
    print("|f - J+ J f| / |f|:", summary(m["unresolved_force"]))


if __name__ == "__main__":
    main()
