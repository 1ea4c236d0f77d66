"""Latent-dynamics training with L_z, L_x, L_x,p (METHOD.md, "Three losses"), L_x,p,c, L_z,p or L_z,u.

The closure is frozen: each sampled configuration is encoded once, z = phi(x), with its
Jacobian J. L_z needs the full force to form J f; L_x and L_x,p need only the rows
J+[I, :] for the computed forces f_I (all rows for L_x), so one data path serves both, and
L_z,p trains like L_z on the least-squares rate those rows give (losses.estimated_rate).
L_x,p,c is L_x,p with the sampled forces less a learnt local surrogate's unresolved part
(surrogate.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.func import jvp
from tqdm import tqdm

from macroclosure.closure import Autoencoder, encoder_jacobian, load_closure, pseudo_inverse_rows
from macroclosure.config import complete_section
from macroclosure.dynamics import build_model
from macroclosure.ensemble import Stacked, build_members, member_seed
from macroclosure.history import write_history
from macroclosure.losses import estimated_rate, latent_loss, micro_loss_from_moments, micro_moments
from macroclosure.normalisation import Normalisation
from macroclosure.planning import train_settings
from macroclosure.runtime import log, provenance, torch_device
from macroclosure.store import StoreError, atomic_directory, open_store, read, read_states
from macroclosure.surrogate import Surrogate, fit as fit_surrogate, fold_of, forces_everywhere
from macroclosure.systems import System, system_of

JACOBIAN_BYTES = 256 * 2**20  # memory for one batch of float64 encoder Jacobians
LATENT_LOSSES = ("L_z", "L_zp", "L_zu")  # compare g with a dz/dt target in standardised units


def latent_rate(encoder: Autoencoder, x: torch.Tensor, force: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and its rate J f along the full force f, [B, N] -> [B, d] each: one forward-mode pass
    (torch.func.jvp) instead of the d rows of J."""
    constants = encoder.constants(x)
    return jvp(lambda states: encoder.encode(states, *constants), (x,), (force,))


