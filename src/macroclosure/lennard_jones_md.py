"""Lennard-Jones fluid in a periodic cube (METHOD.md, system 3), simulated with jax-md: the
physics behind the plug-in module `systems.lennard_jones` (its ENGINE: imported only to build).

Reduced units (sigma = epsilon = m = 1), truncated and unshifted pair potential
U(r) = 4 (r^-12 - r^-6) for r < r_c. State x = (unwrapped positions, velocities), each
[atoms, 3] flattened, N = 6 atoms; dx/dt = (v, F). The sampling unit is the atom: its rate
rows are its 3 position rows (the velocity, free) and its 3 velocity rows (the force).

Three force paths, deliberately independent of each other so each checks the others:
- `simulation_functions`: jax-md neighbour lists and autodiff of the pair energy, for MD;
- `partial_forces`: forces on k chosen atoms from a stored configuration, which has no
  neighbour list. All atoms are binned into cells of side >= r_c (O(N)), then only the
  chosen atoms' 27 neighbouring cells are searched: O(N) binning + O(k) pair work;
- `all_pair_forces`: jax-md's dense all-pairs sum, O(N^2), the reference `rhs`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax_md import minimize, partition, quantity, smap, space

from macroclosure.runtime import log
from macroclosure.systems import System
from macroclosure.systems.lennard_jones import box_length, dimensions

# jax-md itself asks for float64 sums (util.high_precision_sum) and scatters int64 into int32
# neighbour lists; JAX warns about both on every trace, which would bury the logs.
warnings.filterwarnings("ignore", message="Explicitly requested dtype float64 requested in", category=UserWarning)
warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)

CLOSEST_CONTACT = 0.9  # sigma; a pair this near carries 4 (0.9^-12 - 0.9^-6) = 7.3 epsilon
CLOSE_PACKED_DENSITY = math.sqrt(2) / CLOSEST_CONTACT**3  # fcc with that nearest-neighbour distance
SHARED_START_STREAM = 2  # random stream of the shared start (the split streams are 0 and 1)
OVERFLOW_RETRIES = 4  # neighbour-list reallocations per chunk or minimisation before giving up
COMPONENTS = np.array(["x", "y", "z", "vx", "vy", "vz"], dtype=object)  # the state rows of an atom, as laid out


def pair_energy(dr, r_cutoff):
    """Truncated, unshifted LJ energy of pairs at distance dr (0 beyond r_cutoff)."""
    inside = dr < r_cutoff
    inverse_six = (1.0 / jnp.where(inside, dr, 1.0)) ** 6
    return jnp.where(inside, 4.0 * (inverse_six**2 - inverse_six), 0.0)


def pair_force_over_r(r2, inside):
    """|F| / r of each pair from its squared distance: 24 (2 r^-14 - r^-8), 0 outside."""
    inverse_r2 = 1.0 / jnp.where(inside, r2, 1.0)
    inverse_r6 = inverse_r2**3
    return jnp.where(inside, 24.0 * inverse_r2 * inverse_r6 * (2.0 * inverse_r6 - 1.0), 0.0)


def split_state(x, atoms: int):
    """(positions [atoms, 3], velocities [atoms, 3]) of a state vector x [6 atoms]."""
    return x[: 3 * atoms].reshape(atoms, 3), x[3 * atoms :].reshape(atoms, 3)


def minimum_image(delta, box):
    return delta - box * jnp.round(delta / box)


# ---------------------------------------------------------------------------------------
# Partial forces from a cell binning of one configuration
# ---------------------------------------------------------------------------------------
class CellGrid(NamedTuple):
    """Static geometry of the binning: cells per side, cell capacity, neighbour offsets."""

    per_side: int
    capacity: int
    offsets: np.ndarray  # [n_offsets, 3] distinct neighbouring-cell offsets (27 when per_side >= 3)


def cell_grid(box: float, r_cutoff: float, divisions: int = 2) -> CellGrid:
    """Cells of side >= r_cutoff / divisions, so every neighbour of an atom lies within
    `divisions` cells of its own along each axis ((2 divisions + 1)^3 cells to search).

    Smaller cells hug the cutoff sphere more tightly: with 2 divisions the searched volume
    is about half that of 27 cells of side r_cutoff. The capacity is what a cell holds at
    close packing with no pair nearer than 0.9 sigma, far beyond the density fluctuations of
    a liquid; a fuller cell marks its atoms' forces NaN (never a silently dropped pair),
    which the sampling stage refuses. With too few cells per side the offsets are the
    distinct ones, so no pair counts twice.
    """
    per_side = max(1, int(box * divisions // r_cutoff))
    side = box / per_side
    capacity = math.ceil(CLOSE_PACKED_DENSITY * side**3) + 2
    steps = range(-divisions, divisions + 1) if per_side > 2 * divisions else range(per_side)
    return CellGrid(per_side, capacity, np.array(list(itertools.product(steps, repeat=3))))


def bin_atoms(positions, box: float, grid: CellGrid):
    """Cell of each atom [A, 3] and the table of atoms per cell [cells, capacity] (-1 empty)."""
    per_side = grid.per_side
    cell = jnp.clip(jnp.floor(jnp.mod(positions, box) * (per_side / box)).astype(jnp.int32), 0, per_side - 1)
    flat = (cell[:, 0] * per_side + cell[:, 1]) * per_side + cell[:, 2]
    order = jnp.argsort(flat)
    sorted_cells = flat[order]
    n_cells = per_side**3
    counts = jnp.zeros(n_cells, jnp.int32).at[flat].add(1)
    starts = jnp.cumsum(counts) - counts
    slot = jnp.arange(flat.shape[0]) - starts[sorted_cells]
    table = jnp.full((n_cells, grid.capacity), -1, jnp.int32).at[sorted_cells, slot].set(order.astype(jnp.int32), mode="drop")
    return cell, table, counts


def partial_forces(positions, atoms, *, box: float, r_cutoff: float, grid: CellGrid):
    """LJ forces [k, 3] on the atoms `atoms` [k] only, from neighbouring cells of each.

    NaN for an atom one of whose cells overflowed, so a dropped pair can never pass silently.
    """
    cell, table, counts = bin_atoms(positions, box, grid)
    per_side = grid.per_side
    neighbour_cells = jnp.mod(cell[atoms][:, None, :] + jnp.asarray(grid.offsets)[None], per_side)
    neighbour_flat = (neighbour_cells[..., 0] * per_side + neighbour_cells[..., 1]) * per_side + neighbour_cells[..., 2]
    candidates = table[neighbour_flat].reshape(atoms.shape[0], -1)
    overflow = jnp.any(counts[neighbour_flat] > grid.capacity, axis=1)
    delta = minimum_image(positions[atoms][:, None, :] - positions[jnp.maximum(candidates, 0)], box)
    r2 = jnp.sum(delta**2, axis=-1)
    inside = (candidates >= 0) & (candidates != atoms[:, None]) & (r2 < r_cutoff**2)
    forces = jnp.sum(pair_force_over_r(r2, inside)[..., None] * delta, axis=1)
    return jnp.where(overflow[:, None], jnp.nan, forces)


def all_pair_forces(positions, *, box: float, r_cutoff: float):
    """jax-md's dense all-pairs forces [A, 3]: O(A^2), the independent reference."""
    displacement, _ = space.periodic(box, wrapped=False)
    energy = smap.pair(partial(pair_energy, r_cutoff=r_cutoff), space.canonicalize_displacement_or_metric(displacement))
    return quantity.force(energy)(positions)


