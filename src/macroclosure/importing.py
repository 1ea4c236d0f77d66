"""Users' own molecular dynamics as trajectory stores of the Lennard-Jones system.

`import_trajectories` (`macroclosure import`) reads LAMMPS text dumps (`dump custom` with
`id`, unwrapped `xu yu zu` or wrapped `x y z` with image flags `ix iy iz`, and `vx vy vz`) or
extended-XYZ files (through ASE) and writes the store the simulate stage writes: state =
(unwrapped positions, velocities) per atom sorted by id, the saved times, T0 per trajectory,
the settings it matches and where it came from (file names and their SHA-256). Each file is
one trajectory, or `frames_per_trajectory` consecutive frames of a file are one.

The file must be a trajectory of the configured system: its atoms, its cubic periodic box (the
side atoms / density give) and the spacing of its frames (`save_every` steps, or dt x
save_every in time) are checked where the file has them, and taken from the settings where it
has not (an extended-XYZ file without a lattice or a time). What cannot be made into the
contract (wrapped positions without image flags, no velocities, another box) is refused,
naming the file and the reason.

`adopt` (`macroclosure adopt`, the rule behind `simulate.source`) checks an imported store
with the store checks and against the run's simulate settings, then copies it into place, so
the later stages read it as if simulated.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from macroclosure.config import complete_section
from macroclosure.runtime import log, provenance
from macroclosure.store import StoreError, atomic_directory, open_store, store_folder, streamed_store
from macroclosure.systems.lennard_jones import box_length

SYSTEM = "lennard_jones"
RELATIVE_TOLERANCE = 1e-6  # box sides and frame times as text files print them
FORMATS = ("lammps", "extxyz")
EXTXYZ_SUFFIXES = (".xyz", ".extxyz")
DUMP_ITEMS = ("TIMESTEP", "TIME", "UNITS", "NUMBER OF ATOMS", "BOX BOUNDS", "ATOMS")
# simulate settings an adopted store must share with the run (what the later stages rebuild the
# system from, and the sizes the planning and the resource estimates read)
ADOPTED_KEYS = ("atoms", "density", "r_cutoff", "dt", "save_every", "steps", "dtype")


class TrajectoryFileError(ValueError):
    """A file that is not a trajectory of the configured Lennard-Jones system."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


class Frames(NamedTuple):
    """Frames of one file, atoms sorted by id; what the file does not say is None."""

    ids: np.ndarray  # [atoms]
    positions: np.ndarray  # [frames, atoms, 3], unwrapped
    velocities: np.ndarray  # [frames, atoms, 3]
    box: float | None  # side of the cubic periodic box
    steps: np.ndarray | None  # [frames] integrator step of each frame
    times: np.ndarray | None  # [frames] time of each frame


# --- LAMMPS text dumps -------------------------------------------------------------------
def dump_items(path: Path) -> list[dict[str, tuple[list[str], list[str]]]]:
    """The frames of a LAMMPS text dump, each {item: (words after the item's name, its lines)}."""
    lines = path.read_text().splitlines()
    frames, at = [], 0
    while at < len(lines):
        text = lines[at].removeprefix("ITEM: ")
        name = next((item for item in DUMP_ITEMS if text == item or text.startswith(item + " ")), None)
        if not lines[at].startswith("ITEM: ") or name is None:
            raise TrajectoryFileError(path, f"line {at + 1} is not an item of a text dump ({lines[at][:60]!r}); "
                                            "expected a LAMMPS `dump custom` file")
        if name == "TIMESTEP":
            frames.append({})
        if not frames:
            raise TrajectoryFileError(path, "does not start with ITEM: TIMESTEP")
        if name == "ATOMS":
            if "NUMBER OF ATOMS" not in frames[-1]:
                raise TrajectoryFileError(path, f"line {at + 1}: ITEM: ATOMS before ITEM: NUMBER OF ATOMS")
            end = at + 1 + int(frames[-1]["NUMBER OF ATOMS"][1][0])
        else:
            end = next((line for line in range(at + 1, len(lines)) if lines[line].startswith("ITEM: ")), len(lines))
        frames[-1][name] = (text[len(name):].split(), lines[at + 1 : end])
        at = end
    return frames


