"""Batched, jit-compiled integration of a system's trajectories, streamed to a zarr store.

Trajectories are integrated in batches (vmap over the batch), in chunks of saved frames (a
`lax.scan`); a batch is written while the next integrates, so memory is bounded by two
batches and progress can be shown. Every step is checked for non-finite values inside the
jitted loop; a blow-up stops the run naming the trajectory and the first bad step, and nothing
that looks complete is written.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm import tqdm

from macroclosure.config import complete_section
from macroclosure.integrators import rk4_step
from macroclosure.planning import saved_frames
from macroclosure.runtime import jax_device, log, provenance, use_float64
from macroclosure.store import INDEX_DTYPE, described, streamed_store
from macroclosure.systems import System, build_system

SPLIT_STREAMS = {"train": 0, "test": 1}
PROGRESS_UPDATES = 20


class SimulationDiverged(RuntimeError):
    """The state became NaN or infinite."""


@partial(jax.jit, static_argnames=("rhs", "dt", "save_every", "frames"))
def advance(rhs, x, first_step, first_bad, *, dt, save_every, frames):
    """Integrate a batch x [B, N] over `frames` saved frames of `save_every` RK4 steps.

    Returns the final state, the saved states [frames, B, N] and, per trajectory, the
    first step at which the state stopped being finite (-1 while it is finite).
    """
    batched = jax.vmap(rhs)

    def one_step(step, carry):
        x, first_bad = carry
        x = rk4_step(batched, x, dt)
        bad = ~jnp.all(jnp.isfinite(x), axis=-1)
        return x, jnp.where((first_bad < 0) & bad, step + 1, first_bad)

    def one_frame(carry, frame):
        x, first_bad = carry
        start = first_step + frame * save_every
        x, first_bad = jax.lax.fori_loop(start, start + save_every, one_step, (x, first_bad))
        return (x, first_bad), x

    (x, first_bad), saved = jax.lax.scan(one_frame, (x, first_bad), jnp.arange(frames))
    return x, saved, first_bad


def rk4_integrate(system: System, x0: np.ndarray, n_frames: int, save_every: int, chunk_frames: int, on_chunk):
    """RK4 of `system.rhs` for a batch x0 [B, N], vmapped: saved states [B, n_frames + 1, N]
    and the first non-finite step per trajectory (-1 if none); stops at a blow-up."""
    x = jnp.asarray(x0)
    first_bad = jnp.full(x.shape[0], -1, dtype=int)  # strongly typed, as advance returns it: one compilation
    frames = [np.asarray(x)[None]]
    for start in range(0, n_frames, chunk_frames):
        count = min(chunk_frames, n_frames - start)
        x, saved, first_bad = advance(
            system.rhs, x, start * save_every, first_bad, dt=system.time_step, save_every=save_every, frames=count
        )
        if np.any(np.asarray(first_bad) >= 0):
            return None, np.asarray(first_bad)
        frames.append(np.asarray(saved))
        on_chunk(x.shape[0] * count * save_every)
    return np.concatenate(frames, axis=0).swapaxes(0, 1), np.asarray(first_bad)


def integrate_batch(system: System, x0: np.ndarray, settings: dict, first_trajectory: int, split: str, progress):
    """Saved states [B, frames + 1, N] of one batch, by the system's own integrator (MD) or
    RK4; raises SimulationDiverged naming the trajectory and step of a blow-up."""
    n_frames = saved_frames(settings) - 1  # after the initial state
    chunk_frames = max(1, math.ceil(n_frames / PROGRESS_UPDATES))
    integrate = system.integrate or partial(rk4_integrate, system)
    states, first_bad = integrate(x0, n_frames, settings["save_every"], chunk_frames, progress.update)
    bad = np.flatnonzero(first_bad >= 0)
    if bad.size:
        which = bad[np.argmin(first_bad[bad])]  # the first to go
        step = int(first_bad[which])
        raise SimulationDiverged(
            f"{split} trajectory {first_trajectory + which} became non-finite at step {step} "
            f"(t = {step * system.time_step:g}); reduce the time step or check the initial state"
        )
    return states


def block_of(system: System, states: np.ndarray, initial: dict, times: np.ndarray, first: int) -> xr.Dataset:
    """One batch of trajectories as a dataset that says what it holds: the trajectories'
    numbers, the time and the states in the system's units, and what each row of the state
    vector is (the system's `dof_labels`, as coordinates along `dof`)."""
    units, count = system.units or {}, len(states)
    labels = {name: ("dof", values, described(long_name)) for name, (long_name, values) in (system.dof_labels or {}).items()}
    variables = {"state": (("trajectory", "time", "dof"), states, described("microscopic state", units.get("state")))}
    variables |= {name: (("trajectory",), values[first : first + count], described(f"initial-condition parameter {name}"))
                  for name, values in initial.items()}
    coords = {"trajectory": ("trajectory", np.arange(first, first + count, dtype=INDEX_DTYPE), described("trajectory number")),
              "time": ("time", times, described("time", units.get("time")))}
    return xr.Dataset(variables, coords=coords | labels)


class StageSeconds(NamedTuple):
    """Where a simulate stage spent its time."""

    initial: float  # drawing (for MD: placing and minimising) the initial states
    integration: float  # integrating the trajectories (the engine)
    writing: float  # waiting for store writes that integration did not hide


def stream_trajectories(system: System, x0: np.ndarray, initial: dict, settings: dict, split: str, out: str,
                        attrs: dict, progress: bool = True) -> tuple[float, float]:
    """Integrate the trajectories from x0 [count, N] batch by batch into the store `out`;
    returns the seconds of integration and the seconds spent waiting on writes.

    Each batch is written by a writer thread while the next one integrates (LAMMPS, XLA and
    the zarr codecs release the GIL), so at most two batches are in memory and the writes
    cost only what integration does not hide. A blow-up stops the stage after the pending
    write, and the unfinished store is removed (`streamed_store`)."""
    count, batch = len(x0), settings["batch_size"]
    n_frames = saved_frames(settings) - 1  # after the initial state
    times = np.arange(n_frames + 1) * settings["save_every"] * system.time_step
    integration = waiting = 0.0
    with streamed_store(out, "trajectories", attrs, append_dim="trajectory") as append, tqdm(
        total=count * n_frames * settings["save_every"], unit="traj-step", unit_scale=True,
        disable=not progress, mininterval=2.0, desc=f"simulate {split}",
    ) as bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as writer:
        pending = None
        for first in range(0, count, batch):
            started = time.perf_counter()
            states = integrate_batch(system, x0[first : first + batch], settings, first, split, bar)
            integration += time.perf_counter() - started
            started = time.perf_counter()
            if pending is not None:
                pending.result()
            pending = writer.submit(append, block_of(system, states, initial, times, first))
            waiting += time.perf_counter() - started
        started = time.perf_counter()
        pending.result()
        waiting += time.perf_counter() - started
    return integration, waiting


def simulate(system_name: str, settings: dict, split: str, out: str, device: str = "auto", progress: bool = True) -> StageSeconds:
    """Simulate the `split` trajectories of a system and stream them to the store `out`;
    returns (and logs) the seconds spent on the initial states, the integration and the writes."""
    settings = complete_section(system_name, "simulate", settings)
    use_float64(settings["dtype"] == "float64")
    jax_device_used = jax_device(device)
    system = build_system(system_name, settings)
    count = settings["trajectories"][split]
    log.info("simulating %d %s trajectories of %s, %d steps each; drawing initial states", count, split, system_name, settings["steps"])
    rng = np.random.default_rng([settings["seed"], SPLIT_STREAMS[split]])
    started = time.perf_counter()
    x0, initial = system.initial_conditions(rng, count)
    initial_seconds = time.perf_counter() - started
    attrs = {
        "system": system_name,
        "split": split,
        "integrator": "velocity_verlet" if system.integrate else "rk4",
        **({"engine": settings["engine"]} if "engine" in settings else {}),
        "dt": system.time_step,
        "save_every": settings["save_every"],
        "dof_layout": json.dumps(system.layout),
        "provenance": json.dumps(provenance(settings, settings["seed"], str(jax_device_used)), sort_keys=True),
    }
    log.info("initial states drawn in %.1f s; integrating (the first chunk includes compilation)", initial_seconds)
    with jax.default_device(jax_device_used):
        integration, writing = stream_trajectories(system, x0.astype(settings["dtype"]), initial, settings, split, out, attrs, progress)
    log.info("wrote %s: %d trajectories of %d steps integrated in %.1f s (%.3g trajectory-steps/s); "
             "%.1f s more waiting on writes", out, count, settings["steps"], integration, count * settings["steps"] / integration, writing)
    return StageSeconds(initial_seconds, integration, writing)
