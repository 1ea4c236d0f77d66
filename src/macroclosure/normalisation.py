"""Standardisation of latent states and their time derivatives (METHOD.md, "Normalisation").

The statistics come from the encoded training trajectories: z directly, dz/dt from central
differences in time. They need no force at all, so every loss and every fraction p shares
the same normalisation and the comparison between them stays fair.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn


class Normalisation(NamedTuple):
    z_mean: list[float]
    z_std: list[float]
    rate_mean: list[float]
    rate_std: list[float]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._asdict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "Normalisation":
        return cls(**json.loads(Path(path).read_text()))

    def tensors(self, dtype=torch.float32) -> dict[str, torch.Tensor]:
        return {name: torch.tensor(values, dtype=dtype) for name, values in self._asdict().items()}


def fit_normalisation(latent: np.ndarray, time_step: float) -> Normalisation:
    """Statistics of z [trajectory, time, d] and of dz/dt estimated by central differences."""
    rates = np.gradient(latent, time_step, axis=1)
    flat_z = latent.reshape(-1, latent.shape[-1])
    flat_rates = rates.reshape(-1, latent.shape[-1])
    tiny = np.finfo(np.float32).eps
    return Normalisation(
        z_mean=flat_z.mean(0).tolist(),
        z_std=np.maximum(flat_z.std(0), tiny).tolist(),
        rate_mean=flat_rates.mean(0).tolist(),
        rate_std=np.maximum(flat_rates.std(0), tiny).tolist(),
    )


class PhysicalRate(nn.Module):
    """dz/dt in physical units from a model g that maps standardised z to standardised rates."""

    def __init__(self, model: nn.Module, normalisation: Normalisation, dtype=torch.float32):
        super().__init__()
        self.model = model
        for name, value in normalisation.tensors(dtype).items():
            self.register_buffer(name, value)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.rate_mean + self.rate_std * self.model((z - self.z_mean) / self.z_std)