# ---------------------------------------------------------------------------------------
# Molecular dynamics with jax-md neighbour lists
# ---------------------------------------------------------------------------------------
class Simulation(NamedTuple):
    """jax-md pieces of one box: the neighbour-list builder, energies and forces from a
    list, the (non-wrapping) shift. Hashable, so jitted functions take it as static."""

    box: float
    neighbor_fn: partition.NeighborListFns
    energy_fn: object  # (positions, neighbor) -> truncated LJ potential energy
    force_fn: object  # (positions, neighbor) -> forces [A, 3]
    soft_energy_fn: object  # (positions, neighbor) -> soft-sphere energy, to untangle overlaps
    shift_fn: object


def simulation_functions(settings: dict) -> Simulation:
    """The jax-md functions of the box `settings` describe (one instance per box)."""
    return _simulation(settings["atoms"], settings["density"], settings["r_cutoff"], settings["skin"])


@lru_cache(maxsize=8)
def _simulation(atoms: int, density: float, r_cutoff: float, skin: float) -> Simulation:
    """Neighbour lists (cutoff r_c + skin) and the pair energies on them, via jax-md."""
    box = box_length({"atoms": atoms, "density": density})
    displacement, shift = space.periodic(box, wrapped=False)
    metric = space.canonicalize_displacement_or_metric(displacement)
    neighbor_fn = partition.neighbor_list(metric, box, r_cutoff, dr_threshold=skin)
    energy_fn = smap.pair_neighbor_list(partial(pair_energy, r_cutoff=r_cutoff), metric)
    soft_energy_fn = smap.pair_neighbor_list(soft_sphere_energy, metric)
    return Simulation(box, neighbor_fn, energy_fn, quantity.force(energy_fn), soft_energy_fn, shift)