def dump_box(path: Path, words: list[str], bounds: list[str]) -> tuple[float, np.ndarray]:
    """(side, lower corner [3]) of a dump's box; refused unless orthogonal, periodic and cubic."""
    if "xy" in words:
        raise TrajectoryFileError(path, "has a triclinic box; the Lennard-Jones system is a cube")
    if words[-3:] != ["pp", "pp", "pp"]:
        raise TrajectoryFileError(path, f"has boundaries {' '.join(words[-3:])}; the Lennard-Jones box is periodic "
                                        "along x, y and z (pp pp pp)")
    low, high = np.array([line.split()[:2] for line in bounds], dtype=float).T
    sides = high - low
    if not np.allclose(sides, sides[0], rtol=RELATIVE_TOLERANCE):
        raise TrajectoryFileError(path, f"has a box of sides {', '.join(f'{side:.6g}' for side in sides)}, not a cube")
    return float(sides[0]), low


def atom_table(path: Path, frame: dict, step: int) -> tuple[list[str], np.ndarray]:
    """(column names, values [atoms, columns]) of one frame's ATOMS item."""
    columns, rows = frame["ATOMS"]
    try:
        return columns, np.array(" ".join(rows).split(), dtype=float).reshape(len(rows), len(columns))
    except ValueError:
        raise TrajectoryFileError(path, f"the atoms of step {step} are not a table of {len(columns)} numbers "
                                        f"per atom ({' '.join(columns)})") from None


def columns_of(table: np.ndarray, columns: list[str], names: tuple[str, ...]) -> np.ndarray:
    """The named columns [atoms, len(names)] of an atom table."""
    return table[:, [columns.index(name) for name in names]]


def unwrapped_positions(path: Path, table: np.ndarray, columns: list[str], side: float, low: np.ndarray) -> np.ndarray:
    """Unwrapped positions [atoms, 3] from the box's lower corner: xu yu zu, or x y z plus
    image flags ix iy iz times the side."""
    if {"xu", "yu", "zu"} <= set(columns):
        return columns_of(table, columns, ("xu", "yu", "zu")) - low
    if {"x", "y", "z"} <= set(columns):
        if not {"ix", "iy", "iz"} <= set(columns):
            raise TrajectoryFileError(path, "holds wrapped positions (x y z) without image flags (ix iy iz), so the "
                                            "unwrapped positions cannot be recovered; dump xu yu zu, or x y z ix iy iz")
        images = columns_of(table, columns, ("ix", "iy", "iz"))
        return columns_of(table, columns, ("x", "y", "z")) - low + side * images
    raise TrajectoryFileError(path, "holds no positions: dump xu yu zu, or x y z with ix iy iz")


def lammps_frames(path: Path) -> Frames:
    """Every frame of a LAMMPS text dump (`dump custom`), atoms sorted by id."""
    frames = dump_items(path)
    incomplete = next((number for number, frame in enumerate(frames) if not set(DUMP_ITEMS[3:]) <= set(frame)), None)
    if not frames or incomplete is not None:
        raise TrajectoryFileError(path, f"frame {incomplete or 0} lacks one of the items {', '.join(DUMP_ITEMS[3:])}")
    steps = np.array([int(frame["TIMESTEP"][1][0]) for frame in frames])
    first_columns = frames[0]["ATOMS"][0]
    for names, what in ((("vx", "vy", "vz"), "the velocity column(s)"), (("id",), "the column")):
        missing = [name for name in names if name not in first_columns]
        if missing:
            raise TrajectoryFileError(path, f"lacks {what} {' '.join(missing)} (the dump needs id, positions and vx vy vz)")
    ids, positions, velocities, sides = None, [], [], []
    for frame, step in zip(frames, steps):
        side, low = dump_box(path, *frame["BOX BOUNDS"])
        columns, table = atom_table(path, frame, step)
        if columns != first_columns:
            raise TrajectoryFileError(path, f"changes its columns at step {step} ({' '.join(columns)})")
        order = np.argsort(table[:, columns.index("id")], kind="stable")
        table = table[order]
        frame_ids = table[:, columns.index("id")].astype(np.int64)
        if ids is not None and not np.array_equal(frame_ids, ids):
            raise TrajectoryFileError(path, f"holds other atom ids at step {step} than at step {steps[0]}")
        if "type" in columns and np.unique(table[:, columns.index("type")]).size > 1:
            raise TrajectoryFileError(path, "holds several atom types; the Lennard-Jones system has one")
        ids = frame_ids
        positions.append(unwrapped_positions(path, table, columns, side, low))
        velocities.append(columns_of(table, columns, ("vx", "vy", "vz")))
        sides.append(side)
    if not np.allclose(sides, sides[0], rtol=RELATIVE_TOLERANCE):
        raise TrajectoryFileError(path, f"changes its box from side {sides[0]:.6g} to {max(sides, key=lambda s: abs(s - sides[0])):.6g}")
    times = np.array([float(frame["TIME"][1][0]) for frame in frames]) if all("TIME" in frame for frame in frames) else None
    return Frames(ids, np.stack(positions), np.stack(velocities), sides[0], steps, times)


