"""Predator-prey reaction-diffusion on a 1-D grid (METHOD.md, system 1).

    u_t = D u_xx + u (1 - u - v),    v_t = v_xx + a v (u - b)

on `cells` cells per species, Laplacian (1, -2, 1) in grid units, zero-flux ends (ghost cell
equal to the edge cell). State x = (u, v), N = 2 cells. A force component needs only its
cell, its two neighbours and the other species at its cell (`stencil`), so `partial_rhs`
gathers those and costs O(k).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from macroclosure.systems import Dimensions, System, simulate_schema

if TYPE_CHECKING:
    import torch

SETTINGS = simulate_schema(
    {
        "cells": {"type": "integer", "minimum": 3, "default": 50, "description": "grid cells per species (N = 2 cells)"},
        "a": {"type": "number", "default": 3.0},
        "b": {"type": "number", "default": 0.4},
        "diffusion_u": {"type": "number", "minimum": 0, "default": 0.0, "description": "diffusion coefficient of u (v has 1)"},
        "dt": {"$ref": "#/$defs/positive_number", "default": 0.01},
    },
    steps=3000, save_every=10, trajectories={"train": 40, "test": 10}, batch_size=64,
)
SIZE_KEY = "cells"
KIND = "grid"


def dimensions(settings: dict) -> Dimensions:
    cells = settings["cells"]
    return Dimensions(dof=2 * cells, units=2 * cells, rows_per_unit=1, observables=2, unit="coordinate")


def stencil(settings: dict, units, xp=np):
    """The rows a unit's force reads, [k, 5]: its left, own and right value in its field (the edge
    cell repeated at the zero-flux ends), then u and v at its cell; and the force law it follows,
    [k]: its field (0 prey, 1 predator). `xp` is the array module (numpy, or jax.numpy under jit)."""
    cells = settings["cells"]
    field, cell = units // cells, units % cells
    base = field * cells
    rows = xp.stack([base + xp.maximum(cell - 1, 0), units, base + xp.minimum(cell + 1, cells - 1), cell, cells + cell], axis=-1)
    return rows, field


def _rate(species, left, centre, right, u, v, a, b, diffusion_u):
    """The rate of one grid value from its stencil; shared by the full and partial force."""
    import jax.numpy as jnp

    laplacian = (left + right) - 2.0 * centre
    prey = diffusion_u * laplacian + u * (1.0 - u - v)
    predator = laplacian + a * v * (u - b)
    return jnp.where(species == 0, prey, predator)


def build(settings: dict) -> System:
    import jax.numpy as jnp
    import torch

    cells = settings["cells"]
    a, b, diffusion_u = settings["a"], settings["b"], settings["diffusion_u"]
    species = jnp.repeat(jnp.arange(2), cells)

    def rhs(x):
        """f(x) on all N values, by shifting whole arrays."""
        fields = x.reshape(2, cells)
        padded = jnp.concatenate([fields[:, :1], fields, fields[:, -1:]], axis=1)
        u = jnp.tile(fields[0], 2)
        v = jnp.tile(fields[1], 2)
        return _rate(species, padded[:, :-2].ravel(), x, padded[:, 2:].ravel(), u, v, a, b, diffusion_u)

    def partial_rhs(x, units):
        """f(x) at the values `units` only, from a gather of their stencils: O(k)."""
        rows, field = stencil(settings, units, jnp)
        return _rate(field, *x[rows].T, a, b, diffusion_u)

    def initial_conditions(rng: np.random.Generator, count: int):
        """u = b0 + a0 cos(5 pi x), v = 1 - u at cell centres; a0 ~ U(0, 0.2), b0 ~ U(0.4, 0.6)."""
        a0 = rng.uniform(0.0, 0.2, count)
        b0 = rng.uniform(0.4, 0.6, count)
        centres = (np.arange(cells) + 0.5) / cells
        u = b0[:, None] + a0[:, None] * np.cos(5 * np.pi * centres)[None, :]
        return np.concatenate([u, 1.0 - u], axis=1), {"a0": a0, "b0": b0}

    def observables(x: torch.Tensor) -> torch.Tensor:
        """Spatial means of u and v."""
        return torch.stack([x[..., :cells].mean(-1), x[..., cells:].mean(-1)], dim=-1)

    return System(
        name="predator_prey",
        settings=dict(settings),
        dims=dimensions(settings),
        observable_names=("mean_u", "mean_v"),
        layout={"fields": ["u", "v"], "cells": cells},
        initial_conditions=initial_conditions,
        rhs=rhs,
        partial_rhs=partial_rhs,
        unit_rows=lambda units: units,
        stencil=lambda units: stencil(settings, units),
        observables=observables,
        time_step=settings["dt"],
        dof_labels={"field": ("species of the row", np.repeat(np.array(["u", "v"], dtype=object), cells)),
                    "cell": ("grid cell of the row", np.tile(np.arange(cells, dtype=np.int64), 2))},
        units={"time": "1", "state": "1", "force": "1"},  # the equations are nondimensional
    )