def wrap(positions, box):
    """Positions folded into [0, box), which jax-md's cell lists expect."""
    return jnp.mod(positions, box)


def allocate(sim: Simulation, positions, extra_capacity: int = 0):
    """A neighbour list sized for `positions` (host-side: its capacity is data dependent)."""
    return sim.neighbor_fn.allocate(wrap(positions, sim.box), extra_capacity=extra_capacity)


@jax.jit
def _rebuilt(neighbor, positions):
    return neighbor.update(positions)


def neighbours_for(sim: Simulation, positions, previous=None):
    """A neighbour list for `positions` that keeps `previous`'s capacity when it suffices,
    so every trajectory of a run shares one shape and one compilation."""
    if previous is not None:
        neighbor = _rebuilt(previous, wrap(positions, sim.box))
        if not neighbor.did_buffer_overflow:
            return neighbor
    return allocate(sim, positions)


@partial(jax.jit, static_argnames=("sim", "dt", "save_every", "frames"))
def verlet_frames(sim: Simulation, positions, velocities, neighbor, first_bad, *, dt, save_every, frames):
    """`frames` x `save_every` NVE velocity-Verlet steps (m = 1) with neighbour updates.

    Returns the final (positions, velocities, neighbor), the saved states [frames, N] and
    the first step (counted from this call) at which the state was not finite, or -1.
    """

    def one_step(step, carry):
        positions, velocities, forces, neighbor, first_bad = carry
        half = velocities + 0.5 * dt * forces
        positions = sim.shift_fn(positions, dt * half)
        neighbor = neighbor.update(wrap(positions, sim.box))
        forces = sim.force_fn(positions, neighbor)
        velocities = half + 0.5 * dt * forces
        bad = ~(jnp.all(jnp.isfinite(positions)) & jnp.all(jnp.isfinite(velocities)))
        first_bad = jnp.where((first_bad < 0) & bad, step + 1, first_bad)
        return positions, velocities, forces, neighbor, first_bad

    def one_frame(carry, frame):
        carry = jax.lax.fori_loop(frame * save_every, (frame + 1) * save_every, one_step, carry)
        return carry, jnp.concatenate([carry[0].ravel(), carry[1].ravel()])

    forces = sim.force_fn(positions, neighbor)
    carry, saved = jax.lax.scan(one_frame, (positions, velocities, forces, neighbor, first_bad), jnp.arange(frames))
    positions, velocities, _, neighbor, first_bad = carry
    return positions, velocities, neighbor, saved, first_bad


class NeighbourListOverflow(RuntimeError):
    """The neighbour list kept overflowing after every reallocation."""


