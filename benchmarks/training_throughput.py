"""Training throughput of the latent models, and of a K = 10 ensemble against 10 single runs.

Run: .venv/bin/python benchmarks/training_throughput.py
Writes benchmarks/results/training_throughput.tsv (samples per second = samples x members
x epochs / wall seconds, one thread, L_z on synthetic data, the default model settings).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from macroclosure.config import complete_section
from macroclosure.ensemble import build_members
from macroclosure.normalisation import Normalisation
from macroclosure.train import fit_dynamics

SAMPLES, EPOCHS, ENSEMBLE = 4096, 2, 10
OUT = Path(__file__).parent / "results" / "training_throughput.tsv"


def timed_fit(name: str, dim: int, members: int, settings: dict) -> float:
    """Wall seconds of fit_dynamics for an ensemble of `members` models."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(SAMPLES, dim, generator=generator)
    data = {"z": z, "target": -z}
    identity = Normalisation([0.0] * dim, [1.0] * dim, [0.0] * dim, [1.0] * dim)
    models = build_members(name, dim, settings[name], seed=0, count=members)
    start = time.perf_counter()
    fit_dynamics(models, "L_z", data, identity, settings, seed=0, device=torch.device("cpu"), progress=False)
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(1)
    settings = complete_section("predator_prey", "train", {"epochs": EPOCHS})
    timed_fit("mlp", 4, 1, settings)  # warm-up: first-call costs of torch are not throughput
    rows = ["model\tdim\tmembers\tmode\twall_s\tsamples_per_s"]
    for name in ("mlp", "onsager", "gfinn"):
        for dim in (4, 32):
            single = timed_fit(name, dim, 1, settings)
            stacked = timed_fit(name, dim, ENSEMBLE, settings)
            work = SAMPLES * EPOCHS
            rows.append(f"{name}\t{dim}\t1\tsingle\t{single:.2f}\t{work / single:.0f}")
            rows.append(f"{name}\t{dim}\t{ENSEMBLE}\tvmapped ensemble\t{stacked:.2f}\t{ENSEMBLE * work / stacked:.0f}")
            rows.append(f"{name}\t{dim}\t{ENSEMBLE}\t{ENSEMBLE} single runs (estimated)\t{ENSEMBLE * single:.2f}\t{work / single:.0f}")
            print(rows[-3], rows[-2], sep="\n", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(rows) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
