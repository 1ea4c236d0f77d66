"""Latent-dynamics training with L_z, L_x or L_x,p (METHOD.md, "Three losses").

The closure is frozen: each sampled configuration is encoded once, z = phi(x), with its
Jacobian J. L_z needs the full force to form J f; L_x and L_x,p need only the rows
J+[I, :] for the computed forces f_I (all rows for L_x), so one data path serves both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from macroclosure.closure import Autoencoder, encoder_jacobian, load_closure, pseudo_inverse_rows
from macroclosure.config import complete_section
from macroclosure.dynamics import build_model
from macroclosure.history import write_history
from macroclosure.losses import latent_loss, micro_loss_from_moments, micro_moments
from macroclosure.normalisation import Normalisation
from macroclosure.runtime import log, provenance, torch_device
from macroclosure.store import StoreError, atomic_directory, open_store, read, read_states

JACOBIAN_BYTES = 256 * 2**20  # memory for one batch of float64 encoder Jacobians


def training_tensors(autoencoder: Autoencoder, trajectories, forces, loss: str) -> dict[str, torch.Tensor]:
    """Per sample: z and either the L_z target J f or the moments of the micro-space loss.

    States are read and J [d, N] evaluated batch by batch (float64, so the pseudo-inverse
    rows are accurate), so memory stays bounded for large N. L_x and L_x,p keep only the
    d x d moments of J+[I, :] and f_I (losses.micro_moments), in float64.
    """
    n_dof = autoencoder.x_mean.shape[0]
    index = torch.as_tensor(read(forces, "index"))
    force = torch.as_tensor(read(forces, "force"), dtype=torch.float64)
    if loss == "L_z" and index.shape[1] != n_dof:
        raise StoreError(forces.encoding.get("source"), f"L_z needs every force (p = 1), this store holds {index.shape[1]} of {n_dof} rows")
    trajectory, time_index = read(forces, "trajectory"), read(forces, "time_index")
    encoder = autoencoder.double()
    batch_size = max(1, JACOBIAN_BYTES // (8 * autoencoder.latent_dim * n_dof))
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in torch.arange(len(index)).split(batch_size):
        rows = batch.numpy()
        x = torch.as_tensor(read_states(trajectories, trajectory[rows], time_index[rows]), dtype=torch.float64)
        with torch.no_grad():
            jacobian = encoder_jacobian(encoder, x)
            values = {"z": encoder.encode(x).float()}
            if loss == "L_z":
                full_force = torch.zeros_like(x).scatter_(1, index[batch], force[batch])
                values["target"] = torch.einsum("bdn,bn->bd", jacobian, full_force).float()
            else:
                values |= micro_moments(pseudo_inverse_rows(jacobian, index[batch]), force[batch])
        for name, value in values.items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def batch_loss(model, loss: str, batch: dict[str, torch.Tensor], scale: dict[str, torch.Tensor]) -> torch.Tensor:
    """The configured loss on one minibatch; g works in standardised units."""
    prediction = model((batch["z"] - scale["z_mean"]) / scale["z_std"])
    if loss == "L_z":
        return latent_loss(prediction, (batch["target"] - scale["rate_mean"]) / scale["rate_std"])
    rate = scale["rate_mean"] + scale["rate_std"] * prediction
    return micro_loss_from_moments(batch["gram"], batch["cross"], batch["offset"], rate)


def split_validation(count: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of training and held-out validation samples (at least one of each)."""
    order = torch.randperm(count, generator=generator)
    held_out = min(count - 1, max(1, round(fraction * count)))
    return order[held_out:], order[:held_out]


def mean_loss(model, loss: str, tensors: dict, scale: dict, indices: torch.Tensor, batch_size: int) -> float:
    """The loss over `indices` without gradients, batch by batch."""
    with torch.no_grad():
        total = sum(
            batch_loss(model, loss, {name: t[batch] for name, t in tensors.items()}, scale).item() * len(batch)
            for batch in indices.split(batch_size)
        )
    return total / len(indices)


