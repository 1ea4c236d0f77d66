"""Closure autoencoder: analytic observables plus learnt closure variables (METHOD.md "Closure").

The encoder maps a microscopic state x [..., N] to z = (phi*(x), phi_hat(x)) [..., d]; the
decoder reconstructs what phi_hat reads: x itself (`closure.encoder: mlp`) or, for particle
systems, symmetric pooled descriptors of x (`particles`, see descriptors.py). With
`closure.thermodynamic`, the first closure variables are analytic (potential energy, power and
squared force per atom, descriptors.ThermodynamicClosure) and only the rest are learnt. Training penalises the condition number of J J^T, J = dz/dx, so that
the pseudo-inverse J^+ used by the micro-space losses stays well behaved.
"""

import json
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap
from tqdm import tqdm

from macroclosure.config import complete_section
from macroclosure.descriptors import ParticleBox, PooledDescriptors, ThermodynamicClosure, particle_box
from macroclosure.dynamics import feedforward
from macroclosure.history import write_history
from macroclosure.normalisation import Normalisation, fit_normalisation
from macroclosure.runtime import log, provenance, torch_device
from macroclosure.sampling import draw_configurations
from macroclosure.store import StoreError, atomic_directory, open_store, read, read_states
from macroclosure.systems import build_system, system_of


class StateInputs(nn.Module):
    """The MLP encoder's input map: the state x itself, needing no constants."""

    def __init__(self, n_dof: int):
        super().__init__()
        self.size = n_dof

    def constants(self, x: Tensor) -> tuple[()]:
        return ()

    def forward(self, x: Tensor) -> Tensor:
        return x

    def states_per_pass(self) -> None:
        """No limit of its own: the state is the input."""
        return None

    def pull_back(self, rows: Tensor | None, x: Tensor) -> Tensor | None:
        """rows @ d inputs / dx = rows: the inputs' Jacobian is the identity, left implicit
        (None) when no rows are given."""
        return rows