def sampled_rate(encoder: Autoencoder, x: torch.Tensor, rows: torch.Tensor, force: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and the unbiased estimate of J f from the forces on some rows, (N / k) J[:, rows] f_rows
    per sample ([B, N], rows and force [B, k]): every unit holds the same number of rows, so N / k is
    units over sampled units; with every row it is J f itself (L_z's target, L_z,u's otherwise)."""
    sampled_force = torch.zeros_like(x).scatter_(1, rows, force) * (x.shape[1] / rows.shape[1])
    return latent_rate(encoder, x, sampled_force)


class ForceSurrogate(NamedTuple):
    """L_x,p,c's control variate: the cross-fitted surrogate, each configuration's fold [S], and
    every row's stencil rows [N, s] and force law [N]."""

    surrogate: Surrogate
    folds: torch.Tensor
    stencil_rows: torch.Tensor
    laws: torch.Tensor
    held_out_error: float


def state_batches(autoencoder: Autoencoder, trajectories, forces, count: int):
    """(sample indices, float64 states) of the force store's configurations, batch by batch so
    that one batch of encoder Jacobians fits in JACOBIAN_BYTES."""
    trajectory, time_index = read(forces, "trajectory"), read(forces, "time_index")
    batch_size = max(1, JACOBIAN_BYTES // (8 * autoencoder.latent_dim * autoencoder.n_dof))
    batch_size = min(batch_size, autoencoder.inputs.states_per_pass() or batch_size)  # the particle encoder's pairs
    for batch in torch.arange(count).split(batch_size):
        rows = batch.numpy()
        yield batch, torch.as_tensor(read_states(trajectories, trajectory[rows], time_index[rows]), dtype=torch.float64)


def fit_force_surrogate(system: System, batches, index: torch.Tensor, force: torch.Tensor, degree: int, seed: int) -> ForceSurrogate:
    """Fit the local surrogate of L_x,p,c on the stored partial forces (surrogate.fit): the stencil
    values of every sampled row, [S, k, s], read batch by batch from `batches` (state_batches)."""
    if system.stencil is None:
        raise ValueError(f"L_xpc needs a system whose forces read a fixed stencil; {system.name} has none")
    stencil_rows, laws = (torch.as_tensor(part) for part in system.stencil(np.arange(system.dims.dof)))
    values = torch.cat([x.gather(1, stencil_rows[index[batch]].flatten(1)).view(*index[batch].shape, -1) for batch, x in batches])
    generator = torch.Generator().manual_seed(seed)
    folds = fold_of(len(index), generator)
    surrogate, error = fit_surrogate(values, laws[index], force, folds, degree, int(laws.max()) + 1, generator)
    log.info("force surrogate (degree %d): held-out relative error %.3e on %d sampled rows", degree, error, index.numel())
    return ForceSurrogate(surrogate, folds, stencil_rows, laws, error)


def unresolved_force(control: ForceSurrogate, batch: torch.Tensor, x: torch.Tensor, J: torch.Tensor, pinv_rows: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor:
    """[(1 - J^+ J) f_hat]_I per sample, [B, k]: the surrogate's estimate of the force outside J's
    row space on the sampled rows, from f_hat on every row (its fold's fit)."""
    f_hat = forces_everywhere(control.surrogate, x, control.folds[batch], control.stencil_rows, control.laws)
    resolved = (pinv_rows @ (J @ f_hat.unsqueeze(-1))).squeeze(-1)
    return f_hat.gather(1, rows) - resolved


def training_tensors(autoencoder: Autoencoder, trajectories, forces, loss: str, surrogate_degree: int = 3,
                     seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Per sample: z and either a latent target (J f for L_z, its least-squares estimate from
    the computed rows for L_z,p, its unbiased estimate for L_z,u) or the moments of the micro-space loss;
    and what was learnt on the way (L_x,p,c's surrogate error).

    States are read and J [d, N] evaluated batch by batch (float64, so the pseudo-inverse
    rows are accurate), so memory stays bounded for large N. L_x, L_x,p and L_x,p,c keep only the
    d x d moments of J+[I, :] and f_I (losses.micro_moments), in float64; L_x,p,c's f_I less the
    surrogate's unresolved force (unresolved_force), its surrogate fitted with `seed`.
    """
    n_dof = autoencoder.n_dof
    index = torch.as_tensor(read(forces, "index"))
    force = torch.as_tensor(read(forces, "force"), dtype=torch.float64)
    if loss == "L_z" and index.shape[1] != n_dof:
        raise StoreError(forces.encoding.get("source"), f"L_z needs every force (p = 1), this store holds {index.shape[1]} of {n_dof} rows")
    if loss == "L_zp" and index.shape[1] < autoencoder.latent_dim:
        raise StoreError(forces.encoding.get("source"), f"L_zp estimates the {autoencoder.latent_dim} latent rates from each "
                         f"configuration's force rows and needs at least as many, this store holds {index.shape[1]}")
    encoder = autoencoder.double()
    control, learnt = None, {}
    if loss == "L_xpc":
        control = fit_force_surrogate(system_of(trajectories), state_batches(encoder, trajectories, forces, len(index)),
                                      index, force, surrogate_degree, seed)
        learnt = {"surrogate_degree": surrogate_degree, "surrogate_held_out_error": control.held_out_error}
    parts: dict[str, list[torch.Tensor]] = {}
    for batch, x in state_batches(encoder, trajectories, forces, len(index)):
        with torch.no_grad():
            if loss in ("L_z", "L_zu"):
                z, rate = sampled_rate(encoder, x, index[batch], force[batch])
                values = {"z": z.float(), "target": rate.float()}
            else:
                values = {"z": encoder.encode(x).float()}
                J = encoder_jacobian(encoder, x)
                pinv_rows = pseudo_inverse_rows(J, index[batch])
                targets = force[batch]
                if control is not None:
                    targets = targets - unresolved_force(control, batch, x, J, pinv_rows, index[batch])
                values |= micro_moments(pinv_rows, targets)
                if loss == "L_zp":
                    values = {"z": values["z"], "target": estimated_rate(values["gram"], values["cross"]).float()}
        for name, value in values.items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}, learnt


def batch_loss(model, loss: str, batch: dict[str, torch.Tensor], scale: dict[str, torch.Tensor]) -> torch.Tensor:
    """The configured loss on one minibatch; g works in standardised units."""
    prediction = model((batch["z"] - scale["z_mean"]) / scale["z_std"])
    if loss in LATENT_LOSSES:
        return latent_loss(prediction, (batch["target"] - scale["rate_mean"]) / scale["rate_std"])
    rate = scale["rate_mean"] + scale["rate_std"] * prediction
    return micro_loss_from_moments(batch["gram"], batch["cross"], batch["offset"], rate)


def split_validation(count: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of training and held-out validation samples (at least one of each)."""
    order = torch.randperm(count, generator=generator)
    held_out = min(count - 1, max(1, round(fraction * count)))
    return order[held_out:], order[:held_out]


def mean_losses(stacked: Stacked, loss: str, tensors: dict, scale: dict, indices: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Each member's loss over `indices`, without gradients: [K]."""
    total = torch.zeros(stacked.count, dtype=torch.float64)
    with torch.no_grad():
        for batch in indices.split(batch_size):
            data = {name: t[batch] for name, t in tensors.items()}
            total += stacked.map(lambda model: batch_loss(model, loss, data, scale)).double().cpu() * len(batch)
    return total / len(indices)


class MemberSchedules:
    """One ReduceLROnPlateau per ensemble member, each judged on that member's own loss.

    The published ensembles are members trained one by one, each with its own schedule; a
    schedule shared by the stacked members would halve every member's rate when their mean
    stalls. Each schedule steps a placeholder optimizer, and `scale_steps` gives the stacked
    parameters each member's rate: AdamW without weight decay moves a parameter by its rate
    times a rate-free direction, so a step taken at the largest rate and scaled by
    rate / largest rate is that member's own step.
    """

    def __init__(self, count: int, settings: dict):
        self.schedules = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=settings["lr"]),
                factor=settings["plateau_factor"], patience=settings["plateau_patience"], min_lr=settings["min_lr"],
            )
            for _ in range(count)
        ]

    def rates(self) -> torch.Tensor:
        """[K]: each member's learning rate now."""
        return torch.tensor([schedule.get_last_lr()[0] for schedule in self.schedules], dtype=torch.float64)

    def step(self, losses: torch.Tensor) -> None:
        """Advance each member's schedule by its own epoch loss, [K]."""
        for schedule, value in zip(self.schedules, losses.tolist()):
            schedule.step(value)

    def scale_steps(self, params: dict, before: dict, largest: float) -> None:
        """Shrink each member's step from `before` (taken at rate `largest`) to its own rate."""
        factors = self.rates() / largest
        if bool((factors == 1).all()):
            return
        with torch.no_grad():
            for name, value in params.items():
                factor = factors.to(value.device, value.dtype).view(-1, *[1] * (value.dim() - 1))
                value.copy_(torch.where(factor == 1, value, before[name] + (value - before[name]) * factor))


def fit_dynamics(members: list, loss: str, tensors: dict, normalisation: Normalisation, settings: dict, seed: int, device, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Train ensemble members together: AdamW (amsgrad), ReduceLROnPlateau down to `min_lr`.

    The same loss on held-out configurations is an unbiased estimate of the population loss
    (for L_x,p too), so by default (`keep: best`) each member keeps its parameters of lowest
    validation loss and the plateau is judged on that loss: noisy partial targets cannot be
    memorised unnoticed. `plateau_on: training` and `keep: last` give the published schedule
    (plateau on the training loss, final weights). Members see the same minibatches; their
    gradients, AdamW moments and plateau schedules (MemberSchedules) are their own, so each
    evolves as if trained alone. The history's `lr` is the members' mean rate.
    Returns the per-epoch history, one state_dict per member and the members' final rates.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: value.to(device) for name, value in tensors.items()}
    scale = {name: value.to(device) for name, value in normalisation.tensors().items()}
    training, validation = (part.to(device) for part in split_validation(len(tensors["z"]), settings["validation_fraction"], generator))
    stacked = Stacked([member.to(device) for member in members])
    optimizer = torch.optim.AdamW(stacked.params.values(), lr=settings["lr"], weight_decay=0.0, amsgrad=True)
    schedules = MemberSchedules(stacked.count, settings)
    best_loss = torch.full((stacked.count,), float("inf"), dtype=torch.float64)
    best_params = {name: value.detach().clone() for name, value in stacked.params.items()}
    history = []
    bar = tqdm(range(1, settings["epochs"] + 1), desc=f"train {loss}", disable=not progress, mininterval=2.0)
    for epoch in bar:
        total = torch.zeros(stacked.count, dtype=torch.float64)
        largest = float(schedules.rates().max())
        optimizer.param_groups[0]["lr"] = largest
        for batch in training[torch.randperm(len(training), generator=generator).to(device)].split(settings["batch_size"]):
            data = {name: t[batch] for name, t in tensors.items()}
            values = stacked.map(lambda model: batch_loss(model, loss, data, scale))
            before = {name: value.detach().clone() for name, value in stacked.params.items()}
            optimizer.zero_grad()
            values.sum().backward()
            optimizer.step()
            schedules.scale_steps(stacked.params, before, largest)
            total += values.detach().double().cpu() * len(batch)
        held_out = mean_losses(stacked, loss, tensors, scale, validation, settings["batch_size"])
        if not torch.isfinite(held_out).all():
            member = int(torch.nonzero(~torch.isfinite(held_out))[0])
            raise FloatingPointError(f"{loss} of ensemble member {member} became non-finite at epoch {epoch}; lower the learning rate")
        training_loss = total / len(training)
        schedules.step(training_loss if settings["plateau_on"] == "training" else held_out)
        improved = held_out < best_loss
        best_loss = torch.where(improved, held_out, best_loss)
        for name, value in stacked.params.items():
            best_params[name][improved.to(device)] = value.detach()[improved.to(device)]
        history.append({"epoch": epoch, "loss": training_loss.mean().item(), "validation_loss": held_out.mean().item(),
                        "lr": schedules.rates().mean().item()})
        bar.set_postfix(loss=f"{training_loss.mean():.3e}", validation=f"{held_out.mean():.3e}", refresh=False)
    return history, stacked.state_dicts(best_params if settings["keep"] == "best" else None), schedules.rates().tolist()


def lr_dropped(final_rates: list[float], settings: dict) -> list[bool] | None:
    """Per member: did its learning rate ever drop below the start? None where the schedule
    could not lower it (`min_lr` at or above `lr`). A member that could but did not had a
    plateau schedule that never fired (a loss that keeps creeping down by more than the
    plateau threshold, as a noisy training loss can), so the weights it keeps were never
    annealed; reports flag such models."""
    if settings["min_lr"] >= settings["lr"]:
        return None
    return [rate < settings["lr"] for rate in final_rates]


def warn_if_never_annealed(dropped: list[bool] | None, settings: dict) -> None:
    """Log a warning naming the fix when some member's learning rate never dropped (`dropped`
    as `lr_dropped` gives it)."""
    stuck = (dropped or []).count(False)
    if stuck:
        log.warning("%d of %d members ended at the starting learning rate %g: the plateau on the %s loss never fired "
                    "in %d epochs, so their %s weights are un-annealed; lower train.plateau_patience (%d) or raise "
                    "train.epochs", stuck, len(dropped), settings["lr"], settings["plateau_on"], settings["epochs"],
                    settings["keep"], settings["plateau_patience"])


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
    log.info("preparing %s targets: encoder Jacobians of %d configurations", loss, force_store.sizes["sample"])
    start = time.perf_counter()
    tensors, learnt = training_tensors(autoencoder, trajectory_store, force_store, loss, settings["surrogate_degree"], seed)
    prepare_seconds = time.perf_counter() - start
    dim = closure_hparams["latent_dim"]
    members = build_members(model_name, dim, settings[model_name], seed, settings["ensemble"])
    log.info("training %d x %s with %s on %d samples (p = %g)", len(members), model_name, loss, len(tensors["z"]), force_store.attrs["p"])
    start = time.perf_counter()
    history, state_dicts, final_rates = fit_dynamics(members, loss, tensors, normalisation, settings, seed, torch_used, progress)
    train_seconds = time.perf_counter() - start
    dropped = lr_dropped(final_rates, settings)
    warn_if_never_annealed(dropped, settings)
    hparams = {
        "model": model_name,
        "dim": dim,
        "model_settings": settings[model_name],
        "loss": loss,
        "system": system,
        "p": float(force_store.attrs["p"]),
        "seed": seed,
        "ensemble": len(members),
        "member_seeds": [member_seed(seed, member) for member in range(len(members))],
        "configurations": int(force_store.attrs["configurations"]),
        "force_evaluations": int(force_store.attrs["force_evaluations"]),
        "force_unit": force_store.attrs["unit"],
        "force_wall_seconds": float(force_store.attrs["wall_seconds"]),
        "prepare_wall_seconds": prepare_seconds,
        "train_wall_seconds": train_seconds,
        "best_validation_loss": min(row["validation_loss"] for row in history),
        "member_final_lr": final_rates,
        "member_lr_dropped": dropped,
        **learnt,
        "provenance": provenance(train_settings(settings, model_name, loss), seed, str(torch_used)),
    }
    with atomic_directory(out) as temporary:
        temporary.mkdir()
        torch.save({"members": state_dicts}, temporary / "model.pt")
        (temporary / "hparams.json").write_text(json.dumps(hparams, indent=2))
        write_history(history, temporary / "history.csv")
    log.info("final %s loss %.4e after %.1f s", loss, history[-1]["loss"], train_seconds)


def load_dynamics(directory: str | Path) -> tuple[list[torch.nn.Module], dict]:
    """The trained ensemble members (in standardised units) and their hyper-parameters."""
    directory = Path(directory)
    try:
        hparams = json.loads((directory / "hparams.json").read_text())
        members = []
        for state_dict in torch.load(directory / "model.pt", map_location="cpu", weights_only=True)["members"]:
            model = build_model(hparams["model"], hparams["dim"], hparams["model_settings"])
            model.load_state_dict(state_dict)
            members.append(model.eval())
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise StoreError(directory, f"is not a complete trained model: {error}") from error
    return members, hparams
