"""Shared fixtures: tiny predator-prey settings and a tiny simulated training store.

JAX's 64-bit switch is process-wide and `simulate` / `sample` flip it to the precision of
their data, so every test gets it restored afterwards; tests that need a precision ask for
it with the `float64` / `float32` fixtures.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

TINY_SETTINGS = {
    "cells": 5,
    "a": 3.0,
    "b": 0.4,
    "diffusion_u": 0.1,
    "dt": 0.01,
    "steps": 40,
    "save_every": 10,
    "trajectories": {"train": 3, "test": 2},
    "batch_size": 2,  # fewer than the trajectories: the store is appended to
    "seed": 0,
    "dtype": "float64",
}


@contextlib.contextmanager
def jax_x64(enabled: bool | None = None):
    """Set JAX's 64-bit mode (when `enabled` is given) and restore the previous one on exit."""
    import jax

    before = jax.config.read("jax_enable_x64")
    if enabled is not None:
        jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


@pytest.fixture(autouse=True)
def _restore_jax_precision():
    """Undo any change of JAX's 64-bit mode a test makes (only if JAX is in use at all)."""
    if "jax" not in sys.modules:
        yield
        return
    with jax_x64():
        yield


@pytest.fixture
def float64():
    with jax_x64(True):
        yield


@pytest.fixture
def float32():
    with jax_x64(False):
        yield


def tiny_settings(**changes) -> dict:
    """A copy of the tiny predator-prey simulation settings with `changes` applied."""
    settings = copy.deepcopy(TINY_SETTINGS)
    settings.update(changes)
    return settings


@pytest.fixture
def pp_settings() -> dict:
    return tiny_settings()


def simulate_tiny(path: Path, split: str = "train", **changes) -> Path:
    from macroclosure.simulate import simulate

    with jax_x64():
        simulate("predator_prey", tiny_settings(**changes), split, str(path), device="cpu", progress=False)
    return path


@pytest.fixture(scope="session")
def train_store(tmp_path_factory) -> Path:
    """A tiny simulated predator-prey training store; read it, do not modify it (copy first)."""
    return simulate_tiny(tmp_path_factory.mktemp("trajectories") / "train.zarr")


def state_subset_cases(n, edges, value_range, dtype, count=6, seed=0):
    """(state, units) pairs for partial-force checks: the first subset is `edges`, the
    others random subsets of the same size (one size, one compilation); states uniform."""
    rng = np.random.default_rng(seed)
    cases = []
    for trial in range(count):
        x = rng.uniform(*value_range, n).astype(dtype)
        units = edges if trial == 0 else rng.choice(n, size=edges.size, replace=False)
        cases.append((jnp.asarray(x), jnp.asarray(units)))
    return cases


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: threads only add synchronisation, badly so on a loaded machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
