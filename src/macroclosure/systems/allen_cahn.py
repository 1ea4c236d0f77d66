"""Allen-Cahn on the unit square (METHOD.md, system 2).

    u_t = (u - u^3) / eps^2 + lap_h u

on `cells` x `cells` cells (cell-centred, h = 1 / cells), 5-point Laplacian, zero-flux
boundaries (ghost cell equal to the edge cell), eps = 10 h / (2 sqrt(2) artanh 0.9), RK4
step dt_over_h2 h^2. State x = u.ravel() (row-major), N = cells^2. A force component needs
only its cell and its four neighbours, so `partial_rhs` gathers those and costs O(k).

The free energy h^2 sum_cells (u^2 - 1)^2 / (4 eps^2) + h^2 sum_edges |(u_a - u_b) / h|^2 / 2
(interior edges only) makes the scheme an exact gradient flow: dE/du = -h^2 rhs(u).
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING

import numpy as np

from macroclosure.systems import Dimensions, System, simulate_schema

if TYPE_CHECKING:
    import torch

SETTINGS = simulate_schema(
    {
        "cells": {"type": "integer", "minimum": 3, "default": 24, "description": "grid cells per side n (N = n x n; published 200)"},
        "dt_over_h2": {"$ref": "#/$defs/positive_number", "default": 0.1, "description": "RK4 time step in units of h^2"},
    },
    steps=4000, save_every=40, trajectories={"train": 20, "test": 5}, batch_size=32,
    notes={"steps": "RK4 steps per trajectory (published 40 000)", "save_every": "steps between saved states (published 100)"},
)
SIZE_KEY = "cells"
KIND = "grid"


def dimensions(settings: dict) -> Dimensions:
    cells = settings["cells"]
    return Dimensions(dof=cells * cells, units=cells * cells, rows_per_unit=1, observables=1, unit="coordinate")


def interface_width(cells: int) -> float:
    """eps = 10 h / (2 sqrt(2) artanh 0.9): the tanh profile goes from -0.9 to 0.9 over 10 cells."""
    return 10.0 / cells / (2.0 * math.sqrt(2.0) * math.atanh(0.9))


def stencil(settings: dict, units, xp=np):
    """The rows a unit's force reads, [k, 5]: its own value, then west, east, north and south (the
    edge cell repeated at the zero-flux walls); and the force law it follows, [k] (one law, 0).
    `xp` is the array module (numpy, or jax.numpy under jit)."""
    cells = settings["cells"]
    row, col = units // cells, units % cells
    rows = xp.stack([units, row * cells + xp.maximum(col - 1, 0), row * cells + xp.minimum(col + 1, cells - 1),
                     xp.maximum(row - 1, 0) * cells + col, xp.minimum(row + 1, cells - 1) * cells + col], axis=-1)
    return rows, xp.zeros_like(units)


def _rate(centre, west, east, north, south, inv_h2, h2_over_eps2):
    """The rate of one grid value from its stencil; shared by the full and partial force.

    Written as (h^2 lap_h u + (h / eps)^2 u (1 - u)(1 + u)) / h^2 so that it holds a single
    multiply-add: XLA may fuse it into an FMA, but then in the full and partial force alike,
    which keeps the two bit-identical under jit too."""
    neighbours = (west + east) + (north + south) - ((centre + centre) + (centre + centre))
    reaction = centre * ((1.0 - centre) * (1.0 + centre))
    return (neighbours + reaction * h2_over_eps2) * inv_h2


def build(settings: dict) -> System:
    import jax.numpy as jnp
    import torch

    cells = settings["cells"]
    h = 1.0 / cells
    eps = interface_width(cells)
    inv_h2 = float(cells * cells)  # exact, unlike 1 / h**2
    h2_over_eps2 = (h * h) / (eps * eps)

    def rhs(x):
        """f(x) on all N values, by shifting whole arrays (edge padding)."""
        u = x.reshape(cells, cells)
        padded = jnp.pad(u, 1, mode="edge")
        west, east = padded[1:-1, :-2], padded[1:-1, 2:]
        north, south = padded[:-2, 1:-1], padded[2:, 1:-1]
        return _rate(u, west, east, north, south, inv_h2, h2_over_eps2).ravel()

    def partial_rhs(x, units):
        """f(x) at the values `units` only, from a gather of their stencils: O(k)."""
        rows, _ = stencil(settings, units, jnp)
        return _rate(*x[rows].T, inv_h2, h2_over_eps2)

    def initial_conditions(rng: np.random.Generator, count: int):
        """An annulus around (0.5, 0.5): u = tanh((r1 - r) / (sqrt(2) eps)) tanh((r - r2) / (sqrt(2) eps))
        at cell centres, r1 ~ U(0.30, 0.40), r2 ~ U(0.10, 0.15); u ~ +1 in the ring, -1 elsewhere."""
        r1 = rng.uniform(0.30, 0.40, count)
        r2 = rng.uniform(0.10, 0.15, count)
        centres = (np.arange(cells) + 0.5) * h - 0.5
        r = np.hypot(centres[:, None], centres[None, :]).ravel()
        width = math.sqrt(2.0) * eps
        u = np.tanh((r1[:, None] - r[None, :]) / width) * np.tanh((r[None, :] - r2[:, None]) / width)
        return u, {"r1": r1, "r2": r2}

    def observables(x: torch.Tensor) -> torch.Tensor:
        """Ginzburg-Landau free energy [..., 1]: h^2 times bulk (u^2 - 1)^2 / (4 eps^2) per cell
        plus |grad_h u|^2 / 2 per interior edge."""
        u = x.reshape(*x.shape[:-1], cells, cells)
        bulk = ((u * u - 1.0) ** 2).sum(dim=(-2, -1)) * (h * h / (4.0 * eps * eps))
        across = (u[..., :, 1:] - u[..., :, :-1]).square().sum(dim=(-2, -1))
        down = (u[..., 1:, :] - u[..., :-1, :]).square().sum(dim=(-2, -1))
        return (bulk + 0.5 * (across + down)).unsqueeze(-1)  # h^2 (d / h)^2 / 2 = d^2 / 2

    return System(
        name="allen_cahn",
        settings=dict(settings),
        dims=dimensions(settings),
        observable_names=("free_energy",),
        layout={"field": "u", "shape": [cells, cells], "h": h, "epsilon": eps},
        initial_conditions=initial_conditions,
        rhs=rhs,
        partial_rhs=partial_rhs,
        unit_rows=lambda units: units,
        stencil=lambda units: stencil(settings, units),
        observables=observables,
        time_step=settings["dt_over_h2"] * h * h if "dt_over_h2" in settings else None,
        dof_labels={"field": ("field of the row", np.full(cells * cells, "u", dtype=object)),
                    "cell": ("grid cell of the row (row-major over cells x cells)", np.arange(cells * cells, dtype=np.int64))},
        units={"time": "1", "state": "1", "force": "1"},  # the equation is nondimensional
    )
