"""Microscopic systems behind one small interface.

A system is a `System` record of pure functions. JAX functions (`rhs`, `partial_rhs`) act
on one state vector `x [N]`; callers vmap them over batches. `observables` is torch, so the
closure encoder can differentiate through it. Downstream stages rebuild a system from the
settings recorded in the trajectory store, so the store is the single source of truth.

Each module of this package is one system and describes itself (`PLUGIN_ATTRIBUTES`): the
configuration schema, the planning and the resource estimates are assembled from these
modules, so adding a system is one module plus a config block. A user's own system is any
importable module with the same attributes, named by a config's `module:` key. Planning
imports every configured system's module, so a module imports JAX, jax-md and torch inside
`build` only, which keeps `snakemake -n` fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Callable, NamedTuple

import numpy as np


class Dimensions(NamedTuple):
    """Sizes of a system, computable from its settings without simulating."""

    dof: int  # N, length of the state vector
    units: int  # sampling units (grid values, atoms)
    rows_per_unit: int  # state rows whose rate one unit's force gives
    observables: int  # m, number of macroscopic observables
    unit: str  # what one force evaluation is: "coordinate" or "atom"


class System(NamedTuple):
    """A microscopic system: dx/dt = rhs(x), with partial forces and observables."""

    name: str
    settings: dict
    dims: Dimensions
    observable_names: tuple[str, ...]
    layout: dict  # how the state vector is laid out, recorded in the trajectory store
    initial_conditions: Callable[[np.random.Generator, int], tuple[np.ndarray, dict[str, np.ndarray]]]
    rhs: Callable  # x [N] -> f(x) [N]
    partial_rhs: Callable  # (x [N], units [k]) -> f(x)[unit_rows(units)], computed at O(k) cost
    unit_rows: Callable  # units [k] -> rows [k * rows_per_unit]
    observables: Callable  # torch x [..., N] -> [..., m]
    time_step: float | None = None  # integrator step the settings imply
    # (x0 [B, N], frames, save_every, chunk_frames, on_chunk) -> (states [B, frames + 1, N] or
    # None, first non-finite step [B]); None means the generic RK4 integration of `rhs`
    integrate: Callable | None = None
    # what each row of the state vector is, written as coordinates along `dof` of the
    # trajectory store: {name: (long_name, one label per row)}
    dof_labels: dict[str, tuple[str, np.ndarray]] | None = None
    # units of the stores' `time`, `state` and `force` (the rate dx/dt), as `units` attributes
    units: dict[str, str] | None = None
    # (states [B, N], units [B, k]) -> this System with `partial_rhs` buffers grown to serve the
    # batch exactly, or None where they already do or none would (what it could not compute
    # stays non-finite); None: `partial_rhs` has no data-dependent buffer (the grid systems)
    fit_partial: Callable | None = None
    # units [k] (numpy) -> (rows [k, s] that each unit's force reads, force law [k]): a grid's
    # stencil, the same function of those rows at every cell for each law (field), which the
    # L_xpc force surrogate learns; None where forces have no fixed stencil (particles).
    # A module with a stencil offers it as `stencil(settings, units, xp)`, so configs are checked
    # before any system is built
    stencil: Callable | None = None


def simulate_schema(properties: dict, *, steps: int, save_every: int, trajectories: dict, batch_size: int,
                    dtype: str = "float64", notes: dict[str, str] | None = None) -> dict:
    """The JSON schema of a system's `simulate:` section: the system's own `properties` and the
    keys the pipeline reads of every system (steps, save_every, trajectories, batch_size, seed,
    dtype) with the system's defaults; `notes` describes shared keys for that system."""
    shared = {
        "steps": {"$ref": "#/$defs/positive_int", "default": steps, "description": "integrator steps per trajectory"},
        "save_every": {"$ref": "#/$defs/positive_int", "default": save_every, "description": "steps between saved states"},
        "trajectories": {"$ref": "#/$defs/trajectory_counts", "default": trajectories},
        "batch_size": {"$ref": "#/$defs/positive_int", "default": batch_size, "description": "trajectories integrated at once"},
        "seed": {"type": "integer", "minimum": 0, "default": 0},
        "dtype": {"enum": ["float32", "float64"], "default": dtype},
    }
    described = {key: entry | {"description": notes[key]} if key in (notes or {}) else entry for key, entry in shared.items()}
    return {"type": "object", "additionalProperties": False, "default": {}, "properties": properties | described}