def fit_dynamics(model, loss: str, tensors: dict, normalisation: Normalisation, settings: dict, seed: int, device, progress: bool = True) -> list[dict]:
    """AdamW (amsgrad) with ReduceLROnPlateau on a held-out validation loss.

    The same loss on held-out configurations is an unbiased estimate of the population loss
    (for L_x,p too), so the parameters with the lowest validation loss are kept: noisy partial
    targets cannot be memorised unnoticed. Returns the per-epoch history.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: value.to(device) for name, value in tensors.items()}
    scale = {name: value.to(device) for name, value in normalisation.tensors().items()}
    training, validation = (part.to(device) for part in split_validation(len(tensors["z"]), settings["validation_fraction"], generator))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.0, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=settings["plateau_factor"], patience=settings["plateau_patience"]
    )
    history, best = [], (float("inf"), None)
    bar = tqdm(range(1, settings["epochs"] + 1), desc=f"train {loss}", disable=not progress, mininterval=2.0)
    for epoch in bar:
        total = 0.0
        for batch in training[torch.randperm(len(training), generator=generator).to(device)].split(settings["batch_size"]):
            value = batch_loss(model, loss, {name: t[batch] for name, t in tensors.items()}, scale)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total += value.item() * len(batch)
        held_out = mean_loss(model, loss, tensors, scale, validation, settings["batch_size"])
        if not np.isfinite(held_out):
            raise FloatingPointError(f"{loss} became non-finite at epoch {epoch}; lower the learning rate")
        scheduler.step(held_out)
        if held_out < best[0]:
            best = (held_out, {name: value.clone() for name, value in model.state_dict().items()})
        history.append({"epoch": epoch, "loss": total / len(training), "validation_loss": held_out, "lr": optimizer.param_groups[0]["lr"]})
        bar.set_postfix(loss=f"{total / len(training):.3e}", validation=f"{held_out:.3e}", refresh=False)
    model.load_state_dict(best[1])
    return history


def train(trajectories: str, forces: str, closure: str, out: str, model_name: str, loss: str, seed: int, settings: dict, device: str = "auto", progress: bool = True) -> None:
    """Train one latent model with one loss on one force sample and save it."""
    autoencoder, closure_hparams, normalisation = load_closure(closure)
    system = closure_hparams["system"]
    settings = complete_section(system, "train", settings)
    trajectory_store = open_store(trajectories, "trajectories", system=system)
    force_store = open_store(forces, "forces", system=system)
    made_from = json.loads(trajectory_store.attrs["provenance"])["config_digest"]
    if force_store.attrs["trajectories_digest"] != made_from:
        raise StoreError(forces, f"was sampled from other trajectories than {trajectories}")
    torch_used = torch_device(device)
    start = time.perf_counter()
    tensors = training_tensors(autoencoder, trajectory_store, force_store, loss)
    prepare_seconds = time.perf_counter() - start
    dim = closure_hparams["latent_dim"]
    torch.manual_seed(seed)
    model = build_model(model_name, dim, settings[model_name]).to(torch_used)
    log.info("training %s with %s on %d samples (p = %g)", model_name, loss, len(tensors["z"]), force_store.attrs["p"])
    start = time.perf_counter()
    history = fit_dynamics(model, loss, tensors, normalisation, settings, seed, torch_used, progress)
    train_seconds = time.perf_counter() - start
    hparams = {
        "model": model_name,
        "dim": dim,
        "model_settings": settings[model_name],
        "loss": loss,
        "system": system,
        "p": float(force_store.attrs["p"]),
        "seed": seed,
        "configurations": int(force_store.attrs["configurations"]),
        "force_evaluations": int(force_store.attrs["force_evaluations"]),
        "force_unit": force_store.attrs["unit"],
        "force_wall_seconds": float(force_store.attrs["wall_seconds"]),
        "prepare_wall_seconds": prepare_seconds,
        "train_wall_seconds": train_seconds,
        "best_validation_loss": min(row["validation_loss"] for row in history),
        "provenance": provenance(settings, seed, str(torch_used)),
    }
    with atomic_directory(out) as temporary:
        temporary.mkdir()
        torch.save(model.state_dict(), temporary / "model.pt")
        (temporary / "hparams.json").write_text(json.dumps(hparams, indent=2))
        write_history(history, temporary / "history.csv")
    log.info("final %s loss %.4e after %.1f s", loss, history[-1]["loss"], train_seconds)


def load_dynamics(directory: str | Path) -> tuple[torch.nn.Module, dict]:
    """A trained latent model (in standardised units) and its hyper-parameters."""
    directory = Path(directory)
    try:
        hparams = json.loads((directory / "hparams.json").read_text())
        model = build_model(hparams["model"], hparams["dim"], hparams["model_settings"])
        model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise StoreError(directory, f"is not a complete trained model: {error}") from error
    return model.eval(), hparams
