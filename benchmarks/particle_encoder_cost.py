"""Benchmark: cost of the particle closure encoder per configuration against system size.

    .venv/bin/python benchmarks/particle_encoder_cost.py [--atoms 256 800 2700] [--latent 4 32] [--threads 1]

For each size (density 0.8, r_c 2.5, float64): a batch of lattice configurations jittered by
0.1 sigma and shifted by whole boxes (unwrapped, liquid-like pair counts), then the median
over repeats, per configuration, of: the neighbour pairs (vesin), the encoding z, and the
encoder Jacobian J = dz/dx (vmap(jacrev)) at each latent dimension d. The cost should grow
linearly in atoms: the last columns divide by the atoms. Writes
benchmarks/particle_encoder_cost.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from macroclosure.closure import Autoencoder, encoder_jacobian
from macroclosure.config import complete_section
from macroclosure.descriptors import PooledDescriptors, particle_box
from macroclosure.systems import build_system

RECORD = Path(__file__).resolve().with_suffix(".md")


def jittered_lattice(atoms: int, box: float, rng: np.random.Generator) -> np.ndarray:
    """Unwrapped positions [atoms, 3]: the first `atoms` sites of a cubic lattice filling the box,
    jittered by 0.1 sigma, each shifted by a random whole number of boxes."""
    per_side = int(np.ceil(atoms ** (1 / 3)))
    sites = np.stack(np.meshgrid(*[np.arange(per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:atoms]
    positions = (sites + 0.5) * (box / per_side) + rng.normal(0.0, 0.1, (atoms, 3))
    return positions + box * rng.integers(-2, 3, (atoms, 3))


def seconds_per_configuration(run, batch: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def measure(atoms: int, latent_dims: list[int], batch: int, repeats: int) -> list[dict]:
    system = build_system("lennard_jones", complete_section("lennard_jones", "simulate", {"atoms": atoms}))
    rng = np.random.default_rng(atoms)
    box = system.layout["box_length"]
    x = torch.as_tensor(np.stack([
        np.concatenate([jittered_lattice(atoms, box, rng).ravel(), rng.normal(0.0, 1.0, 3 * atoms)]) for _ in range(batch)
    ]))
    inputs = PooledDescriptors(particle_box(system))
    constants = inputs.constants(x)
    rows = [{"atoms": atoms, "step": "neighbour pairs (vesin)", "seconds": seconds_per_configuration(lambda: inputs.constants(x), batch, repeats)}]
    for latent_dim in latent_dims:
        torch.manual_seed(0)
        model = Autoencoder(system.dims.dof, latent_dim, system.observables, 1, hidden=(64, 64), inputs=inputs).double()
        with torch.no_grad():
            rows.append({"atoms": atoms, "step": f"encode, d = {latent_dim}",
                         "seconds": seconds_per_configuration(lambda: model.encode(x, *constants), batch, repeats)})
            rows.append({"atoms": atoms, "step": f"Jacobian, d = {latent_dim}",
                         "seconds": seconds_per_configuration(lambda: encoder_jacobian(model, x, constants), batch, repeats)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[256, 800, 2700])
    parser.add_argument("--latent", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--batch", type=int, default=2, help="configurations per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a loaded CPU two threads wait on each other at every small op")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    table = pd.DataFrame([row for atoms in args.atoms for row in measure(atoms, args.latent, args.batch, args.repeats)])
    table["microseconds_per_atom"] = 1e6 * table["seconds"] / table["atoms"]
    wide = table.pivot(index="step", columns="atoms", values="microseconds_per_atom")
    command = " ".join(["benchmarks/particle_encoder_cost.py", "--atoms", *map(str, args.atoms), "--latent", *map(str, args.latent),
                        "--batch", str(args.batch), "--repeats", str(args.repeats), "--threads", str(args.threads)])
    RECORD.write_text(
        "# Particle closure encoder: cost per configuration against size (measured)\n\n"
        f"Output of `.venv/bin/python {command}` (float64, CPU, {torch.get_num_threads()} torch threads, "
        f"median of {args.repeats}, {args.batch} configurations per call; {time.strftime('%Y-%m-%d')}). "
        "Linear cost means a constant time per atom along each row.\n\n"
        "## Seconds per configuration\n\n" + table.drop(columns="microseconds_per_atom").to_markdown(index=False, floatfmt=".4g")
        + "\n\n## Microseconds per atom\n\n" + wide.to_markdown(floatfmt=".4g") + "\n"
    )
    print(RECORD.read_text())


if __name__ == "__main__":
    main()
