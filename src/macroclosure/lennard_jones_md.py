"""Lennard-Jones fluid in a periodic cube (METHOD.md, system 3), simulated with jax-md: the
physics behind the plug-in module `systems.lennard_jones` (its ENGINE: imported only to build).

Reduced units (sigma = epsilon = m = 1), truncated and unshifted pair potential
U(r) = 4 (r^-12 - r^-6) for r < r_c. State x = (unwrapped positions, velocities), each
[atoms, 3] flattened, N = 6 atoms; dx/dt = (v, F). The sampling unit is the atom: its rate
rows are its 3 position rows (the velocity, free) and its 3 velocity rows (the force).

Three force paths, deliberately independent of each other so each checks the others:
- `simulation_functions`: jax-md neighbour lists and autodiff of the pair energy, for MD;
- `partial_forces`: forces on k chosen atoms from a stored configuration, which has no
  neighbour list. All atoms are sorted into cells of side >= r_c / 3 (O(N)), then only the
  chosen atoms' neighbourhoods are searched: O(N) binning + O(k) pair work;
- `all_pair_forces`: jax-md's dense all-pairs sum, O(N^2), the reference `rhs`.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache, partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch

from macroclosure import lammps_md
from macroclosure.runtime import log
from macroclosure.systems import System
from macroclosure.systems.lennard_jones import box_length, dimensions

if TYPE_CHECKING:
    from jax_md import partition

# jax-md is imported where it is used, not here: importing it runs jitted set-up (about 4 s
# on one CPU core), which every closure, train and evaluate job of the system would pay
# without calling it (they use the observables, and sampling uses `partial_forces`).

# jax-md itself asks for float64 sums (util.high_precision_sum) and scatters int64 into int32
# neighbour lists; JAX warns about both on every trace, which would bury the logs.
warnings.filterwarnings("ignore", message="Explicitly requested dtype float64 requested in", category=UserWarning)
warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)

MIN_SEPARATION = 0.8  # sigma; partial forces are exact wherever no pair is nearer (4 (0.8^-12 - 0.8^-6) = 43 epsilon)
CORRUPT_SEPARATION = 0.5  # sigma; a pair this near (U = 16 128 epsilon) is no state of the fluid: its forces are NaN
SEPARATED_DENSITY = math.sqrt(2) / MIN_SEPARATION**3  # fcc at that nearest-neighbour distance: the densest packing
SEARCH_MARGIN = 1e-3  # sigma added to the search radius, so rounding at a cell face drops no pair
CAPACITY_GROWTH = 1.25  # candidate slots allotted per slot needed when the partial-force buffer grows
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
    """Static geometry of the binning and the size of its buffer (hashable, so a jit key).

    Cells are numbered z fastest, so after sorting the atoms by cell the cells of one column
    (fixed x, y) at consecutive z hold consecutive atoms; the column's lowest `ghosts` cells
    follow again above its top, so a z range across the periodic face is contiguous too. An
    atom's candidates are, in each column within r_cutoff of it, the run of cells spanning
    its z +- the cutoff sphere's half chord there, the runs packed end to end into
    `capacity` slots.
    """

    per_side: int
    side: float  # box / per_side
    ghosts: int  # cells of each column repeated above its top
    columns: tuple[tuple[int, int], ...]  # distinct (x, y) offsets of the columns an atom searches
    capacity: int  # candidate slots per atom
    max_capacity: int  # what the searched region holds with no pair nearer than MIN_SEPARATION


class Binning(NamedTuple):
    """One configuration's atoms sorted by cell, which the partial forces search."""

    cell: jax.Array  # [A, 3] cell of each atom
    sorted_positions: jax.Array  # [2 A, 3] positions wrapped into the box, in cell order, ghosts included
    first: jax.Array  # [columns x (per_side + ghosts) + 1] sorted index of each cell's first atom, then the end
    rank: jax.Array  # [A] sorted index of each atom
    ghost_rank: jax.Array  # [A] sorted index of each atom's ghost, 2 A where it has none