# --- extended XYZ ------------------------------------------------------------------------
def extxyz_frames(path: Path) -> Frames:
    """Every frame of an extended-XYZ file (read by ASE), atoms sorted by an `id` column where
    there is one. Velocities from a `velocities` column, else ASE's momenta / masses; the
    time from the comment line's `time` (or `Time`); the box from the lattice."""
    from ase.io import read

    try:
        images = read(path, index=":", format="extxyz")
    except Exception as error:  # ASE raises many types for malformed files
        raise TrajectoryFileError(path, f"cannot be read as extended XYZ: {error}") from error
    if not images:
        raise TrajectoryFileError(path, "holds no frame")
    first = images[0]
    if "velocities" not in first.arrays and "momenta" not in first.arrays:
        raise TrajectoryFileError(path, "lacks velocities: a 'velocities' or a 'momenta' column (ASE's writer) is needed")
    if np.unique(first.numbers).size > 1:
        raise TrajectoryFileError(path, "holds several species; the Lennard-Jones system has one")
    ids, positions, velocities = None, [], []
    for number, atoms in enumerate(images):
        if len(atoms) != len(first):
            raise TrajectoryFileError(path, f"frame {number} holds {len(atoms)} atoms, frame 0 {len(first)}")
        order = np.argsort(atoms.arrays["id"], kind="stable") if "id" in atoms.arrays else np.arange(len(atoms))
        frame_ids = atoms.arrays["id"][order] if "id" in atoms.arrays else order
        if ids is not None and not np.array_equal(frame_ids, ids):
            raise TrajectoryFileError(path, f"holds other atom ids in frame {number} than in frame 0")
        ids = frame_ids
        velocity = atoms.arrays["velocities"] if "velocities" in atoms.arrays else atoms.get_velocities()
        positions.append(atoms.positions[order])
        velocities.append(velocity[order])
    times = [atoms.info.get("time", atoms.info.get("Time")) for atoms in images]
    return Frames(ids, np.stack(positions), np.stack(velocities), extxyz_box(path, first), None,
                  np.array(times, dtype=float) if None not in times else None)


def extxyz_box(path: Path, atoms) -> float | None:
    """Side of the cubic periodic lattice of a frame; None where the file has no lattice."""
    cell = np.asarray(atoms.cell)
    if not cell.any():
        return None
    side = cell[0, 0]
    if not (atoms.pbc.all() and np.allclose(cell, side * np.eye(3), rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * side)):
        raise TrajectoryFileError(path, f"has a lattice {cell.tolist()} with pbc {atoms.pbc.tolist()}; the "
                                        "Lennard-Jones box is a periodic cube")
    return float(side)


# --- checks against the settings -----------------------------------------------------------
def split_frames(frames: Frames, per_trajectory: int | None, path: Path) -> list[Frames]:
    """The trajectories of one file: all its frames, or runs of `per_trajectory` frames."""
    count = len(frames.positions)
    per = per_trajectory or count
    if count % per:
        raise TrajectoryFileError(path, f"holds {count} frames, not a multiple of {per} frames per trajectory")

    def part(values, start):
        return None if values is None else values[start : start + per]

    return [Frames(frames.ids, part(frames.positions, start), part(frames.velocities, start), frames.box,
                   part(frames.steps, start), part(frames.times, start)) for start in range(0, count, per)]