class Autoencoder(nn.Module):
    """Encoder = cat(observables, softplus closure network on the standardised inputs);
    softplus decoder back to the standardised inputs.

    The inputs are `inputs(x, *inputs.constants(x))`: x itself for the MLP encoder (the
    default), the pooled descriptors for the particle encoder (descriptors.PooledDescriptors),
    whose neighbour pairs are the constants. `analytic_closure` (optional) adds closure variables
    that are functions of x and those constants, placed between the observables and the learnt
    ones; together with the observables they are the fixed rows of z (`n_fixed`). The decoder
    reconstructs what the closure network reads, so an invariant encoder has an invariant target. `x_mean` and `x_std` are
    the inputs' training statistics (buffers in the state_dict, in the default dtype,
    defaulting to 0 and 1), named so from when the inputs were always x.
    """

    def __init__(
        self,
        n_dof: int,
        latent_dim: int,
        observables: Callable[[Tensor], Tensor],
        n_observables: int,
        hidden: Sequence[int] = (32, 32),
        x_mean: Tensor | None = None,
        x_std: Tensor | None = None,
        inputs: nn.Module | None = None,
        analytic_closure: nn.Module | None = None,
    ):
        super().__init__()
        if latent_dim <= n_observables:
            raise ValueError(
                f"latent_dim ({latent_dim}) must be larger than n_observables ({n_observables}) "
                "to leave room for closure variables"
            )
        self.observables = observables
        self.n_observables = n_observables
        self.latent_dim = latent_dim
        self.n_dof = n_dof
        self.inputs = StateInputs(n_dof) if inputs is None else inputs
        self.analytic_closure = analytic_closure
        self.n_fixed = n_observables + (0 if analytic_closure is None else analytic_closure.size)
        if latent_dim < self.n_fixed:
            raise ValueError(f"latent_dim ({latent_dim}) is smaller than the {self.n_fixed} observables and analytic closure variables")
        dtype = torch.get_default_dtype()
        mean = torch.zeros(self.inputs.size) if x_mean is None else x_mean
        std = torch.ones(self.inputs.size) if x_std is None else x_std
        self.register_buffer("x_mean", mean.detach().to(dtype).clone())
        self.register_buffer("x_std", std.detach().to(dtype).clone())
        self.closure_net = feedforward([self.inputs.size, *hidden, latent_dim - self.n_fixed], "softplus")
        self.decoder_net = feedforward([latent_dim, *reversed(hidden), self.inputs.size], "softplus")

    def constants(self, x: Tensor) -> tuple[Tensor, ...]:
        """What the inputs need besides x, per sample and without gradients (neighbour pairs)."""
        return self.inputs.constants(x)

    def standardised_inputs(self, x: Tensor, *constants: Tensor) -> Tensor:
        """What the closure network reads and the decoder reconstructs, [..., inputs.size]."""
        return (self.inputs(x, *(constants or self.constants(x))) - self.x_mean) / self.x_std

    def fixed(self, x: Tensor, *constants: Tensor) -> Tensor:
        """The rows of z no training changes [..., n_fixed]: the observables, then any analytic
        closure variables."""
        if self.analytic_closure is None:
            return self.observables(x)
        return torch.cat([self.observables(x), self.analytic_closure(x, *(constants or self.constants(x)))], dim=-1)

    def encode(self, x: Tensor, *constants: Tensor) -> Tensor:
        """z [..., latent_dim]: the fixed rows first, then the learnt closure variables.
        `constants` (from `constants(x)`) must be given where x is traced by torch.func."""
        constants = constants or self.constants(x)
        if self.latent_dim == self.n_fixed:  # nothing learnt: the inputs are not needed
            return self.fixed(x, *constants)
        closure = self.closure_net(self.standardised_inputs(x, *constants))
        return torch.cat([self.fixed(x, *constants), closure], dim=-1)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstructed standardised inputs [..., inputs.size]."""
        return self.decoder_net(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def fixed_jacobian(model: Autoencoder, x: Tensor, constants: tuple[Tensor, ...]) -> Tensor:
    """d fixed rows / dx [B, n_fixed, N]: the observables' by reverse mode, then the analytic
    closure variables' own."""
    rows = vmap(jacrev(model.observables))(x)
    if model.analytic_closure is None:
        return rows
    return torch.cat([rows, model.analytic_closure.jacobian(x, *constants)], dim=1)


def latent_names(model: Autoencoder, observable_names: Sequence[str]) -> list[str]:
    """What each component of z is, for figures: the observables, the analytic closure variables,
    then the learnt ones as 'closure 1', 'closure 2', ..."""
    analytic = [] if model.analytic_closure is None else list(model.analytic_closure.names)
    return [*observable_names, *analytic, *(f"closure {i + 1}" for i in range(model.latent_dim - model.n_fixed))]


class ClosureNetJacobian(NamedTuple):
    """d closure_net / d inputs = tail @ first, never multiplied out where J J^T is all that is
    needed: the inputs' dimension F then enters only through first first^T [h1, h1].

    tail: d closure_net / d (first layer's pre-activation) [B, k, h1], by reverse mode through
    the narrow layers; first: the first layer's weight over the inputs' std [h1, F].
    """

    tail: Tensor
    first: Tensor

    def full(self) -> Tensor:
        """d closure_net / d inputs [B, k, F]."""
        return self.tail @ self.first


def closure_net_jacobian(model: Autoencoder, standardised: Tensor) -> ClosureNetJacobian:
    """d closure_net / d inputs at the standardised inputs, standardisation included, as its
    two factors; differentiable w.r.t. parameters."""
    first_layer, tail = model.closure_net[0], model.closure_net[1:]
    return ClosureNetJacobian(vmap(jacrev(tail))(first_layer(standardised)), first_layer.weight / model.x_std)