def cell_grid(box: float, r_cutoff: float, density: float, divisions: int = 3) -> CellGrid:
    """Cells of side >= r_cutoff / divisions, with candidate slots for a liquid at `density`.

    Thin columns searched over each atom's own z range hug the cutoff sphere: at 3 divisions
    about twice its volume is searched, against 3.7 times for the 125 cells of side r_c / 2
    around the atom's cell. The capacity starts at the largest searched volume's share of
    atoms at `density`, plus margin; `fitted_grid` grows it when a configuration needs more,
    up to the packing bound at MIN_SEPARATION. With few cells per side the column offsets
    are the distinct ones, so no pair counts twice.
    """
    per_side = max(1, int(box * divisions // r_cutoff))
    side = box / per_side
    steps = range(-divisions, divisions + 1) if per_side > 2 * divisions else range(per_side)
    gaps = {step: cell_gap(step, per_side, side) for step in steps}
    columns = tuple((i, j) for i in steps for j in steps if gaps[i] ** 2 + gaps[j] ** 2 < (r_cutoff + SEARCH_MARGIN) ** 2)
    volume = side**3 * sum(run_cells(gaps[i] ** 2 + gaps[j] ** 2, per_side, side, r_cutoff) for i, j in columns)
    # Balls of radius MIN_SEPARATION / 2 centred in the region lie in it grown by that radius
    # (taken as a ball of the same volume), at no more than close packing.
    grown_radius = (3 * volume / (4 * math.pi)) ** (1 / 3) + MIN_SEPARATION / 2
    max_capacity = math.ceil(SEPARATED_DENSITY * 4 * math.pi * grown_radius**3 / 3)
    ghosts = min(per_side, math.floor(2 * (r_cutoff + SEARCH_MARGIN) / side) + 1)  # the cells a range from below 0 reaches
    return CellGrid(per_side, side, ghosts, columns, min(math.ceil(density * volume) + 8, max_capacity), max_capacity)


def cell_gap(step: int, per_side: int, side: float) -> float:
    """Least distance along an axis between a point of a cell and one `step` cells away (periodic)."""
    apart = abs(step) % per_side
    return max(min(apart, per_side - apart) - 1, 0) * side


def run_cells(gap2: float, per_side: int, side: float, r_cutoff: float) -> int:
    """Most cells of a column's z run for an atom whose column lies gap2 (squared) from it."""
    half_chord = math.sqrt(max((r_cutoff + SEARCH_MARGIN) ** 2 - gap2, 0.0))
    return min(per_side, math.floor(2 * half_chord / side) + 2)


def fitted_grid(grid: CellGrid, needed: int) -> CellGrid | None:
    """`grid` grown to hold `needed` candidates per atom (with room to spare, as jax-md grows
    its neighbour lists), or None where it already does or `needed` exceeds the packing bound."""
    if needed <= grid.capacity or needed > grid.max_capacity:
        return None
    return grid._replace(capacity=min(grid.max_capacity, math.ceil(CAPACITY_GROWTH * needed)))


def bin_atoms(positions, box: float, grid: CellGrid) -> Binning:
    """Sort the atoms [A, 3] by cell, with ghosts, by a counting sort: O(A), where a
    comparison sort (argsort) costs as much as the whole search of 400 atoms among 6 400."""
    per_side, ghosts = grid.per_side, grid.ghosts
    wrapped = jnp.mod(positions, box)
    cell = jnp.clip(jnp.floor(wrapped / grid.side).astype(jnp.int32), 0, per_side - 1)
    column = cell[:, 0] * per_side + cell[:, 1]
    flat = column * per_side + cell[:, 2]
    counts = jnp.zeros(per_side**3, jnp.int32).at[flat].add(1).reshape(per_side**2, per_side)
    extended = jnp.concatenate([counts, counts[:, :ghosts]], axis=1).ravel()
    first = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(extended, dtype=jnp.int32)])
    in_cell = rank_in_cell(flat, per_side**3)
    rank = first[column * (per_side + ghosts) + cell[:, 2]] + in_cell
    nowhere = 2 * positions.shape[0]
    ghost_rank = jnp.where(cell[:, 2] < ghosts, first[column * (per_side + ghosts) + per_side + cell[:, 2]] + in_cell, nowhere)
    sorted_positions = jnp.zeros((nowhere, 3), wrapped.dtype).at[rank].set(wrapped).at[ghost_rank].set(wrapped, mode="drop")
    return Binning(cell, sorted_positions, first, rank, ghost_rank)


