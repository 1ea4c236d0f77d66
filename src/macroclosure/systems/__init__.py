"""Microscopic systems behind one small interface.

A system is a `System` record of pure functions. JAX functions (`rhs`, `partial_rhs`) act
on one state vector `x [N]`; callers vmap them over batches. `observables` is torch, so the
closure encoder can differentiate through it. Downstream stages rebuild a system from the
settings recorded in the trajectory store, so the store is the single source of truth.
"""

from __future__ import annotations

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


def _registry() -> dict:
    from macroclosure.systems import allen_cahn, lennard_jones, predator_prey

    return {"predator_prey": predator_prey, "allen_cahn": allen_cahn, "lennard_jones": lennard_jones}


def known_systems() -> list[str]:
    return sorted(_registry())


def _module(name: str):
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"unknown system '{name}'; known systems: {', '.join(known_systems())}") from None


def dimensions(name: str, settings: dict) -> Dimensions:
    """Sizes of system `name` with simulation settings `settings`."""
    return _module(name).dimensions(settings)


def setting_problems(name: str, settings: dict) -> dict[str, str]:
    """{simulate key: why} for settings of system `name` that validate but cannot run."""
    check = getattr(_module(name), "setting_problems", None)
    return check(settings) if check else {}


def build_system(name: str, settings: dict) -> System:
    """The system `name` with simulation settings `settings`."""
    return _module(name).build(settings)


def system_of(ds) -> System:
    """Rebuild the system a trajectory store was simulated with, in the store's precision."""
    import json

    from macroclosure.runtime import use_float64

    use_float64(ds["state"].dtype == np.float64)
    return build_system(ds.attrs["system"], json.loads(ds.attrs["provenance"])["settings"])
