"""A user's own system, outside the package: the 1-D heat equation (README, "Extending").

    u_t = D u_xx

on `cells` cells of the unit interval (h = 1 / cells), Laplacian (1, -2, 1) / h^2, zero-flux
ends (ghost cell equal to the edge cell), RK4 step dt_over_h2 h^2 / D. State x = u, N = cells;
a force component needs only its cell and its two neighbours, so `partial_rhs` costs O(k).
The observable is the energy mean(u^2) / 2, which the diffusion dissipates.

A config runs it with `systems: {heat: {module: heat_equation, ...}}` where this module is
importable (tests/test_workflow.py puts tests/ on PYTHONPATH); nothing in the package names it.
"""

from __future__ import annotations

import numpy as np

from macroclosure.systems import Dimensions, System, simulate_schema

SETTINGS = simulate_schema(
    {
        "cells": {"type": "integer", "minimum": 3, "default": 32, "description": "grid cells (N = cells)"},
        "diffusion": {"$ref": "#/$defs/positive_number", "default": 1.0, "description": "diffusion coefficient D"},
        "dt_over_h2": {"$ref": "#/$defs/positive_number", "default": 0.2, "description": "RK4 time step in units of h^2 / D"},
    },
    steps=200, save_every=10, trajectories={"train": 8, "test": 2}, batch_size=16,
)
SIZE_KEY = "cells"
KIND = "grid"


def dimensions(settings: dict) -> Dimensions:
    cells = settings["cells"]
    return Dimensions(dof=cells, units=cells, rows_per_unit=1, observables=1, unit="coordinate")


def build(settings: dict) -> System:
    import jax.numpy as jnp
    import torch

    cells, diffusion = settings["cells"], settings["diffusion"]
    scale = diffusion * cells * cells  # D / h^2

    def rhs(x):
        """f(x) on all N values, by shifting the padded field."""
        padded = jnp.concatenate([x[:1], x, x[-1:]])
        return scale * ((padded[:-2] + padded[2:]) - 2.0 * x)

    def partial_rhs(x, units):
        """f(x) at the values `units` only, from a gather of their stencils: O(k)."""
        left = x[jnp.maximum(units - 1, 0)]
        right = x[jnp.minimum(units + 1, cells - 1)]
        return scale * ((left + right) - 2.0 * x[units])

    def initial_conditions(rng: np.random.Generator, count: int):
        """u = b0 + a0 cos(pi x) + c0 cos(3 pi x) at cell centres, a0, c0 ~ U(-1, 1), b0 ~ U(0, 1)."""
        a0, c0 = rng.uniform(-1.0, 1.0, count), rng.uniform(-1.0, 1.0, count)
        b0 = rng.uniform(0.0, 1.0, count)
        centres = (np.arange(cells) + 0.5) / cells
        u = b0[:, None] + a0[:, None] * np.cos(np.pi * centres) + c0[:, None] * np.cos(3 * np.pi * centres)
        return u, {"a0": a0, "b0": b0, "c0": c0}

    def observables(x: torch.Tensor) -> torch.Tensor:
        """The energy mean(u^2) / 2 [..., 1]."""
        return (0.5 * x.square().mean(-1)).unsqueeze(-1)

    return System(
        name="heat_equation",
        settings=dict(settings),
        dims=dimensions(settings),
        observable_names=("energy",),
        layout={"field": "u", "cells": cells},
        initial_conditions=initial_conditions,
        rhs=rhs,
        partial_rhs=partial_rhs,
        unit_rows=lambda units: units,
        observables=observables,
        time_step=settings["dt_over_h2"] / (diffusion * cells * cells),
    )
