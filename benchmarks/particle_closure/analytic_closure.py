"""How well can *any* smooth closure of a few thermodynamic variables predict T(t) for LJ with
independent starts? A ceiling for #13, from a results folder's LJ trajectory stores.

Per saved frame it computes, exactly (truncated LJ, minimum image, vesin pairs, autograd forces):
  T = sum|v|^2 / (3 (A - 1)),  u = U / A,  p = sum v.F / A (power),  w = sum|F|^2 / A.
Their rates: dT/dt = 2 A p / (3 (A - 1)) and du/dt = -p exactly (m = 1, NVE); dp/dt and dw/dt by
central differences of the saved frames (frames must be saved every step). A latent ODE
dz/dt = g(z) is then fitted by least squares (polynomials of degree 1-3 in the standardised z),
trained on the training trajectories only, and rolled out with RK4 from each test trajectory's z(0)
on its own time grid. Printed: the rollout error of T (the pipeline's metric) for each closure set
and degree, beside the mean course and a course linear in T0 (both from the training trajectories).

    .venv/bin/python benchmarks/particle_closure/analytic_closure.py RESULTS_FOLDER [--frames-every K]
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from macroclosure.descriptors import ParticleBox, lennard_jones_energy, minimum_image_distances, neighbour_pairs, split_state
from macroclosure.metric import relative_rollout_error

CLOSURES = {"T, u": (0, 1), "T, u, p": (0, 1, 2), "T, u, p, w": (0, 1, 2, 3)}


def thermodynamic_variables(states: np.ndarray, box: ParticleBox) -> np.ndarray:
    """[frames, N] -> [frames, 4]: T, u, p, w of each frame."""
    x = torch.as_tensor(states, dtype=torch.float64)
    pairs, real = neighbour_pairs(x, box)
    positions, velocities = split_state(x, box.atoms)
    positions = positions.detach().requires_grad_(True)
    energy = lennard_jones_energy(minimum_image_distances(positions, pairs, real, box.box_length), box.r_cutoff).sum(1)
    forces = -torch.autograd.grad(energy.sum(), positions)[0]
    atoms = box.atoms
    with torch.no_grad():
        return torch.stack([velocities.square().sum((1, 2)) / (3 * (atoms - 1)), energy / atoms,
                            (velocities * forces).sum((1, 2)) / atoms, forces.square().sum((1, 2)) / atoms], 1).numpy()


def split_variables(root: str, split: str, every: int) -> tuple[np.ndarray, float, ParticleBox]:
    """[trajectory, time, 4] variables of one split, the saved step and the box."""
    ds = xr.open_zarr(f"{root}/lennard_jones/trajectories/{split}.zarr", consolidated=False)
    atoms = ds["state"].shape[-1] // 6
    box_length = float(ds.attrs.get("box_length", (atoms / 0.8) ** (1 / 3)))
    box = ParticleBox(atoms, box_length, 2.5, atoms / box_length**3)
    times = ds["time"].values[::every]
    out = np.stack([thermodynamic_variables(ds["state"].values[i, ::every], box) for i in range(ds.sizes["trajectory"])])
    return out, float(times[1] - times[0]), box


def cached_variables(root: str, every: int) -> tuple[np.ndarray, np.ndarray, float, ParticleBox]:
    """Both splits' variables, computed once per results folder (analytic_variables_every{K}.npz there)."""
    path = Path(root) / f"analytic_variables_every{every}.npz"
    if not path.exists():
        train, dt, box = split_variables(root, "train", every)
        test, _, _ = split_variables(root, "test", every)
        np.savez(path, train=train, test=test, dt=dt, box=np.array(box))
    saved = np.load(path)
    atoms, box_length, r_cutoff, density = saved["box"]
    return saved["train"], saved["test"], float(saved["dt"]), ParticleBox(int(atoms), box_length, r_cutoff, density)


def rates(z: np.ndarray, dt: float, atoms: int) -> np.ndarray:
    """Time derivatives [trajectory, time, 4]: exact for T and u, central differences (one-sided
    at the ends) for p and w."""
    out = np.empty_like(z)
    out[..., 0] = 2 * atoms * z[..., 2] / (3 * (atoms - 1))
    out[..., 1] = -z[..., 2]
    out[..., 2:] = np.gradient(z[..., 2:], dt, axis=1)
    return out


