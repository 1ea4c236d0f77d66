"""Benchmark: cost of LJ partial forces against the full jax-md force, and MD throughput.

    .venv/bin/python benchmarks/lennard_jones_forces.py [--atoms 800 6400] [--repeats 5] [--skip-md] [--threads 1 2]

For each size: minimise one configuration (float32, as the pipeline runs), then time per
configuration (median of repeats, compiled beforehand, batch of configurations vmapped as
the sample stage does):
- the partial force at p = 1/16, 1/4 and 1 (cell binning of all atoms, pair work of the
  chosen ones), its candidate slots grown to the trajectory as the sample stage grows them;
- the full jax-md force from a stored configuration: neighbour-list rebuild + forces, and
  the forces alone from an already built list (what MD pays per step);
- the simulate stage in atom-steps per second with each engine (`simulate.engine`: LAMMPS at
  each `--threads`, jax-md), end to end into a store (32 trajectories of 250 steps at 800
  atoms, as many atom-steps at larger sizes): the whole stage, the stage without drawing and
  minimising its starts (the same for both engines), the engine alone; beside bare LAMMPS
  (a fresh 250-step run from each of the stage's starts, same box, styles and threads, no
  frames saved) and, for reference, one long LAMMPS run of as many steps. Bare LAMMPS and the
  stage's integration and writes (`simulate.stream_trajectories` on the same starts into a
  scratch store: the stage without its starts) are also timed in `--repeats` alternating
  rounds, so that both see the same machine: `paired_engine_over_bare` (integration alone,
  frames included) and `paired_stage_over_bare` (integration and the waits on writes) are
  ratios of medians, with the range of the rounds' ratios beside them.
Each cost is also given relative to the two full paths (`relative_to_full`,
`relative_to_built_list`). Writes benchmarks/results/lennard_jones_forces.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import zarr  # noqa: F401 - imported before timing: a stage pays it once, with either engine

from macroclosure.config import complete_section
from macroclosure.runtime import use_float64
from macroclosure.systems import build_system
from macroclosure import lammps_md
from macroclosure import lennard_jones_md as lj
from macroclosure.simulate import simulate, stream_trajectories
from macroclosure.store import open_store

RESULTS = Path(__file__).resolve().parent / "results"
FRACTIONS = (1 / 16, 1 / 4, 1.0)
BATCH = 8
DEFAULT_TRAJECTORIES = 32  # the default config's training split: the timed stage's trajectories up to 800 atoms


def stage_trajectories(atoms: int) -> int:
    """Trajectories of 250 steps in a timed simulate stage: the default config's 32 up to 800 atoms;
    above, 32 x 800 / atoms (at least 4), so every size integrates about as many atom-steps."""
    return max(4, DEFAULT_TRAJECTORIES * 800 // max(atoms, 800))


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


def stage_rates(atoms: int, engine: str, threads: int) -> dict:
    """The simulate stage of `stage_trajectories` trajectories (default-config steps and save
    interval), end to end into a store, in atom-steps / s: the whole stage; integrating and
    writing (without drawing and minimising the starts, which both engines share); the engine
    alone. The stage times its parts itself. Also returns the starts it integrated (frame 0 of
    its store), for bare LAMMPS to run from."""
    settings = complete_section("lennard_jones", "simulate", {
        "atoms": atoms, "engine": engine, "minimise_steps": 100, "steps": 250, "save_every": 10,
        "trajectories": {"train": stage_trajectories(atoms), "test": 1}})
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as scratch:
        seconds = simulate("lennard_jones", settings, "train", f"{scratch}/train.zarr", device="cpu", progress=False)
        starts = open_store(f"{scratch}/train.zarr", "trajectories")["state"][:, 0].values
    atom_steps = atoms * settings["steps"] * stage_trajectories(atoms)
    return {"trajectories": stage_trajectories(atoms), "stage_atom_steps_per_s": atom_steps / sum(seconds),
            "integrate_and_write_atom_steps_per_s": atom_steps / (seconds.integration + seconds.writing),
            "engine_atom_steps_per_s": atom_steps / seconds.integration, "starts_seconds": seconds.initial,
            "writing_seconds": seconds.writing, "settings": settings, "starts": starts}


def fresh_runs(lmp, settings: dict, starts: np.ndarray) -> float:
    """Seconds for bare LAMMPS runs of `steps` from each start [B, N], no frames saved: each
    places the atoms and pays LAMMPS' setup, as any run of that many trajectories must."""
    atoms, box = settings["atoms"], lj.box_length(settings)
    start = time.perf_counter()
    for start_state in starts:
        lmp.command("delete_atoms group all")
        lmp.command("reset_timestep 0")
        lammps_md.place_atoms(lmp, start_state, atoms, box)
        lmp.command(f"run {settings['steps']} post no")
    return time.perf_counter() - start