def even_spacing(path: Path, values: np.ndarray, what: str) -> float:
    """The one spacing of a trajectory's frame steps or times; refused where they are uneven."""
    spacing = np.diff(values)
    if not np.allclose(spacing, spacing[0], rtol=RELATIVE_TOLERANCE):
        raise TrajectoryFileError(path, f"holds frames at uneven {what} ({', '.join(f'{value:g}' for value in values[:6])}, ...)")
    return float(spacing[0])


def trajectory_problems(trajectory: Frames, settings: dict) -> list[str]:
    """What of one trajectory disagrees with the simulate settings, each naming both values."""
    atoms, frames = trajectory.positions.shape[1], len(trajectory.positions)
    problems = []
    if frames < 2:
        problems.append(f"a trajectory of {frames} frame; at least 2 are needed")
    if atoms != settings["atoms"]:
        problems.append(f"{atoms} atoms, but simulate.atoms is {settings['atoms']}")
    side = box_length(settings)
    if trajectory.box is not None and not math.isclose(trajectory.box, side, rel_tol=RELATIVE_TOLERANCE):
        problems.append(f"a box of side {trajectory.box:.6g}, but atoms / density = {settings['atoms']} / "
                        f"{settings['density']} of the settings make a side of {side:.6g}")
    return problems


def spacing_problems(path: Path, trajectory: Frames, settings: dict) -> list[str]:
    """Frame spacings that disagree with save_every steps of dt, each naming both values."""
    problems = []
    if trajectory.steps is not None and len(trajectory.steps) > 1:
        every = even_spacing(path, trajectory.steps, "steps")
        if every != settings["save_every"]:
            problems.append(f"frames every {every:g} steps, but simulate.save_every is {settings['save_every']}")
    if trajectory.times is not None and len(trajectory.times) > 1:
        interval, expected = even_spacing(path, trajectory.times, "times"), settings["dt"] * settings["save_every"]
        if not math.isclose(interval, expected, rel_tol=RELATIVE_TOLERANCE):
            problems.append(f"frames every {interval:g} in time, but dt x save_every = {settings['dt']:g} x "
                            f"{settings['save_every']} = {expected:g} in the settings")
    return problems


def first_wrap(trajectory: Frames, side: float) -> str | None:
    """Where an atom jumps by more than half the box between frames, which unwrapped positions
    saved every few steps never do: the positions were folded back into the box."""
    jumps = np.abs(np.diff(trajectory.positions, axis=0)).max(axis=-1)  # [frames - 1, atoms]
    frame, atom = np.unravel_index(np.argmax(jumps), jumps.shape) if jumps.size else (0, 0)
    if not jumps.size or jumps[frame, atom] <= side / 2:
        return None
    return (f"atom {trajectory.ids[atom]} moves {jumps[frame, atom]:.3g} between frames {frame} and {frame + 1}, "
            f"more than half the box ({side / 2:.3g}): the positions are wrapped, not unwrapped")


def checked(path: Path, trajectory: Frames, settings: dict) -> Frames:
    """The trajectory, or TrajectoryFileError naming the file and every disagreement."""
    problems = trajectory_problems(trajectory, settings) + spacing_problems(path, trajectory, settings)
    if not problems:
        problems = [problem for problem in [first_wrap(trajectory, box_length(settings))] if problem]
    if problems:
        raise TrajectoryFileError(path, "holds " + "; ".join(problems))
    return trajectory