def features(z: np.ndarray, degree: int) -> np.ndarray:
    """Monomials of z [..., c] up to degree (with the constant)."""
    columns = [np.ones(z.shape[:-1])]
    for d in range(1, degree + 1):
        columns += [np.prod(z[..., list(c)], axis=-1) for c in itertools.combinations_with_replacement(range(z.shape[-1]), d)]
    return np.stack(columns, -1)


def fit(z: np.ndarray, dz: np.ndarray, degree: int, ridge: float = 1e-8):
    """g(z) as polynomial least squares on standardised z and rates; returns a callable."""
    mean, scale = z.reshape(-1, z.shape[-1]).mean(0), z.reshape(-1, z.shape[-1]).std(0)
    rate_scale = dz.reshape(-1, dz.shape[-1]).std(0)
    a = features((z.reshape(-1, z.shape[-1]) - mean) / scale, degree)
    b = dz.reshape(-1, dz.shape[-1]) / rate_scale
    coefficients = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ b)
    return lambda state: (features((state - mean) / scale, degree) @ coefficients) * rate_scale


def fit_network(z: np.ndarray, dz: np.ndarray, epochs: int = 3000, seed: int = 0):
    """g(z) as a 2 x 64 tanh MLP on standardised z and rates (full-batch Adam, lr 3e-3 halved
    every 1 000 epochs): the smooth closure of the pipeline's latent models, without a closure to learn."""
    torch.manual_seed(seed)
    flat, rate = z.reshape(-1, z.shape[-1]), dz.reshape(-1, dz.shape[-1])
    mean, scale, rate_scale = flat.mean(0), flat.std(0), rate.std(0)
    inputs = torch.as_tensor((flat - mean) / scale)
    targets = torch.as_tensor(rate / rate_scale)
    network = torch.nn.Sequential(torch.nn.Linear(z.shape[-1], 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                  torch.nn.Tanh(), torch.nn.Linear(64, z.shape[-1])).double()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, 1000, 0.5)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = (network(inputs) - targets).square().mean()
        loss.backward()
        optimiser.step()
        schedule.step()

    def g(state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.as_tensor((state - mean) / scale)).numpy() * rate_scale
    return g


def rollout(g, start: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """RK4 from start [trajectory, c] over steps of dt: [trajectory, steps + 1, c]."""
    out = [start]
    z = start
    for _ in range(steps):
        k1 = g(z); k2 = g(z + 0.5 * dt * k1); k3 = g(z + 0.5 * dt * k2); k4 = g(z + dt * k3)
        z = z + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(z)
    return np.stack(out, 1)


def temperature_error(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean over test trajectories of the pipeline's rollout error of T, diverged rollouts (non-finite) as inf."""
    errors = relative_rollout_error(np.nan_to_num(prediction[..., :1], nan=1e6, posinf=1e6, neginf=-1e6), truth[..., :1])
    return float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--frames-every", type=int, default=1)
    args = parser.parse_args()
    began = time.perf_counter()
    train, test, dt, box = cached_variables(args.root, args.frames_every)
    print(f"{box.atoms} atoms, {len(train)} train and {len(test)} test trajectories of {train.shape[1]} frames,"
          f" dt {dt:g}; variables in {time.perf_counter() - began:.0f} s")
    t_train, t_test = train[..., :1], test[..., :1]
    mean_course = t_test[:, :1] * (t_train / t_train[:, :1]).mean(0)
    design = np.stack([np.ones(len(train)), train[:, 0, 0]], 1)
    coef, *_ = np.linalg.lstsq(design, train[..., 0], rcond=None)
    linear = (np.stack([np.ones(len(test)), test[:, 0, 0]], 1) @ coef)[..., None]
    print("| prediction of T | rollout error on the test trajectories |\n|---|---|")
    print(f"| mean course (the pipeline's baseline) | {temperature_error(mean_course, t_test):.3e} |")
    print(f"| course linear in T0 | {temperature_error(linear, t_test):.3e} |")
    dz = rates(train, dt, box.atoms)
    for name, columns in CLOSURES.items():
        for degree in (1, 2, 3):
            g = fit(train[..., columns], dz[..., columns], degree)
            prediction = rollout(g, test[:, 0, columns], test.shape[1] - 1, dt)
            print(f"| latent ODE in ({name}), polynomial degree {degree} | {temperature_error(prediction, t_test):.3e} |")
        prediction = rollout(fit_network(train[..., columns], dz[..., columns]), test[:, 0, columns], test.shape[1] - 1, dt)
        print(f"| latent ODE in ({name}), MLP 2 x 64 tanh | {temperature_error(prediction, t_test):.3e} |")


if __name__ == "__main__":
    main()
