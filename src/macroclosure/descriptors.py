"""Symmetric descriptors of particle configurations: the inputs of the particle closure encoder.

A state x = (unwrapped positions, velocities) [6 atoms] is reduced to the means and the mean
products (second moments), over atoms, of per-atom descriptors of each atom's local environment: its LJ
pair energy, its kinetic energy and radial basis functions of its neighbours' distances.
Pooling makes them invariant to permuting atoms; minimum-image pair distances make them
invariant to translations, rotations and periodic images; the cost is linear in atoms.

The functions are torch and differentiable in x, so the encoder Jacobian J = dz/dx comes
from autograd. The neighbour pairs are integer constants found beforehand (with vesin) and
passed in, so torch.func transforms (vmap, jacrev) run through the descriptors unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import vesin
from torch import Tensor, nn

RADIAL_BASIS = 8  # Gaussians of the pair distance per atom (the per-pair work is ~ this)
RADIAL_START = 0.8  # sigma; the first Gaussian's centre, just inside the closest LJ contact
DESCRIPTORS_PER_ATOM = 2 + RADIAL_BASIS  # pair energy, kinetic energy, radial basis
# means and mean products (p <= q) over atoms: pooled moments are per-atom work, cheap beside the
# per-pair basis, and give more inputs than a latent dimension of 32 (published) needs
POOLED_FEATURES = DESCRIPTORS_PER_ATOM + DESCRIPTORS_PER_ATOM * (DESCRIPTORS_PER_ATOM + 1) // 2
PASS_BYTES = 128 * 2**20  # per-pair intermediates of one batched Jacobian pass


class ParticleBox(NamedTuple):
    """What the descriptors need to know of a particle system: atoms, cubic box, cutoff."""

    atoms: int
    box_length: float
    r_cutoff: float
    density: float


def particle_box(system) -> ParticleBox:
    """The box of a particle system (its layout records atoms and box length)."""
    atoms, box = system.layout["atoms"], system.layout["box_length"]
    return ParticleBox(atoms, box, system.settings["r_cutoff"], atoms / box**3)


def neighbour_pairs(x: Tensor, box: ParticleBox) -> tuple[Tensor, Tensor]:
    """Pairs (i < j) closer than r_cutoff in each configuration of x [B, N], from vesin's cell
    lists (linear in atoms) on the wrapped positions, padded to the largest count.

    Returns pairs [B, P, 2] (int64, on x's device) and real [B, P] (False marks padding,
    whose pair (0, 0) contributes nothing). Computed without gradients: they are constants.
    """
    positions = torch.remainder(x.detach()[:, : 3 * box.atoms].reshape(len(x), box.atoms, 3), box.box_length)
    cell = torch.eye(3, dtype=torch.float64) * box.box_length
    finder = vesin.NeighborList(cutoff=box.r_cutoff, full_list=False)
    found = [
        torch.stack([torch.as_tensor(index, dtype=torch.int64) for index in finder.compute(p, cell, True, "ij")], dim=-1)
        for p in positions.cpu().double().numpy()
    ]
    longest = max(len(pairs) for pairs in found)
    pairs = torch.zeros(len(x), longest, 2, dtype=torch.int64)
    real = torch.zeros(len(x), longest, dtype=torch.bool)
    for row, found_pairs in enumerate(found):
        pairs[row, : len(found_pairs)] = found_pairs
        real[row, : len(found_pairs)] = True
    return pairs.to(x.device), real.to(x.device)


def minimum_image_distances(positions: Tensor, pairs: Tensor, real: Tensor, box_length: float) -> Tensor:
    """|r_j - r_i| of each pair under the minimum image, [B, A, 3] -> [B, P]; padding gets
    box_length (beyond any cutoff), through a `where` that keeps its gradient finite."""
    first = torch.take_along_dim(positions, pairs[..., :1], dim=1)
    second = torch.take_along_dim(positions, pairs[..., 1:], dim=1)
    delta = second - first
    delta = delta - box_length * torch.round(delta / box_length)
    return torch.where(real, delta.square().sum(-1), box_length**2).sqrt()


def lennard_jones_energy(r: Tensor, r_cutoff: float) -> Tensor:
    """Truncated, unshifted LJ energy 4 (r^-12 - r^-6) of pairs at distance r, 0 beyond r_cutoff
    (the potential of lennard_jones_md)."""
    inside = r < r_cutoff
    inverse_six = torch.where(inside, r, 1.0).pow(-6)
    return torch.where(inside, 4.0 * (inverse_six.square() - inverse_six), 0.0)


def smooth_cutoff(r: Tensor, r_cutoff: float) -> Tensor:
    """(cos(pi r / r_c) + 1) / 2 inside r_c, 0 beyond: it and its slope vanish at r_c, so the
    radial basis does not jump when a pair crosses the cutoff."""
    return torch.where(r < r_cutoff, 0.5 * (torch.cos(torch.pi * r / r_cutoff) + 1.0), 0.0)


def radial_basis(r: Tensor, r_cutoff: float) -> Tensor:
    """RADIAL_BASIS Gaussians of r, centred evenly from RADIAL_START to r_c with their spacing
    as width, times the smooth cutoff: [..., P] -> [..., P, RADIAL_BASIS]."""
    spacing = (r_cutoff - RADIAL_START) / (RADIAL_BASIS - 1)
    centres = RADIAL_START + spacing * torch.arange(RADIAL_BASIS, dtype=r.dtype, device=r.device)
    gaussians = torch.exp(-0.5 * ((r.unsqueeze(-1) - centres) / spacing).square())
    return gaussians * smooth_cutoff(r, r_cutoff).unsqueeze(-1)


def per_atom_descriptors(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """[B, N] -> [B, A, DESCRIPTORS_PER_ATOM]: each atom's LJ pair energy (half the sum over
    its neighbours), kinetic energy |v|^2 / 2 (m = 1) and radial basis summed over neighbours."""
    batch = x.shape[0]
    positions = x[:, : 3 * box.atoms].reshape(batch, box.atoms, 3)
    velocities = x[:, 3 * box.atoms :].reshape(batch, box.atoms, 3)
    r = minimum_image_distances(positions, pairs, real, box.box_length)
    per_pair = torch.cat([0.5 * lennard_jones_energy(r, box.r_cutoff).unsqueeze(-1), radial_basis(r, box.r_cutoff)], dim=-1)
    environment = torch.zeros(batch, box.atoms, per_pair.shape[-1], dtype=x.dtype, device=x.device)
    for end in (0, 1):  # a pair adds to both of its atoms; padding (r = box_length) adds 0
        environment = environment.scatter_add(1, pairs[..., end : end + 1].expand_as(per_pair), per_pair)
    kinetic = 0.5 * velocities.square().sum(-1, keepdim=True)
    return torch.cat([environment[..., :1], kinetic, environment[..., 1:]], dim=-1)


def pooled_descriptors(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """[..., N] -> [..., POOLED_FEATURES]: means and mean products D_p D_q (p <= q) over atoms
    of the per-atom descriptors D; pairs [..., P, 2] and real [..., P] share x's leading dims."""
    lead = x.shape[:-1]
    descriptors = per_atom_descriptors(
        x.reshape(-1, x.shape[-1]), pairs.reshape(-1, *pairs.shape[-2:]), real.reshape(-1, real.shape[-1]), box
    )
    first, second = torch.triu_indices(DESCRIPTORS_PER_ATOM, DESCRIPTORS_PER_ATOM, device=x.device)
    products = (descriptors[..., first] * descriptors[..., second]).mean(1)
    return torch.cat([descriptors.mean(1), products], dim=-1).reshape(*lead, POOLED_FEATURES)


class PooledDescriptors(nn.Module):
    """The particle encoder's input map: x -> pooled descriptors, with its neighbour pairs as
    constants (`constants`) and the configurations one Jacobian pass can hold (`samples_per_pass`)."""

    size = POOLED_FEATURES

    def __init__(self, box: ParticleBox):
        super().__init__()
        self.box = box

    def constants(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return neighbour_pairs(x.reshape(-1, x.shape[-1]), self.box)

    def forward(self, x: Tensor, pairs: Tensor, real: Tensor) -> Tensor:
        return pooled_descriptors(x, pairs, real, self.box)

    def samples_per_pass(self, latent_dim: int) -> int:
        """Configurations whose Jacobian rows fit one pass: the reverse pass holds latent_dim
        copies of [pairs, RADIAL_BASIS] per configuration (half pairs ~ atoms 2/3 pi r_c^3 rho)."""
        pairs = self.box.atoms * (2.0 / 3.0) * math.pi * self.box.r_cutoff**3 * self.box.density
        return max(1, int(PASS_BYTES // (8 * latent_dim * pairs * (RADIAL_BASIS + 1))))