def retrying_overflow(run, sim: Simulation, positions, neighbor, activity: str):
    """`run(neighbor)` -> (result, its final list, blown_up), redone from `positions` with a list
    reallocated there, larger each time, whenever its final list overflowed, so no pair is ever
    dropped; a blown-up state is returned as it is (a larger list would not help). Returns
    (result, the list it started from); gives up after OVERFLOW_RETRIES reallocations."""
    for attempt in range(OVERFLOW_RETRIES + 1):
        result, final, blown_up = run(neighbor)
        if blown_up or not final.did_buffer_overflow:
            return result, neighbor
        neighbor = allocate(sim, positions, extra_capacity=attempt * neighbor.idx.shape[-1] // 2)
    raise NeighbourListOverflow(
        f"neighbour list overflowed {OVERFLOW_RETRIES + 1} times in a row during {activity} "
        f"(capacity {neighbor.idx.shape[-1]}); the configuration is probably compressed beyond a liquid"
    )


def run_chunk(sim: Simulation, positions, velocities, neighbor, *, dt, save_every, frames):
    """verlet_frames from a chunk's start, redone with a larger list on overflow."""

    def run(neighbor):
        result = verlet_frames(sim, positions, velocities, neighbor, jnp.array(-1), dt=dt, save_every=save_every, frames=frames)
        return result, result[2], int(result[4]) >= 0

    return retrying_overflow(run, sim, positions, neighbor, "molecular dynamics")[0]


def integrate(settings: dict, x0, n_frames: int, save_every: int, chunk_frames: int, on_chunk):
    """Saved states [B, n_frames + 1, N] of trajectories from x0 [B, N] and, per trajectory,
    the first non-finite step (-1 if none); stops at the first trajectory that blows up."""
    sim = simulation_functions(settings)
    atoms = settings["atoms"]
    chunk_frames = max(d for d in range(1, chunk_frames + 1) if n_frames % d == 0)  # one chunk shape, one compilation
    trajectories, first_bad, neighbor = [], np.full(len(x0), -1), None
    for index, x in enumerate(np.asarray(x0)):
        positions, velocities = (jnp.asarray(part) for part in split_state(x, atoms))
        neighbor = neighbours_for(sim, positions, neighbor)
        frames = [x[None]]
        for start in range(0, n_frames, chunk_frames):
            count = min(chunk_frames, n_frames - start)
            positions, velocities, neighbor, saved, bad = run_chunk(
                sim, positions, velocities, neighbor, dt=settings["dt"], save_every=save_every, frames=count
            )
            if int(bad) >= 0:
                first_bad[index] = start * save_every + int(bad)
                return None, first_bad
            frames.append(np.asarray(saved))
            on_chunk(count * save_every)
        trajectories.append(np.concatenate(frames))
    return np.stack(trajectories), first_bad


# ---------------------------------------------------------------------------------------
# Initial states
# ---------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("sim", "soft", "steps"))
def descend(sim: Simulation, positions, neighbor, *, soft: bool, steps: int):
    """`steps` FIRE steps on the soft-sphere or the LJ energy, updating the neighbour list.

    FIRE starts and stays at small steps on LJ: at the r ~ 1 contacts soft spheres leave,
    its forces are ~100 and the default step would throw atoms across the box.
    """
    energy = sim.soft_energy_fn if soft else sim.energy_fn
    init, apply = minimize.fire_descent(energy, sim.shift_fn, **({} if soft else {"dt_start": 0.001, "dt_max": 0.01}))

    def body(_, carry):
        state, neighbor = carry
        neighbor = neighbor.update(wrap(state.position, sim.box))
        return apply(state, neighbor=neighbor), neighbor

    state, neighbor = jax.lax.fori_loop(0, steps, body, (init(positions, neighbor=neighbor), neighbor))
    return state.position, neighbor


def minimise(sim: Simulation, positions, steps: int, soft: bool, neighbor=None):
    """FIRE minimisation of the soft-sphere or LJ energy: (positions, the list it used).
    Redone with a larger list when it overflows (atoms move far while overlaps untangle);
    `neighbor` is a list to reuse the capacity of."""

    def run(neighbor):
        minimised, final = descend(sim, positions, neighbor, soft=soft, steps=steps)
        return minimised, final, False

    return retrying_overflow(run, sim, positions, neighbours_for(sim, positions, neighbor), "energy minimisation")


def soft_sphere_energy(dr):
    """Harmonic soft spheres of diameter 1: bounded forces that push apart the overlaps of a
    random placement before LJ, whose forces there exceed any float range."""
    return jnp.where(dr < 1.0, 0.5 * (1.0 - dr) ** 2, 0.0)


def minimised_placement(sim: Simulation, rng: np.random.Generator, settings: dict, lists=(None, None)):
    """Random placement, then soft-sphere and LJ FIRE minimisation: positions [atoms, 3] in
    the box, and the two neighbour lists used, whose capacities the next call reuses."""
    dtype = jnp.zeros(()).dtype
    positions = jnp.asarray(rng.uniform(0.0, sim.box, (settings["atoms"], 3)), dtype=dtype)
    positions, soft_list = minimise(sim, positions, settings["minimise_steps"], soft=True, neighbor=lists[0])
    positions, lj_list = minimise(sim, positions, settings["minimise_steps"], soft=False, neighbor=lists[1])
    return np.asarray(wrap(positions, sim.box)), (soft_list, lj_list)


def unit_velocities(rng: np.random.Generator, atoms: int) -> np.ndarray:
    """Gaussian velocities [atoms, 3] with zero total momentum, rescaled to temperature 1; a
    temperature T0 is this pattern times sqrt(T0)."""
    velocities = rng.normal(0.0, 1.0, (atoms, 3))
    velocities -= velocities.mean(axis=0)
    return velocities / math.sqrt(temperature_of(velocities))


def initial_states(sim: Simulation, rng: np.random.Generator, settings: dict, temperatures: np.ndarray) -> np.ndarray:
    """One state (wrapped positions, velocities at exactly T0) per temperature T0.

    Independent starts draw a placement and a velocity pattern per trajectory. With
    `shared_start` every trajectory, in every split, starts from the one placement and the one
    velocity pattern drawn from `settings["seed"]` alone, scaled to its T0 (the published
    design: only T0 differs, so T(t) is a smooth function of T0).
    """
    if settings["shared_start"]:
        log.info("placing and minimising the shared start (%d atoms, %d FIRE steps twice)", settings["atoms"], settings["minimise_steps"])
        shared = np.random.default_rng([settings["seed"], SHARED_START_STREAM])
        positions, _ = minimised_placement(sim, shared, settings)
        pattern = unit_velocities(shared, settings["atoms"])
        return np.stack([np.concatenate([positions.ravel(), math.sqrt(t) * pattern.ravel()]) for t in temperatures])
    states, lists = [], (None, None)
    for number, temperature in enumerate(temperatures, 1):
        log.info("placing and minimising start %d of %d (%d atoms)", number, len(temperatures), settings["atoms"])
        positions, lists = minimised_placement(sim, rng, settings, lists)
        velocities = math.sqrt(temperature) * unit_velocities(rng, settings["atoms"])
        states.append(np.concatenate([positions.ravel(), velocities.ravel()]))
    return np.stack(states)


def temperature_of(velocities) -> float:
    """Kinetic temperature sum |v|^2 / (3 (atoms - 1)) (m = 1, momentum conserved)."""
    return float(np.sum(np.square(velocities)) / (3 * (len(velocities) - 1)))


# ---------------------------------------------------------------------------------------
def build(settings: dict) -> System:
    """The System of `systems.lennard_jones`, whose ENGINE this module is."""
    atoms, r_cutoff = settings["atoms"], settings["r_cutoff"]
    box = box_length(settings)
    grid = cell_grid(box, r_cutoff)
    offsets = jnp.arange(3)

    def rhs(x):
        """dx/dt = (v, F) on every row, forces from jax-md's all-pairs sum (O(N^2))."""
        positions, velocities = split_state(x, atoms)
        return jnp.concatenate([velocities.ravel(), all_pair_forces(positions, box=box, r_cutoff=r_cutoff).ravel()])

    def partial_rhs(x, units):
        """The 6 rate rows of each atom in `units`: (v, F) from cell-binned neighbours only."""
        positions, velocities = split_state(x, atoms)
        forces = partial_forces(positions, units, box=box, r_cutoff=r_cutoff, grid=grid)
        return jnp.concatenate([velocities[units], forces], axis=1).ravel()

    def unit_rows(units):
        """Rows (3a, 3a+1, 3a+2, 3A+3a, 3A+3a+1, 3A+3a+2) of each atom a, in that order."""
        position_rows = 3 * units[:, None] + offsets[None]
        return jnp.concatenate([position_rows, 3 * atoms + position_rows], axis=1).ravel()

    def initial_conditions(rng: np.random.Generator, count: int):
        low, high = settings["temperature"]
        temperatures = rng.uniform(low, high, count)
        states = initial_states(simulation_functions(settings), rng, settings, temperatures)
        return states, {"initial_temperature": temperatures}

    def observables(x: torch.Tensor) -> torch.Tensor:
        """Temperature sum |v|^2 / (3 (atoms - 1))."""
        return (x[..., 3 * atoms :].square().sum(-1) / (3 * (atoms - 1))).unsqueeze(-1)

    return System(
        name="lennard_jones",
        settings=dict(settings),
        dims=dimensions(settings),
        observable_names=("temperature",),
        layout={"blocks": ["unwrapped positions [atom, 3]", "velocities [atom, 3]"], "atoms": atoms, "box_length": box},
        initial_conditions=initial_conditions,
        rhs=rhs,
        partial_rhs=partial_rhs,
        unit_rows=unit_rows,
        observables=observables,
        time_step=settings["dt"],
        integrate=lambda x0, n_frames, save_every, chunk_frames, on_chunk: integrate(
            settings, x0, n_frames, save_every, chunk_frames, on_chunk
        ),
        dof_labels={"atom": ("atom of the row", np.tile(np.repeat(np.arange(atoms, dtype=np.int64), 3), 2)),
                    "component": ("position (x, y, z) or velocity (vx, vy, vz) component of the row",
                                  np.repeat(COMPONENTS.reshape(2, 1, 3), atoms, axis=1).ravel())},
        units={"time": "tau (reduced Lennard-Jones units)",
               "state": "sigma (positions), sigma/tau (velocities): reduced Lennard-Jones units",
               "force": "sigma/tau (position rows), sigma/tau^2 (velocity rows): reduced Lennard-Jones units"},
    )
