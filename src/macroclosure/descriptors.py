"""Symmetric descriptors of particle configurations: the inputs of the particle closure encoder.

A state x = (unwrapped positions, velocities) [6 atoms] is reduced to the means and the mean
products (second moments), over atoms, of per-atom descriptors of each atom's local environment: its LJ
pair energy, its kinetic energy and radial basis functions of its neighbours' distances.
Pooling makes them invariant to permuting atoms; minimum-image pair distances make them
invariant to translations, rotations and periodic images; the cost is linear in atoms.

The functions are torch and differentiable in x. Their Jacobian dD/dx also comes in closed
form (`pooled_pull_back`): every pair feature depends on one distance, so the chain rule through
the pair sums costs one pass over the pairs instead of one reverse pass per descriptor, and the
encoder Jacobian J = (d closure net / dD) dD/dx follows by a small matrix product. The neighbour
pairs are integer constants found beforehand (with vesin) and passed in, so torch.func
transforms (vmap, jacrev, jvp) run through the descriptors unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import vesin
from torch import Tensor, nn
from torch.func import jvp

from macroclosure.descriptor_counts import DESCRIPTORS_PER_ATOM, POOLED_FEATURES, RADIAL_BASIS, THERMODYNAMIC_VARIABLES

RADIAL_START = 0.8  # sigma; the first Gaussian's centre, just inside the closest LJ contact
KINETIC = 1  # the per-atom descriptor not summed over pairs; the others are, in pair_features' order
PASS_BYTES = 128 * 2**20  # per-pair intermediates of one batched Jacobian pass
PAIR_JACOBIAN_COPIES = 4  # [pairs, POOLED_FEATURES, 3] arrays alive at once in pooled_jacobian


class ParticleBox(NamedTuple):
    """What the descriptors need to know of a particle system: atoms, cubic box, cutoff."""

    atoms: int
    box_length: float
    r_cutoff: float
    density: float


def particle_box(system, r_cutoff: float | None = None) -> ParticleBox:
    """The box of a particle system (its layout records atoms and box length), with the system's
    pair cutoff unless `r_cutoff` gives the encoder another (`closure.reference_cutoff`)."""
    atoms, box = system.layout["atoms"], system.layout["box_length"]
    return ParticleBox(atoms, box, r_cutoff or system.settings["r_cutoff"], atoms / box**3)


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


def minimum_image_separations(positions: Tensor, pairs: Tensor, box_length: float) -> Tensor:
    """r_j - r_i of each pair (i, j) under the minimum image, [B, A, 3] -> [B, P, 3]."""
    first = torch.take_along_dim(positions, pairs[..., :1], dim=1)
    second = torch.take_along_dim(positions, pairs[..., 1:], dim=1)
    delta = second - first
    return delta - box_length * torch.round(delta / box_length)


def pair_distances(separations: Tensor, real: Tensor, box_length: float) -> Tensor:
    """|r_j - r_i| [B, P]; padding gets box_length (beyond any cutoff), through a `where` that
    keeps its gradient finite."""
    return torch.where(real, separations.square().sum(-1), box_length**2).sqrt()


def minimum_image_distances(positions: Tensor, pairs: Tensor, real: Tensor, box_length: float) -> Tensor:
    """|r_j - r_i| of each pair under the minimum image, [B, A, 3] -> [B, P]."""
    return pair_distances(minimum_image_separations(positions, pairs, box_length), real, box_length)


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


def pair_features(r: Tensor, r_cutoff: float) -> Tensor:
    """What a pair at distance r adds to each of its atoms: half its LJ energy and its radial
    basis, [..., P] -> [..., P, DESCRIPTORS_PER_ATOM - 1]."""
    return torch.cat([0.5 * lennard_jones_energy(r, r_cutoff).unsqueeze(-1), radial_basis(r, r_cutoff)], dim=-1)


def to_both_atoms(per_pair: Tensor, pairs: Tensor, atoms: int, sign: float = 1.0) -> Tensor:
    """Sum per-pair values [B, P, ...] onto the atoms [B, A, ...]: each pair's value goes to its
    second atom and sign times it to its first (padding pairs (0, 0) must carry zeros)."""
    index = pairs.reshape(*pairs.shape, *(1,) * (per_pair.dim() - 2))
    summed = torch.zeros(per_pair.shape[0], atoms, *per_pair.shape[2:], dtype=per_pair.dtype, device=per_pair.device)
    summed = summed.scatter_add(1, index[:, :, 1].expand_as(per_pair), per_pair)
    return summed.scatter_add(1, index[:, :, 0].expand_as(per_pair), sign * per_pair)


def with_kinetic(environment: Tensor, kinetic: Tensor) -> Tensor:
    """Per-atom descriptors in their order: the pair-summed ones with the kinetic one at KINETIC."""
    return torch.cat([environment[..., :KINETIC], kinetic, environment[..., KINETIC:]], dim=-1)


def split_state(x: Tensor, atoms: int) -> tuple[Tensor, Tensor]:
    """Positions and velocities [B, A, 3] of states [B, N]."""
    return x[:, : 3 * atoms].reshape(len(x), atoms, 3), x[:, 3 * atoms :].reshape(len(x), atoms, 3)


def atom_descriptors(features: Tensor, pairs: Tensor, velocities: Tensor) -> Tensor:
    """[B, A, DESCRIPTORS_PER_ATOM] from the pairs' features [B, P, DESCRIPTORS_PER_ATOM - 1]
    summed onto their atoms (padding: r beyond r_c adds 0) and the kinetic energy |v|^2 / 2 (m = 1)."""
    environment = to_both_atoms(features, pairs, velocities.shape[1])
    return with_kinetic(environment, 0.5 * velocities.square().sum(-1, keepdim=True))


def per_atom_descriptors(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """[B, N] -> [B, A, DESCRIPTORS_PER_ATOM]: each atom's LJ pair energy (half the sum over
    its neighbours), kinetic energy and radial basis summed over neighbours."""
    positions, velocities = split_state(x, box.atoms)
    r = minimum_image_distances(positions, pairs, real, box.box_length)
    return atom_descriptors(pair_features(r, box.r_cutoff), pairs, velocities)


def atom_moments(descriptors: Tensor) -> Tensor:
    """[..., DESCRIPTORS_PER_ATOM] -> [..., POOLED_FEATURES]: the descriptors D and their
    products D_p D_q (p <= q), whose means over atoms are the pooled descriptors."""
    first, second = torch.triu_indices(DESCRIPTORS_PER_ATOM, DESCRIPTORS_PER_ATOM, device=descriptors.device)
    return torch.cat([descriptors, descriptors[..., first] * descriptors[..., second]], dim=-1)


def pooled_descriptors(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """[..., N] -> [..., POOLED_FEATURES]: means over atoms of atom_moments; pairs [..., P, 2]
    and real [..., P] share x's leading dims."""
    lead = x.shape[:-1]
    descriptors = per_atom_descriptors(
        x.reshape(-1, x.shape[-1]), pairs.reshape(-1, *pairs.shape[-2:]), real.reshape(-1, real.shape[-1]), box
    )
    return atom_moments(descriptors).mean(1).reshape(*lead, POOLED_FEATURES)