# --- the store ---------------------------------------------------------------------------
def file_format(path: Path, requested: str | None) -> str:
    """The format asked for, else extxyz for .xyz / .extxyz files and a LAMMPS dump otherwise."""
    return requested or ("extxyz" if path.suffix.lower() in EXTXYZ_SUFFIXES else "lammps")


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the files' bytes, in the order given (the order of the trajectories)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def import_trajectories(files: list[str], out: str, split: str, settings: dict, frames_per_trajectory: int | None = None,
                        requested_format: str | None = None) -> None:
    """Write the trajectories of `files` as the `split` trajectory store of the Lennard-Jones
    system with simulate settings `settings` (partial: defaults filled in), file by file."""
    from macroclosure.lennard_jones_md import temperature_of
    from macroclosure.simulate import block_of
    from macroclosure.systems import build_system

    settings = {key: value for key, value in complete_section(SYSTEM, "simulate", settings).items() if key != "source"}
    paths = [Path(name) for name in files]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise TrajectoryFileError(", ".join(missing), "no such file")
    readers = {"lammps": lammps_frames, "extxyz": extxyz_frames}
    formats = [file_format(path, requested_format) for path in paths]
    system = build_system(SYSTEM, settings)  # the state's layout, row labels and units
    first, frame_count = 0, None
    with streamed_store(out, "trajectories", {}, append_dim="trajectory") as append:
        for path, found in zip(paths, formats):
            log.info("reading %s (%s)", path, found)
            for trajectory in split_frames(readers[found](path), frames_per_trajectory, path):
                trajectory = checked(path, trajectory, settings)
                if frame_count not in (None, len(trajectory.positions)):
                    raise TrajectoryFileError(path, f"holds trajectories of {len(trajectory.positions)} frames, "
                                                    f"the files before it {frame_count}; a store's trajectories share their times")
                frame_count = len(trajectory.positions)
                settings |= {"steps": (frame_count - 1) * settings["save_every"],
                             "trajectories": settings["trajectories"] | {split: first + 1}}
                state = np.concatenate([trajectory.positions.reshape(frame_count, -1),
                                        trajectory.velocities.reshape(frame_count, -1)], axis=1)
                time = np.arange(frame_count) * settings["save_every"] * settings["dt"]
                initial = {"initial_temperature": np.array([temperature_of(trajectory.velocities[0])])}
                block = block_of(system, state[None].astype(settings["dtype"]), initial, time, 0)
                append(block.assign_coords(trajectory=block["trajectory"].copy(data=block["trajectory"].values + first))
                       .assign_attrs(store_attributes(system, settings, split, paths, formats)))
                first += 1
    log.info("wrote %d %s trajectories of %d frames to %s", first, split, frame_count, out)


def store_attributes(system, settings: dict, split: str, paths: list[Path], formats: list[str]) -> dict:
    """What the simulate stage records, with the integrator 'imported' and the source files
    (names, formats, SHA-256) in the provenance."""
    record = provenance(settings, None, "none (imported from files)")
    record["source"] = {"files": [str(path) for path in paths], "formats": formats, "sha256": files_digest(paths)}
    return {"system": SYSTEM, "split": split, "integrator": "imported", "dt": settings["dt"],
            "save_every": settings["save_every"], "dof_layout": json.dumps(system.layout),
            "provenance": json.dumps(record, sort_keys=True)}


# --- adopting an imported store into a run -------------------------------------------------
def adoption_problems(ds, split: str, settings: dict) -> list[str]:
    """What of a trajectory store disagrees with the run's simulate settings, naming both values."""
    recorded = json.loads(ds.attrs["provenance"])["settings"]
    found = {key: recorded.get(key) for key in ADOPTED_KEYS}
    found |= {"steps": (ds.sizes["time"] - 1) * recorded["save_every"], "dtype": str(ds["state"].dtype)}
    expected = {key: settings[key] for key in ADOPTED_KEYS}
    found[f"trajectories.{split}"], expected[f"trajectories.{split}"] = ds.sizes["trajectory"], settings["trajectories"][split]
    problems = [f"{key} {found[key]} in the store, {expected[key]} in simulate.{key}" for key in expected
                if not (found[key] == expected[key] or isinstance(found[key], float) and math.isclose(found[key], expected[key]))]
    if ds.attrs.get("split") != split:
        problems.append(f"it holds the '{ds.attrs.get('split')}' split, named as the {split} source")
    if ds.sizes["dof"] != 6 * recorded["atoms"]:
        problems.append(f"{ds.sizes['dof']} state rows, not 6 x {recorded['atoms']} atoms")
    return problems


def adopt(source: str, out: str, split: str, settings: dict) -> None:
    """Check the trajectory store `source` (store checks, then the run's simulate `settings`)
    and copy it to `out`, atomically."""
    settings = complete_section(SYSTEM, "simulate", settings)
    ds = open_store(source, "trajectories", system=SYSTEM)
    problems = adoption_problems(ds, split, settings)
    if problems:
        raise StoreError(store_folder(source), "does not match the run's simulate settings: " + "; ".join(problems))
    with atomic_directory(store_folder(out)) as temporary:
        shutil.copytree(store_folder(source), temporary, copy_function=shutil.copyfile)
    log.info("adopted %s as %s", source, out)
