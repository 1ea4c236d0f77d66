"""Partial-force sampling: random configurations, random unit subsets, forces on those only.

Configurations are drawn without replacement from the training trajectories, and per
configuration a uniform random subset of k = round(p * units) sampling units
(`planning.fraction_count`, also without replacement). The system's `partial_rhs` computes
the rate on the subset from its stencil or neighbours alone, so the cost is O(k). The store
records which rows were computed, the values, the force-evaluation count (configurations x k)
and the wall time of the force computation itself (compilation and I/O excluded).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from tqdm import tqdm

from macroclosure.config import complete_section
from macroclosure.planning import fraction_count, sample_settings
from macroclosure.runtime import jax_device, log, provenance
from macroclosure.store import INDEX_DTYPE, described, open_store, read_states, write_store
from macroclosure.systems import system_of

CONFIGURATION_STREAM, SUBSET_STREAM = 0, 1
BATCH_MEMORY_BYTES = 2**30  # bound on the intermediates of one batch of partial forces


def equations_of(jaxpr):
    """Every equation of a jaxpr, descending into the jaxprs of nested calls."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)  # ClosedJaxpr or Jaxpr
            if hasattr(inner, "eqns"):
                yield from equations_of(inner)


def traced_bytes(function, *args) -> int:
    """Total size of every intermediate `function` traces to on `args`: an upper bound on
    its working memory (XLA fuses many of them away)."""
    closed = jax.make_jaxpr(function)(*args)
    return sum(int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize for eqn in equations_of(closed.jaxpr) for v in eqn.outvars)