def encoder_jacobian(model: Autoencoder, x: Tensor, constants: tuple[Tensor, ...] | None = None) -> Tensor:
    """J = d encode / dx per sample, [B, N] -> [B, d, N]; differentiable w.r.t. parameters.

    By the chain rule: the fixed rows, then (d closure_net / d inputs) (d inputs / dx),
    where the inputs' Jacobian is x's identity (MLP encoder) or the descriptors' closed form
    (particle encoder). The inputs' constants are computed here unless given.
    """
    constants = model.constants(x) if constants is None else constants
    if model.latent_dim == model.n_fixed:
        return fixed_jacobian(model, x, constants)
    closure_rows = closure_net_jacobian(model, model.standardised_inputs(x, *constants)).full()
    closure_rows = model.inputs.pull_back(closure_rows, x, *constants)
    return torch.cat([fixed_jacobian(model, x, constants), closure_rows], dim=1)


class ClosureData(NamedTuple):
    """What the closure loss reads of each training state, computed once (`closure_data`): none
    of it holds parameters, so an epoch never passes over the microscopic state again.

    With A_o = d fixed rows / dx (observables, analytic closure variables) and A_i = d inputs / dx,
    J = (A_o; G A_i), G = d closure_net /
    d inputs, and J J^T needs only the Gram blocks below. For the MLP encoder A_i is x's identity,
    so the cross block is A_o itself and the inputs' block is the identity (None).
    """

    observables: Tensor  # the fixed rows of z (phi*(x), analytic closure variables) [S, n_fixed]
    inputs: Tensor  # what the closure net reads, unstandardised [S, F]
    observable_gram: Tensor  # A_o A_o^T [S, n_fixed, n_fixed]
    cross_gram: Tensor  # A_o A_i^T [S, n_fixed, F]
    inputs_gram: Tensor | None  # A_i A_i^T [S, F, F]; None: the identity

    def __getitem__(self, rows):
        """The data of some states (an index tensor), or a field by position (an int)."""
        if isinstance(rows, int):
            return tuple.__getitem__(self, rows)
        return ClosureData(*(None if part is None else part[rows] for part in self))

    def __len__(self) -> int:
        return len(self.observables)


def closure_data(model: Autoencoder, x: Tensor, batch_size: int, progress: bool = False) -> ClosureData:
    """ClosureData of the states x, batch by batch and without gradients (a progress bar when
    `progress`: for the particle encoder this is the closure's longest part)."""
    parts = []
    batches = tqdm(x.split(batch_size), desc="closure inputs and Jacobians", disable=not progress, mininterval=2.0)
    with torch.no_grad():
        for batch in batches:
            constants = model.constants(batch)
            observable_rows = fixed_jacobian(model, batch, constants)
            inputs_jacobian = model.inputs.pull_back(None, batch, *constants)
            cross = observable_rows if inputs_jacobian is None else observable_rows @ inputs_jacobian.mT
            parts.append(ClosureData(
                model.fixed(batch, *constants), model.inputs(batch, *constants), observable_rows @ observable_rows.mT, cross,
                None if inputs_jacobian is None else inputs_jacobian @ inputs_jacobian.mT,
            ))
    return ClosureData(*(None if part[0] is None else torch.cat(part) for part in zip(*parts)))