def rank_in_cell(flat, cells: int):
    """Rank [A] of each atom among the atoms of its cell `flat` [A] (0 to occupancy - 1): in
    each round every cell ranks its lowest-numbered unranked atom, so the rounds are as
    many as the fullest cell holds."""
    index = jnp.arange(flat.shape[0], dtype=jnp.int32)
    unranked = flat.shape[0]  # an index no atom has

    def next_round(carry):
        rank, round_number = carry
        pending = rank < 0
        lowest = jnp.full(cells, unranked, jnp.int32).at[flat].min(jnp.where(pending, index, unranked))
        return jnp.where(pending & (lowest[flat] == index), round_number, rank), round_number + 1

    rank, _ = jax.lax.while_loop(lambda carry: jnp.any(carry[0] < 0), next_round, (jnp.full_like(index, -1), 0))
    return rank


def candidate_runs(binning: Binning, atoms, *, box: float, r_cutoff: float, grid: CellGrid):
    """(first sorted index, length) [k, columns] of the runs of sorted atoms that hold every
    atom within r_cutoff of each of `atoms` [k]: per column, the cells of its z range, moved
    up a box length onto the ghosts where the range starts below the box."""
    per_side, side = grid.per_side, grid.side
    centres = binning.sorted_positions[binning.rank[atoms]]
    columns = jnp.mod(binning.cell[atoms][:, None, :2] + jnp.asarray(grid.columns, jnp.int32)[None], per_side)
    gaps = jnp.maximum(jnp.abs(minimum_image(centres[:, None, :2] - (columns + 0.5) * side, box)) - 0.5 * side, 0.0)
    chord2 = (r_cutoff + SEARCH_MARGIN) ** 2 - jnp.sum(gaps**2, axis=-1)
    half_chord = jnp.sqrt(jnp.maximum(chord2, 0.0))
    low = jnp.floor((centres[:, None, 2] - half_chord) / side).astype(jnp.int32)
    high = jnp.floor((centres[:, None, 2] + half_chord) / side).astype(jnp.int32)
    whole = high - low + 1 >= per_side
    lift = jnp.where(low < 0, per_side, 0)
    column_start = (columns[..., 0] * per_side + columns[..., 1]) * (per_side + grid.ghosts)
    start = binning.first[column_start + jnp.where(whole, 0, low + lift)]
    end = binning.first[column_start + jnp.where(whole, per_side, high + lift + 1)]
    return start, jnp.where(chord2 > 0, end - start, 0)


def packed_candidates(starts, lengths, capacity: int):
    """Sorted index [k, capacity] of each candidate slot, the runs laid end to end, and
    whether the slot holds one. Each run's offset in the slots marks where the index jumps
    (a cumulative sum of the jumps), so no slot is spent on an empty cell."""
    offsets = jnp.cumsum(lengths, axis=1) - lengths
    base = starts - offsets  # index = base of the slot's run + slot
    jumps = jnp.diff(base, axis=1, prepend=0)
    rows = jnp.arange(starts.shape[0])[:, None]
    index = jnp.cumsum(jnp.zeros((starts.shape[0], capacity), jnp.int32).at[rows, offsets].add(jumps, mode="drop"), axis=1)
    slots = jnp.arange(capacity, dtype=jnp.int32)
    return index + slots, slots < jnp.sum(lengths, axis=1)[:, None]


def candidate_counts(positions, atoms, *, box: float, r_cutoff: float, grid: CellGrid):
    """Candidates [k] the search of each of `atoms` visits: the capacity it needs."""
    _, lengths = candidate_runs(bin_atoms(positions, box, grid), atoms, box=box, r_cutoff=r_cutoff, grid=grid)
    return jnp.sum(lengths, axis=1)