def streamed_seconds(settings: dict, starts: np.ndarray) -> tuple[float, float]:
    """Seconds of the stage's integration of `starts` and of its waits on writes, into a
    scratch store: the simulate stage without drawing its starts."""
    system = build_system("lennard_jones", settings)
    with tempfile.TemporaryDirectory() as scratch:
        return stream_trajectories(system, starts.astype(settings["dtype"]), {}, settings, "train", f"{scratch}/train.zarr", {},
                                   progress=False)


def bare_lammps(settings: dict, starts: np.ndarray, threads: int, repeats: int) -> dict:
    """LAMMPS alone in the engine's box, styles and threads, from the stage's own starts [B, N]:
    `repeats` rounds, each timing the bare runs (`fresh_runs`) and then, if repeats > 1, the
    stage's integration and writes on the same starts (`streamed_seconds`), so both see the
    same machine; the median of the bare runs, the ratios of the medians and the ranges of the
    rounds' ratios, and for reference one continuing run of as many steps; with
    max |F_lammps - F_ours| / max |F| on the first start."""
    atoms, box, steps, count = settings["atoms"], lj.box_length(settings), settings["steps"], len(starts)
    bare, streamed, starts64 = [], [], starts.astype(np.float64)
    with lammps_md.lammps_box(settings, threads) as lmp:
        lammps_md.place_atoms(lmp, starts64[0], atoms, box)
        lmp.command("run 0")
        forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(atoms, 3)  # in atom-id order
        for _ in range(repeats):
            bare.append(fresh_runs(lmp, settings, starts64))
            streamed += [streamed_seconds(settings, starts)] if repeats > 1 else []
        start = time.perf_counter()
        lmp.command(f"run {steps * count} post no")
        continuing = atoms * steps * count / (time.perf_counter() - start)
    use_float64(True)
    ours = np.asarray(lj.all_pair_forces(jnp.asarray(starts[0][: 3 * atoms].reshape(atoms, 3), dtype=jnp.float64), box=box,
                                         r_cutoff=settings["r_cutoff"]))
    use_float64(False)
    paired = {}
    for name, seconds in (("engine", [engine for engine, _ in streamed]), ("stage", [sum(parts) for parts in streamed])):
        ratios = [b / s for b, s in zip(bare, seconds)]
        paired |= {f"paired_{name}_over_bare": float(np.median(bare) / np.median(seconds)),
                   f"paired_{name}_over_bare_range": f"{min(ratios):.2f}-{max(ratios):.2f}"} if seconds else {}
    return {"bare_lammps_atom_steps_per_s": atoms * steps * count / np.median(bare), **paired,
            "one_long_run_atom_steps_per_s": continuing,
            "lammps_force_agreement": float(np.abs(forces - ours).max() / np.abs(ours).max())}


def md_throughput(atoms: int, thread_counts: list[int], repeats: int) -> list[dict]:
    """Stage rates of the LAMMPS engine at each thread count and of the jax-md engine (XLA
    takes every core), each beside bare LAMMPS from the same starts on as many threads."""
    rows = []
    for engine, counts in (("lammps", thread_counts), ("jax-md", thread_counts[-1:])):
        for threads in counts:
            rates = stage_rates(atoms, engine, threads)
            settings, starts = rates.pop("settings"), rates.pop("starts")
            bare = bare_lammps(settings, starts, threads, repeats if engine == "lammps" else 1)
            rows.append({"atoms": atoms, "engine": engine, "threads": threads if engine == "lammps" else "XLA", **rates, **bare,
                         "integrate_and_write_over_bare": rates["integrate_and_write_atom_steps_per_s"] / bare["bare_lammps_atom_steps_per_s"],
                         "engine_over_bare": rates["engine_atom_steps_per_s"] / bare["bare_lammps_atom_steps_per_s"]})
    return rows


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="LAMMPS threads (OMP_NUM_THREADS) to time")
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
        throughput += md_throughput(atoms, args.threads, args.repeats)
        print(pd.DataFrame(throughput).to_string(), flush=True)

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
        report += "\n## Simulate stage throughput (atom-steps / s)\n\n" + markdown(speed) + "\n"
    (RESULTS / "lennard_jones_forces.md").write_text(report)
    figure(table, RESULTS / "lennard_jones_forces.png")
    print((RESULTS / "lennard_jones_forces.md").read_text())


if __name__ == "__main__":
    main()