def configurations_per_batch(partial_rhs, state, units, requested: int) -> int:
    """`requested`, or fewer so that one batch's intermediates stay within BATCH_MEMORY_BYTES
    (LJ at p = 1 works on k x candidates pairs: large systems must not take 1 024 at once)."""
    return max(1, min(requested, BATCH_MEMORY_BYTES // max(1, traced_bytes(partial_rhs, state, units))))


def draw_configurations(n_trajectories: int, n_times: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(trajectory, time_index) of `count` distinct saved states, sorted for local reads.

    The draw depends on the seed only, not on p, so every fraction sees the same states.
    """
    rng = np.random.default_rng([seed, CONFIGURATION_STREAM])
    flat = np.sort(rng.choice(n_trajectories * n_times, size=count, replace=False))
    return np.divmod(flat, n_times)


def first_states(n_times: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(trajectory, time_index) of the first `count` saved states in trajectory order: whole
    training trajectories, so a smaller budget also covers fewer initial conditions (the
    published draw: n configurations are the first n / frames trajectories)."""
    return np.divmod(np.arange(count), n_times)


def draw_subsets(n_units: int, k: int, count: int, seed: int) -> np.ndarray:
    """`count` independent uniform subsets of k of n_units units, without replacement."""
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    return np.stack([rng.choice(n_units, size=k, replace=False) for _ in range(count)])


def refuse_non_finite(forces, trajectory, time_index, source: str) -> None:
    """Raise, naming the first bad configuration, unless every force is finite."""
    bad = np.flatnonzero(~np.isfinite(forces).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{source}: non-finite forces in {bad.size} of {len(forces)} configurations (first at trajectory "
            f"{trajectory[bad[0]]}, time index {time_index[bad[0]]}); the state is corrupt or, for MD, "
            "a sampled atom has a neighbour nearer than 0.5 sigma or a neighbourhood denser than close packing at 0.8 sigma"
        )


def fitted_partial_forces(system, states, units, compiled: dict):
    """(partial forces of a batch, the seconds they took, the system that computed them).

    A system whose partial-force buffers depend on the data (`fit_partial`) is checked the way
    jax-md checks a neighbour list: where values come out non-finite it is grown to the batch
    and the batch redone; whatever stays non-finite is the state's. `compiled` holds the
    compiled vmapped partial forces per (function, batch shape); the seconds count every run.
    """
    seconds = 0.0
    while True:
        key = (system.partial_rhs, states.shape)
        if key not in compiled:
            compiled[key] = jax.jit(jax.vmap(system.partial_rhs)).lower(states, units).compile()
        start = time.perf_counter()
        values = compiled[key](states, units).block_until_ready()
        seconds += time.perf_counter() - start
        grown = None if system.fit_partial is None or bool(jnp.isfinite(values).all()) else system.fit_partial(states, units)
        if grown is None:
            return values, seconds, system
        system = grown


def batched_partial_forces(system, read_states_of, units: np.ndarray, batch_limit: int, progress: str | None):
    """(partial forces [count, rows] of the units [count, k] of each configuration, the seconds
    they took), in batches of configurations `read_states_of(slice)` [batch, N] returns.

    Each batch is as large as the memory of the system computing it allows (at most
    `batch_limit`), so once the partial-force slots grow, the next batches shrink to fit.
    `progress` is the progress bar's label (None: no bar).
    """
    count = len(units)
    compiled, batches = {}, {}  # batches: configurations per batch of each partial force
    example = (jnp.asarray(read_states_of(slice(0, 1))[0]), jnp.asarray(units[0]))
    forces, wall, first = None, 0.0, 0
    with tqdm(total=count, desc=progress, unit="config", disable=progress is None, mininterval=2.0) as bar:
        while first < count:
            if system.partial_rhs not in batches:
                batches[system.partial_rhs] = configurations_per_batch(system.partial_rhs, *example, batch_limit)
            part = slice(first, min(count, first + batches[system.partial_rhs]))
            values, seconds, system = fitted_partial_forces(system, jnp.asarray(read_states_of(part)), jnp.asarray(units[part]), compiled)
            if forces is None:
                forces = np.empty((count, values.shape[1]), dtype=values.dtype)
            forces[part], wall = np.asarray(values), wall + seconds
            bar.update(part.stop - first)
            first = part.stop
    return forces, wall


def sample(trajectories: str, out: str, p: float, seed: int, settings: dict, device: str = "auto", progress: bool = True) -> None:
    """Compute partial forces at fraction p for the configured number of configurations."""
    ds = open_store(trajectories, "trajectories")
    settings = complete_section(ds.attrs["system"], "sample", settings)
    system = system_of(ds)
    n_trajectories, n_times = ds.sizes["trajectory"], ds.sizes["time"]
    count = settings["configurations"]
    if count > n_trajectories * n_times:
        raise ValueError(f"{count} configurations requested but {trajectories} holds {n_trajectories * n_times} states")
    k = fraction_count(p, system.dims.units)
    if k < 1:
        raise ValueError(f"p = {p} samples no {system.dims.unit} out of {system.dims.units}")
    if settings["draw"] == "trajectories":
        trajectory, time_index = first_states(n_times, count)
    else:
        trajectory, time_index = draw_configurations(n_trajectories, n_times, count, seed)
    units = draw_subsets(system.dims.units, k, count, seed)
    rows = np.asarray(jax.vmap(system.unit_rows)(jnp.asarray(units)))
    log.info("sampling %d configurations (%s draw) x %d of %d %ss (p = %g)", count, settings["draw"], k, system.dims.units, system.dims.unit, p)

    with jax.default_device(jax_device(device)):
        forces, wall = batched_partial_forces(system, lambda part: read_states(ds, trajectory[part], time_index[part]), units,
                                              settings["batch_size"], f"sample p={p:g}" if progress else None)
    refuse_non_finite(forces, trajectory, time_index, trajectories)

    units = system.units or {}
    result = xr.Dataset(
        {
            "trajectory": (("sample",), trajectory.astype(INDEX_DTYPE), described("trajectory of the configuration in the trajectory store")),
            "time_index": (("sample",), time_index.astype(INDEX_DTYPE), described("position of the configuration along the trajectory store's time")),
            "index": (("sample", "row"), rows.astype(INDEX_DTYPE),
                      described("row of the state vector (position along the trajectory store's dof, whose coordinates label it) whose rate is stored")),
            "force": (("sample", "row"), forces, described("microscopic force: the rate dx/dt of the row", units.get("force"))),
        },
        coords={"sample": ("sample", np.arange(count, dtype=INDEX_DTYPE), described("sampled configuration"))},
        attrs={
            "system": ds.attrs["system"],
            "p": p,
            "k": k,
            "unit": system.dims.unit,
            "seed": seed,
            "configurations": count,
            "force_evaluations": count * k,
            "wall_seconds": wall,
            "trajectories_digest": json.loads(ds.attrs["provenance"])["config_digest"],
            "provenance": json.dumps(provenance(sample_settings(settings), seed, device), sort_keys=True),
        },
    )
    write_store(result, out, "forces")
    log.info("wrote %s: %d force evaluations in %.3f s", out, count * k, wall)
