"""Benchmark: minimising the LJ starts with jax-md against LAMMPS (`simulate.minimiser`).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/lennard_jones_starts.py

Draws and minimises the simulate stage's starts (`System.initial_conditions`: random placement,
`minimise_steps` = 100 FIRE steps on soft spheres, then on LJ; velocities) for 32 starts at
800 atoms and 4 at 6 400, with each minimiser, and prints the seconds and, per minimiser, the
mean LJ potential energy per atom and the nearest pair of the first start. jax-md's time
includes its compilation, as the stage's does.
"""

from __future__ import annotations

import time

import numpy as np

from macroclosure.config import complete_section
from macroclosure.systems import build_system
from macroclosure.systems.lennard_jones import box_length

CASES = ((800, 32), (6400, 4))


def nearest_and_energy(positions: np.ndarray, box: float, r_cutoff: float) -> tuple[float, float]:
    """Nearest pair distance and truncated-LJ potential energy per atom (minimum image; O(N^2) memory)."""
    separation = positions[:, None] - positions[None]
    separation -= box * np.round(separation / box)
    distance = np.sqrt((separation**2).sum(-1))
    np.fill_diagonal(distance, np.inf)
    within = distance[distance < r_cutoff]
    return float(distance.min()), float((4 * (within**-12 - within**-6)).sum() / 2 / len(positions))


def main() -> None:
    for atoms, count in CASES:
        for minimiser in ("lammps", "jax-md"):
            settings = complete_section("lennard_jones", "simulate", {"atoms": atoms, "minimise_steps": 100, "minimiser": minimiser})
            system = build_system("lennard_jones", settings)
            start = time.perf_counter()
            states, _ = system.initial_conditions(np.random.default_rng(0), count)
            seconds = time.perf_counter() - start
            nearest, energy = nearest_and_energy(states[0][: 3 * atoms].reshape(atoms, 3), box_length(settings), settings["r_cutoff"])
            print(f"| {atoms} | {count} | {minimiser} | {seconds:.1f} | {nearest:.3f} | {energy:.3f} |", flush=True)


if __name__ == "__main__":
    main()