def latent_gram(data: ClosureData, closure_rows: ClosureNetJacobian) -> Tensor:
    """J J^T [B, d, d] from the states' Gram blocks and G = d closure_net / d inputs = tail @ first
    (closure_net_jacobian): ((A_o A_o^T, A_o A_i^T G^T), (G A_i A_o^T, G A_i A_i^T G^T)), where
    G A_i A_i^T G^T = tail (first A_i A_i^T first^T) tail^T. For the MLP encoder (A_i = I) the
    cost per state is then O(k h1^2) instead of O(k^2 N): 14 x faster per step at LJ 800, d = 32
    (benchmarks/closure_step_cost.md)."""
    tail, first = closure_rows
    top = torch.cat([data.observable_gram, data.cross_gram @ first.mT @ tail.mT], dim=-1)
    first_gram = first @ first.mT if data.inputs_gram is None else first @ data.inputs_gram @ first.mT
    inner = tail @ first_gram @ tail.mT
    bottom = torch.cat([top[..., data.observable_gram.shape[-1] :].mT, inner], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def gram_condition_number(gram: Tensor, rows: slice | None = None) -> Tensor:
    """kappa of Gram matrices [..., d, d] (largest over smallest eigenvalue), restricted to
    some latent components first when `rows` is given (e.g. the closure rows only)."""
    if rows is not None:
        gram = gram[..., rows, rows]
    eigenvalues = torch.linalg.eigvalsh(gram)
    return eigenvalues[..., -1] / eigenvalues[..., 0]


def autoencoder_loss(
    model: Autoencoder, data: ClosureData, condition_weight: float, penalty_rows: slice | None = None
) -> dict[str, Tensor]:
    """Reconstruction MSE of the standardised inputs + condition_weight * mean (kappa - 1)^2,
    on states given by their ClosureData."""
    standardised = (data.inputs - model.x_mean) / model.x_std
    z = torch.cat([data.observables, model.closure_net(standardised)], dim=-1)
    reconstruction = (model.decode(z) - standardised).square().mean()
    gram = latent_gram(data, closure_net_jacobian(model, standardised))
    if not range(gram.shape[-1])[penalty_rows or slice(None)]:  # the closure rows are all analytic: nothing to condition
        condition = torch.zeros((), dtype=gram.dtype, device=gram.device)
    else:
        condition = (gram_condition_number(gram, penalty_rows) - 1).square().mean()
    return {
        "total": reconstruction + condition_weight * condition,
        "reconstruction": reconstruction,
        "condition": condition,
    }


def pseudo_inverse_rows(J: Tensor, rows: Tensor) -> Tensor:
    """Rows I of J^+ = J^T (J J^T)^-1 per sample: J [B, d, N], rows [B, k] -> [B, k, d].

    Only the columns J[:, I] are needed besides the Gram matrix, so the cost beyond J J^T
    is O(k d^2) per sample.
    """
    columns = torch.gather(J, 2, rows.unsqueeze(1).expand(-1, J.shape[1], -1))
    return torch.linalg.solve(J @ J.mT, columns).mT


def fit_autoencoder(
    model: Autoencoder,
    data: ClosureData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    condition_weight: float,
    seed: int,
    penalty_rows: slice | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train with Adam on shuffled minibatches of the training states' ClosureData (shuffling
    seeded by `seed`).

    Returns one dict per epoch with the sample-weighted mean of each loss term.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    bar = tqdm(range(1, epochs + 1), desc="autoencoder", disable=not progress, mininterval=2.0)
    for epoch in bar:
        sums = {"total": 0.0, "reconstruction": 0.0, "condition": 0.0}
        for batch in torch.randperm(len(data), generator=generator).split(batch_size):
            losses = autoencoder_loss(model, data[batch], condition_weight, penalty_rows)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
            for name in sums:
                sums[name] += losses[name].item() * len(batch)
        record = {"epoch": epoch, **{name: value / len(data) for name, value in sums.items()}}
        history.append(record)
        bar.set_postfix({name: f"{record[name]:.3e}" for name in sums}, refresh=False)
    return history


def encode_trajectories(model: Autoencoder, ds, dtype=torch.float32) -> np.ndarray:
    """z [trajectory, time, d] of every state in a trajectory store, one trajectory at a time,
    on the device the model is on."""
    with torch.no_grad():
        return np.stack([
            model.encode(torch.as_tensor(read(ds, "state", trajectory=i), dtype=dtype, device=model.x_mean.device)).cpu().numpy()
            for i in range(ds.sizes["trajectory"])
        ])


def encoder_box(system, hparams: dict) -> ParticleBox:
    """The particle encoder's box: the system's, with the closure's reference cutoff if it has one."""
    return particle_box(system, hparams.get("reference_cutoff"))


ENCODER_INPUTS = {
    "mlp": lambda system, hparams: StateInputs(system.dims.dof),
    "particles": lambda system, hparams: PooledDescriptors(encoder_box(system, hparams)),
}
DEFAULT_ENCODER = "mlp"  # what `closure.encoder` means when it is not set (and closures saved before it)


def encoder_of(settings: dict) -> str:
    """The closure encoder a closure section or a closure's hyper-parameters name."""
    return settings.get("encoder", DEFAULT_ENCODER)


def build_autoencoder(hparams: dict) -> Autoencoder:
    """The (untrained) autoencoder described by a closure's hyper-parameters."""
    system = build_system(hparams["system"], hparams["system_settings"])
    analytic = ThermodynamicClosure(encoder_box(system, hparams)) if hparams.get("thermodynamic", False) else None
    return Autoencoder(
        n_dof=system.dims.dof,
        latent_dim=hparams["latent_dim"],
        observables=system.observables,
        n_observables=system.dims.observables,
        hidden=hparams["hidden"],
        inputs=ENCODER_INPUTS[encoder_of(hparams)](system, hparams),
        analytic_closure=analytic,
    )


def input_statistics(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (floored at 1e-6) of the inputs [S, F] over the states, in float64."""
    inputs = inputs.double()
    return inputs.mean(0), inputs.std(0).clamp_min(1e-6)


def load_closure(directory: str | Path) -> tuple[Autoencoder, dict, Normalisation]:
    """The trained autoencoder, its hyper-parameters and the latent normalisation."""
    directory = Path(directory)
    try:
        hparams = json.loads((directory / "hparams.json").read_text())
        model = build_autoencoder(hparams)
        model.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        normalisation = Normalisation.load(directory / "normalisation.json")
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise StoreError(directory, f"is not a complete closure: {error}") from error
    return model.eval(), hparams, normalisation


def run_closure(trajectories: str, out: str, settings: dict, device: str = "auto", progress: bool = True) -> None:
    """Fit the closure autoencoder on up to `configurations` training states (on the chosen
    device) and save it with the latent normalisation of the training trajectories."""
    ds = open_store(trajectories, "trajectories")
    settings = complete_section(ds.attrs["system"], "closure", settings)
    system = system_of(ds)
    n_trajectories, n_times = ds.sizes["trajectory"], ds.sizes["time"]
    count = min(settings["configurations"], n_trajectories * n_times)
    x = torch.as_tensor(read_states(ds, *draw_configurations(n_trajectories, n_times, count, settings["seed"])), dtype=torch.float32)
    hparams = {
        "system": ds.attrs["system"],
        "system_settings": system.settings,
        "latent_dim": settings["latent_dim"],
        "hidden": settings["hidden"],
        "encoder": encoder_of(settings),
        "thermodynamic": settings.get("thermodynamic", False),
        "reference_cutoff": settings.get("reference_cutoff"),
    }
    torch_used = torch_device(device)
    hparams["provenance"] = provenance(settings, settings["seed"], str(torch_used))
    torch.manual_seed(settings["seed"])
    model = build_autoencoder(hparams).to(torch_used)
    log.info("the %s encoder's inputs and Jacobians of %d states, N = %d", hparams["encoder"], len(x), x.shape[1])
    start = time.perf_counter()
    data = closure_data(model, x.to(torch_used), settings["batch_size"], progress)
    if settings["standardise"]:
        mean, std = input_statistics(data.inputs)
        model.x_mean.copy_(mean)
        model.x_std.copy_(std)
    log.info("fitting the %s closure autoencoder: d = %d", hparams["encoder"], settings["latent_dim"])
    history = fit_autoencoder(
        model, data,
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        weight_decay=settings["weight_decay"], condition_weight=settings["condition_weight"],
        seed=settings["seed"], progress=progress,
        penalty_rows=slice(model.n_fixed, None) if settings["condition_rows"] == "closure" else None,
    )
    hparams["train_wall_seconds"] = time.perf_counter() - start
    model = model.cpu().eval()
    latent = encode_trajectories(model, ds)
    normalisation = fit_normalisation(latent, float(ds["time"][1] - ds["time"][0]))
    with atomic_directory(out) as temporary:
        temporary.mkdir()
        torch.save(model.state_dict(), temporary / "model.pt")
        (temporary / "hparams.json").write_text(json.dumps(hparams, indent=2))
        normalisation.save(temporary / "normalisation.json")
        write_history(history, temporary / "history.csv")
    log.info("closure: reconstruction %.3e, condition penalty %.3e", history[-1]["reconstruction"], history[-1]["condition"])
