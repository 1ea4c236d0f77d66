"""Benchmark: seconds per training step of the closure autoencoder with the condition penalty.

    .venv/bin/python benchmarks/closure_step_cost.py [--atoms 800] [--latent 32] [--batch 256] [--steps 10] [--threads 1]

With PYTHONPATH pointing at another checkout's src/, it times that version (the record
compares the factored penalty with the one before it).

The published LJ closure (raw x, N = 6 x atoms, encoder N -> 64 -> 64 -> d - 1, penalty on the
closure rows) on random states (positions uniform in the box, Gaussian velocities), float32 as
in the pipeline: the median over steps of one Adam step of the loss, reconstruction plus
condition penalty. closure.latent_gram never forms the [d - 1, N] rows, only the first
layer's Gram. Writes benchmarks/closure_step_cost.md (or --record).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from macroclosure.closure import Autoencoder, autoencoder_loss, closure_data

RECORD = Path(__file__).resolve().with_suffix(".md")


def temperature(atoms: int):
    return lambda x: (x[..., 3 * atoms :] ** 2).sum(-1, keepdim=True) / (3 * (atoms - 1))


def step_seconds(atoms: int, latent_dim: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    box = (atoms / 0.8) ** (1 / 3)
    model = Autoencoder(6 * atoms, latent_dim, temperature(atoms), 1, hidden=(64, 64))
    x = torch.cat([torch.rand(batch, 3 * atoms) * box, torch.randn(batch, 3 * atoms)], dim=-1)
    data = closure_data(model, x, batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        losses = autoencoder_loss(model, data, 1e-5, slice(1, None))
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[800])
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "# Closure autoencoder: seconds per training step with the condition penalty (measured)", "",
        f"Output of `.venv/bin/python benchmarks/closure_step_cost.py --atoms {' '.join(map(str, args.atoms))} "
        f"--latent {args.latent} --batch {args.batch} --steps {args.steps} --threads {args.threads}` ({args.threads} torch threads, "
        f"float32, CPU, median of {args.steps} steps of {args.batch} states).", "",
        "| atoms | N | d | seconds per step |", "|---|---|---|---|",
    ]
    for atoms in args.atoms:
        seconds = step_seconds(atoms, args.latent, args.batch, args.steps)
        lines.append(f"| {atoms} | {6 * atoms} | {args.latent} | {seconds:.4f} |")
        print(lines[-1], flush=True)
    args.record.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