def moment_slopes(descriptors: Tensor, tangent: Tensor) -> Tensor:
    """d atom_moments along `tangent` at `descriptors` (both [..., DESCRIPTORS_PER_ATOM]):
    (t, t_p D_q + D_p t_q); linear in the descriptors, so a sum of two atoms' slopes is the
    slope at their sum with twice the tangent's first block."""
    first, second = torch.triu_indices(DESCRIPTORS_PER_ATOM, DESCRIPTORS_PER_ATOM, device=descriptors.device)
    return torch.cat([tangent, tangent[..., first] * descriptors[..., second] + descriptors[..., first] * tangent[..., second]], dim=-1)


def pooled_pull_back(rows: Tensor | None, x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """rows @ dD/dx for the pooled descriptors D, in closed form: rows [B, k, POOLED_FEATURES]
    (None: the identity, giving dD/dx itself), x [B, N] -> [B, k, N].

    A pair p = (i, j) moves D through its distance only: dD/dr_p = (dm(d_i) + dm(d_j)) f'(r_p) / A,
    with m = atom_moments, d the per-atom descriptors and f = pair_features; dr_p/dx_j = u_p =
    -dr_p/dx_i (u_p the unit separation). A velocity moves D through its atom's kinetic energy:
    dD/dv_a = dm(d_a)[KINETIC] v_a / A. One pass over the pairs serves every row at once; the
    rows are applied before the pairs are spread over atoms, so few rows cost little.
    """
    positions, velocities = split_state(x, box.atoms)
    separations = minimum_image_separations(positions, pairs, box.box_length)
    r = pair_distances(separations, real, box.box_length)
    features, feature_slopes = jvp(lambda r: pair_features(r, box.r_cutoff), (r,), (torch.ones_like(r),))
    descriptors = atom_descriptors(features, pairs, velocities)
    tangent = with_kinetic(feature_slopes, torch.zeros_like(r).unsqueeze(-1))
    both_ends = sum(torch.take_along_dim(descriptors, pairs[..., end : end + 1], dim=1) for end in (0, 1))
    along_r = moment_slopes(both_ends, tangent)  # dm(d_i) t + dm(d_j) t, but for the first block:
    along_r[..., :DESCRIPTORS_PER_ATOM] *= 2.0
    kinetic_tangent = torch.zeros_like(descriptors).index_fill_(-1, torch.tensor([KINETIC], device=x.device), 1.0)
    along_v = moment_slopes(descriptors, kinetic_tangent)  # [B, A, F]
    if rows is not None:
        along_r, along_v = along_r @ rows.mT, along_v @ rows.mT
    units = torch.where(real.unsqueeze(-1), separations / r.unsqueeze(-1), 0.0)
    d_positions = to_both_atoms(along_r.unsqueeze(-1) * units.unsqueeze(-2), pairs, box.atoms, sign=-1.0)
    d_velocities = along_v.unsqueeze(-1) * velocities.unsqueeze(-2)
    return torch.cat([d_positions, d_velocities], dim=1).permute(0, 2, 1, 3).reshape(len(x), along_v.shape[-1], x.shape[-1]) / box.atoms


class PooledDescriptors(nn.Module):
    """The particle encoder's input map: x -> pooled descriptors, with its neighbour pairs as
    constants (`constants`) and its Jacobian in closed form (`pull_back`)."""

    size = POOLED_FEATURES

    def __init__(self, box: ParticleBox):
        super().__init__()
        self.box = box

    def constants(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return neighbour_pairs(x.reshape(-1, x.shape[-1]), self.box)

    def forward(self, x: Tensor, pairs: Tensor, real: Tensor) -> Tensor:
        return pooled_descriptors(x, pairs, real, self.box)

    def states_per_pass(self) -> int:
        """States whose per-pair intermediates (PAIR_JACOBIAN_COPIES x [pairs, POOLED_FEATURES, 3]
        in float64; half pairs ~ atoms 2/3 pi r_c^3 rho) fit PASS_BYTES: the batch of anything that
        passes over the pairs, the forward and its jvp included."""
        pairs_per_state = self.box.atoms * (2.0 / 3.0) * math.pi * self.box.r_cutoff**3 * self.box.density
        return max(1, int(PASS_BYTES // (8 * PAIR_JACOBIAN_COPIES * 3 * POOLED_FEATURES * pairs_per_state)))

    def pull_back(self, rows: Tensor | None, x: Tensor, pairs: Tensor, real: Tensor) -> Tensor:
        """rows @ d inputs / dx (pooled_pull_back; rows None: the Jacobian itself), in passes
        of states_per_pass."""
        per_pass = self.states_per_pass()
        parts = zip(*(part.split(per_pass) for part in (x, pairs, real)))
        row_parts = [None] * len(x) if rows is None else rows.split(per_pass)
        return torch.cat([pooled_pull_back(part_rows, *part, self.box) for part_rows, part in zip(row_parts, parts)])


# --- thermodynamic closure variables (`closure.thermodynamic`) ---------------------------------


def thermodynamic_variables(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """[B, N] -> [B, 3]: U / A, sum_a v_a . F_a / A and sum_a |F_a|^2 / A of the system's pair
    potential (truncated LJ, minimum image) from the neighbour pairs. In NVE (m = 1) the power is
    minus the potential energy's rate and 3 (A - 1) / (2 A) times the temperature's, so with T
    these close the energy exchange the temperature follows from a minimised start. The forces
    come from torch.func.grad, so J (reverse over reverse) and J f (forward over reverse) compose."""
    positions, velocities = split_state(x, box.atoms)
    gradient, energies = energy_gradient_and_energies(positions, pairs, real, box)
    forces = -gradient
    return torch.stack([energies, (velocities * forces).sum((-2, -1)), forces.square().sum((-2, -1))], dim=-1) / box.atoms


def energy_gradient_and_energies(positions: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> tuple[Tensor, Tensor]:
    """grad U [B, A, 3] (= -F) and U [B] of positions [B, A, 3] from their neighbour pairs, in one
    pass (torch.func.grad with the energies as auxiliary output, so it composes with jvp and jacrev)."""
    def total(moved: Tensor) -> tuple[Tensor, Tensor]:
        energies = lennard_jones_energy(minimum_image_distances(moved, pairs, real, box.box_length), box.r_cutoff).sum(-1)
        return energies.sum(), energies

    return torch.func.grad(total, has_aux=True)(positions)


class ThermodynamicClosure(nn.Module):
    """Closure variables that need no training (`closure.thermodynamic`): THERMODYNAMIC_VARIABLES
    of a particle state, read with the particle encoder's neighbour pairs, their Jacobian in
    closed form (thermodynamic_jacobian). Pooled over atoms, so invariant as the descriptors are, and linear in atoms."""

    size = len(THERMODYNAMIC_VARIABLES)
    names = THERMODYNAMIC_VARIABLES

    def __init__(self, box: ParticleBox):
        super().__init__()
        self.box = box

    def forward(self, x: Tensor, pairs: Tensor, real: Tensor) -> Tensor:
        return thermodynamic_variables(x, pairs, real, self.box)

    def jacobian(self, x: Tensor, pairs: Tensor, real: Tensor) -> Tensor:
        """d variables / dx [B, 3, N], in passes of PooledDescriptors.states_per_pass states."""
        per_pass = PooledDescriptors(self.box).states_per_pass()
        parts = zip(*(part.split(per_pass) for part in (x, pairs, real)))
        return torch.cat([thermodynamic_jacobian(*part, self.box) for part in parts])


def thermodynamic_jacobian(x: Tensor, pairs: Tensor, real: Tensor, box: ParticleBox) -> Tensor:
    """d (u, p, w) / dx [B, 3, N] in closed form from F = -grad U and two Hessian-vector products
    (forward over reverse), instead of three reverse passes through the forces:
    du = (-F, 0) / A, dp = (-H v, F) / A, dw = (-2 H F, 0) / A over (positions, velocities)."""
    positions, velocities = split_state(x, box.atoms)

    def energy_gradient(moved: Tensor) -> Tensor:
        return energy_gradient_and_energies(moved, pairs, real, box)[0]

    forces = -energy_gradient(positions)
    _, along_velocities = torch.func.jvp(energy_gradient, (positions,), (velocities,))
    _, along_forces = torch.func.jvp(energy_gradient, (positions,), (forces,))
    zeros = torch.zeros_like(forces)
    rows = [(-forces, zeros), (-along_velocities, forces), (-2.0 * along_forces, zeros)]
    return torch.stack([torch.cat([d_positions.flatten(1), d_velocities.flatten(1)], 1) for d_positions, d_velocities in rows], 1) / box.atoms