# What a system module provides (README, "Extending"): the schema of its `simulate:` section,
# the simulate key that sets its size (the efficiency grid's `sizes`), its kind and its sizes
# from its settings. It builds the System with `build(settings)`, its own or that of its
# ENGINE, a module named by the attribute and imported only then (where the physics needs
# heavy imports at module scope). `setting_problems(settings) -> {key: why}` is optional.
PLUGIN_ATTRIBUTES = ("SETTINGS", "SIZE_KEY", "KIND", "dimensions")
KINDS = ("grid", "particles")  # a grid system's closure reads x; a particle system may pool over atoms
_registered: dict[str, str] = {}  # systems of this process's config that name their own `module:`


def built_in_systems() -> list[str]:
    """The systems of this package: every module of it, one system each."""
    return sorted(found.name for found in pkgutil.iter_modules(__path__) if not found.name.startswith("_"))


def register(name: str, module: str) -> None:
    """Make `name` the system of the importable `module` in this process (a config's `module:`
    key); raises ValueError where the module cannot be imported or is not a system."""
    _checked(module, name)
    _registered[name] = module


def known_systems() -> list[str]:
    """The built-in systems and those registered in this process."""
    return sorted({*built_in_systems(), *_registered})


def module_of(name: str) -> str:
    """How the stages and the stores name system `name`: its own name where it is built in,
    else its importable module, which a job rebuilds it from without the config."""
    return name if name in built_in_systems() else _registered.get(name, name)


def plugin(name: str) -> ModuleType:
    """The module of system `name`: built in, registered, or importable by that name."""
    return _checked(f"macroclosure.systems.{name}" if name in built_in_systems() else module_of(name), name)


def _checked(module: str, name: str) -> ModuleType:
    """The imported `module`, checked to provide what a system must; ValueError where not."""
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        raise ValueError(f"unknown system '{name}' (known systems: {', '.join(known_systems())}; "
                         f"importing {module}: {error})") from None
    missing = [attribute for attribute in PLUGIN_ATTRIBUTES if not hasattr(found, attribute)]
    missing += [] if hasattr(found, "build") or hasattr(found, "ENGINE") else ["build (or ENGINE)"]
    if missing or getattr(found, "KIND", None) not in KINDS:
        raise ValueError(f"module {module} is not a system: it lacks {', '.join(missing) or 'a KIND'} "
                         f"(KIND one of {', '.join(KINDS)}; README, Extending)")
    return found


def dimensions(name: str, settings: dict) -> Dimensions:
    """Sizes of system `name` with simulation settings `settings`."""
    return plugin(name).dimensions(settings)


def setting_problems(name: str, settings: dict) -> dict[str, str]:
    """{simulate key: why} for settings of system `name` that validate but cannot run."""
    check = getattr(plugin(name), "setting_problems", None)
    return check(settings) if check else {}


def size_key(name: str) -> str:
    """The simulate key that sets the size of system `name` (what the efficiency grid varies)."""
    return plugin(name).SIZE_KEY


def build_system(name: str, settings: dict) -> System:
    """The system `name` with simulation settings `settings`, named `name` (a user's system by
    its module, as the stores, the metrics and the baselines record it)."""
    found = plugin(name)
    builder = importlib.import_module(found.ENGINE) if hasattr(found, "ENGINE") else found
    return builder.build(settings)._replace(name=name)


def system_of(ds) -> System:
    """Rebuild the system a trajectory store was simulated with, in the store's precision."""
    import json

    from macroclosure.runtime import use_float64

    use_float64(ds["state"].dtype == np.float64)
    return build_system(ds.attrs["system"], json.loads(ds.attrs["provenance"])["settings"])