def partial_forces(positions, atoms, *, box: float, r_cutoff: float, grid: CellGrid):
    """LJ forces [k, 3] on the atoms `atoms` [k] only, from the candidates of each.

    NaN for an atom with more candidates than slots, so a dropped pair can never pass
    silently (`fitted_grid` sizes a grid that holds them), and for an atom with a neighbour
    nearer than CORRUPT_SEPARATION, whose finite but absurd force would pass as data.
    """
    binning = bin_atoms(positions, box, grid)
    starts, lengths = candidate_runs(binning, atoms, box=box, r_cutoff=r_cutoff, grid=grid)
    index, filled = packed_candidates(starts, lengths, grid.capacity)
    own = binning.rank[atoms][:, None]
    delta = minimum_image(binning.sorted_positions[own] - binning.sorted_positions.at[index].get(mode="clip"), box)
    r2 = jnp.sum(delta**2, axis=-1)
    inside = filled & (index != own) & (index != binning.ghost_rank[atoms][:, None]) & (r2 < r_cutoff**2)
    forces = jnp.sum(pair_force_over_r(r2, inside)[..., None] * delta, axis=1)
    refused = (jnp.sum(lengths, axis=1) > grid.capacity) | jnp.any(inside & (r2 < CORRUPT_SEPARATION**2), axis=1)
    return jnp.where(refused[:, None], jnp.nan, forces)


def all_pair_forces(positions, *, box: float, r_cutoff: float):
    """jax-md's dense all-pairs forces [A, 3]: O(A^2), the independent reference."""
    from jax_md import quantity, smap, space

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
    from jax_md import partition, quantity, smap, space

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
    from jax_md import minimize

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
    the box, and the two neighbour lists used, whose capacities the next call reuses. With
    `simulate.minimiser: lammps` LAMMPS minimises the same placement (0.06 s a start at 800 atoms
    against 1.5 s here on a CPU, benchmarks/lennard_jones_starts.py), and the lists stay as they were."""
    placement, dtype = rng.uniform(0.0, sim.box, (settings["atoms"], 3)), jnp.zeros(()).dtype
    if settings["minimiser"] == "lammps":
        return lammps_md.minimised_positions(settings, placement).astype(dtype), lists
    positions = jnp.asarray(placement, dtype=dtype)
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


ENGINES = {"jax-md": integrate, "lammps": lammps_md.integrate}  # simulate.engine -> integrate(settings, x0, ...)


# ---------------------------------------------------------------------------------------
def build(settings: dict, grid: CellGrid | None = None) -> System:
    """The System of `systems.lennard_jones`, whose ENGINE this module is; its partial forces
    search `grid` (by default one sized for a liquid at the settings' density)."""
    atoms, r_cutoff = settings["atoms"], settings["r_cutoff"]
    box = box_length(settings)
    grid = grid or cell_grid(box, r_cutoff, settings["density"])
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

    @jax.jit
    @jax.vmap
    def needed_capacity(x, units):
        return jnp.max(candidate_counts(split_state(x, atoms)[0], units, box=box, r_cutoff=r_cutoff, grid=grid))

    def fit_partial(states, units):
        """This System with partial-force slots for the batch (states [B, N], units [B, k]), or
        None where its own suffice or no configuration without a pair nearer than
        MIN_SEPARATION needs that many (an overfull region stays NaN, for the sampler to refuse)."""
        needed = int(jnp.max(needed_capacity(states, units)))
        grown = fitted_grid(grid, needed)
        if grown is None:
            return None
        log.info("partial forces: %d candidate slots per atom needed, %d held; growing to %d", needed, grid.capacity, grown.capacity)
        return build(settings, grown)

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
        fit_partial=fit_partial,
        unit_rows=unit_rows,
        observables=observables,
        time_step=settings["dt"],
        integrate=partial(ENGINES[settings["engine"]], settings),
        dof_labels={"atom": ("atom of the row", np.tile(np.repeat(np.arange(atoms, dtype=np.int64), 3), 2)),
                    "component": ("position (x, y, z) or velocity (vx, vy, vz) component of the row",
                                  np.repeat(COMPONENTS.reshape(2, 1, 3), atoms, axis=1).ravel())},
        units={"time": "tau (reduced Lennard-Jones units)",
               "state": "sigma (positions), sigma/tau (velocities): reduced Lennard-Jones units",
               "force": "sigma/tau (position rows), sigma/tau^2 (velocity rows): reduced Lennard-Jones units"},
    )
