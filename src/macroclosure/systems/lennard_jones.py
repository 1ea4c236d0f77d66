"""Lennard-Jones fluid in a periodic cube (METHOD.md, system 3): the plug-in's description.

Reduced units (sigma = epsilon = m = 1), truncated and unshifted pair potential, state x =
(unwrapped positions, velocities), N = 6 atoms; the sampling unit is the atom. What planning
and validation read lives here; the physics (jax-md) lives in `macroclosure.lennard_jones_md`
(ENGINE), imported only when the system is built, which integrates with jax-md or LAMMPS
(`macroclosure.lammps_md`) as `simulate.engine` says.
"""

from __future__ import annotations

from macroclosure.systems import Dimensions, simulate_schema

SETTINGS = simulate_schema(
    {
        "atoms": {"type": "integer", "minimum": 2, "default": 800,
                  "description": "atoms in the periodic cube (N = 6 atoms; published 800 to 51 200)"},
        "density": {"$ref": "#/$defs/positive_number", "default": 0.8, "description": "atoms per unit volume (sets the box length)"},
        "r_cutoff": {"$ref": "#/$defs/positive_number", "default": 2.5,
                     "description": "truncation radius of the unshifted LJ pair potential"},
        "skin": {"$ref": "#/$defs/positive_number", "default": 0.3, "description": "neighbour-list skin beyond r_cutoff"},
        "temperature": {"type": "array", "items": {"$ref": "#/$defs/positive_number"}, "minItems": 2, "maxItems": 2,
                        "default": [0.5, 1.5], "description": "initial temperatures are drawn uniformly from [low, high]"},
        "minimise_steps": {"$ref": "#/$defs/positive_int", "default": 500,
                           "description": "FIRE steps of each minimisation (soft spheres, then LJ) after random placement"},
        "minimiser": {"enum": ["jax-md", "lammps"], "default": "jax-md",
                      "description": "who minimises the random placements (the same two FIRE stages): jax-md, or LAMMPS "
                                     "(about 25x faster on a CPU; other starts from the same seed, same velocities)"},
        "dt": {"$ref": "#/$defs/positive_number", "default": 0.001, "description": "velocity-Verlet time step"},
        "engine": {"enum": ["lammps", "jax-md"], "default": "lammps",
                   "description": "molecular-dynamics engine: LAMMPS (lj/cut, float64, on the job's threads; the faster "
                                  "on CPUs) or jax-md (neighbour lists, jit-compiled; for GPUs). Same starts, same store"},
        "shared_start": {"type": "boolean", "default": False,
                         "description": "every trajectory starts from the same minimised placement and the same velocity "
                                        "pattern, scaled to its initial temperature (the published data design); default: "
                                        "independent starts"},
        "source": {"type": "object", "additionalProperties": False, "required": ["train", "test"],
                   "properties": {split: {"type": "string", "minLength": 1} for split in ("train", "test")},
                   "description": "imported trajectory stores to use instead of simulating ({train: path, test: path}, "
                                  "written by `macroclosure import`); the other keys must describe them"},
    },
    steps=250, save_every=5, trajectories={"train": 90, "test": 10}, batch_size=8, dtype="float32",
    notes={"steps": "velocity-Verlet steps per trajectory", "batch_size": "trajectories written to the store at once"},
)
SIZE_KEY = "atoms"
KIND = "particles"
ENGINE = "macroclosure.lennard_jones_md"  # builds the System with jax-md


def dimensions(settings: dict) -> Dimensions:
    atoms = settings["atoms"]
    return Dimensions(dof=6 * atoms, units=atoms, rows_per_unit=6, observables=1, unit="atom")


def setting_problems(settings: dict) -> dict[str, str]:
    """Settings the schema accepts but the physics cannot: {key: why}."""
    problems = {}
    reach = settings["r_cutoff"] + settings["skin"]
    if box_length(settings) < 2 * reach:
        problems["atoms"] = (
            f"{settings['atoms']} atoms at density {settings['density']} make a box of side "
            f"{box_length(settings):.3g}, smaller than 2 (r_cutoff + skin) = {2 * reach:.3g}, so an atom "
            "would meet its own periodic image"
        )
    low, high = settings["temperature"]
    if low > high:
        problems["temperature"] = f"low {low} exceeds high {high}"
    return problems


def box_length(settings: dict) -> float:
    return (settings["atoms"] / settings["density"]) ** (1.0 / 3.0)
