"""Evaluation: RK4 rollouts of the learnt latent dynamics against the encoded test truth.

Each test trajectory is encoded, z(t) = phi(x(t)), and dz/dt = g(z) is integrated from z(0)
on the same time grid. The score is the relative rollout error of the observables,
e = sum_t |z*_pred(t) - z*(t)| / sum_t |z*(t)| per trajectory, then averaged.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from macroclosure.closure import encode_trajectories, latent_names, load_closure  # noqa: E402
from macroclosure.config import complete_section  # noqa: E402
from macroclosure.dynamics import rk4_rollout  # noqa: E402
from macroclosure.metric import relative_rollout_error  # noqa: E402
from macroclosure.normalisation import PhysicalRate  # noqa: E402
from macroclosure.runtime import log, torch_device  # noqa: E402
from macroclosure.store import atomic_directory, open_store  # noqa: E402
from macroclosure.systems import system_of  # noqa: E402
from macroclosure.train import load_dynamics  # noqa: E402


def rollout(model: torch.nn.Module, z0: np.ndarray, n_steps: int, dt: float, substeps: int, device: torch.device) -> np.ndarray:
    """RK4 rollout of `model` from z0 [B, d] on `device`; [B, n_steps + 1, d] as a NumPy array."""
    with torch.no_grad():
        return rk4_rollout(model.to(device), torch.as_tensor(z0, dtype=torch.float32, device=device), n_steps, dt, substeps).cpu().numpy()


def plot_rollouts(time: np.ndarray, truth: np.ndarray, predicted: np.ndarray, names: list[str], title: str, path: Path) -> None:
    """Each latent component against time: truth solid, ensemble mean dashed, the members'
    range shaded, one colour per trajectory. predicted is [member, trajectory, time, d]."""
    d = truth.shape[-1]
    figure, axes = plt.subplots(1, d, figsize=(3.2 * d, 3.0), squeeze=False)
    for component, axis in enumerate(axes[0]):
        for trajectory in range(truth.shape[0]):
            colour = f"C{trajectory}"
            axis.plot(time, truth[trajectory, :, component], color=colour, lw=1.5)
            members = predicted[:, trajectory, :, component]
            axis.plot(time, members.mean(0), color=colour, lw=1.5, ls="--")
            if len(members) > 1:
                axis.fill_between(time, members.min(0), members.max(0), color=colour, alpha=0.2, lw=0)
        axis.set_title(names[component])
        axis.set_xlabel("t")
    axes[0][0].plot([], [], color="k", label="truth")
    axes[0][0].plot([], [], color="k", ls="--", label="model")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def evaluate(model_dir: str, closure: str, trajectories: str, out: str, settings: dict, device: str = "auto") -> None:
    """Score one trained model on the test trajectories; write metrics.json and rollout.png.

    Encoding and rollouts run on the torch device chosen by `device` (auto | cpu | cuda)."""
    torch_used = torch_device(device)
    autoencoder, closure_hparams, normalisation = load_closure(closure)
    members, hparams = load_dynamics(model_dir)
    settings = complete_section(closure_hparams["system"], "evaluate", settings)
    ds = open_store(trajectories, "trajectories", system=closure_hparams["system"])
    system = system_of(ds)
    time = ds["time"].values
    log.info("encoding %d test trajectories, then rolling out %d ensemble members from their first states",
             ds.sizes["trajectory"], len(members))
    truth = encode_trajectories(autoencoder.to(torch_used), ds)
    predicted = np.stack([
        rollout(PhysicalRate(model, normalisation), truth[:, 0], len(time) - 1, float(time[1] - time[0]), settings["substeps"], torch_used)
        for model in members
    ])
    m = system.dims.observables
    errors = relative_rollout_error(predicted[..., :m], truth[None, ..., :m])  # [member, trajectory]
    member_errors = errors.mean(1)
    metrics = {
        name: hparams[name]
        for name in ("system", "model", "loss", "p", "seed", "configurations", "force_evaluations",
                     "force_unit", "force_wall_seconds", "train_wall_seconds")
    } | {
        "rollout_error": float(member_errors.mean()),
        "member_rollout_errors": member_errors.tolist(),
        "member_lr_dropped": hparams.get("member_lr_dropped"),  # absent from models trained before it was recorded
        "rollout_error_per_trajectory": errors.tolist(),
        "ensemble": len(members),
        "test_trajectories": int(errors.shape[1]),
        "units": system.dims.units,
    }
    names = latent_names(autoencoder, system.observable_names)
    shown = settings["plot_trajectories"]
    spread = f" ± {member_errors.std():.1e} over {len(members)} members" if len(members) > 1 else ""
    title = (f"{hparams['system']}: {hparams['model']} {hparams['loss']} p={hparams['p']:g} seed {hparams['seed']}, "
             f"e = {member_errors.mean():.2e}{spread}")
    with atomic_directory(out) as temporary:
        temporary.mkdir()
        (temporary / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_rollouts(time, truth[:shown], predicted[:, :shown], names, title, temporary / "rollout.png")
    log.info("rollout error %.3e (members: %s) over %d test trajectories", member_errors.mean(),
             ", ".join(f"{e:.2e}" for e in member_errors), errors.shape[1])
