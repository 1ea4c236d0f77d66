"""The particle closure encoder (`closure.encoder: particles`): symmetries, Jacobian, pipeline.

Float64 throughout, on small boxes: symmetry and Jacobian checks on 128 atoms (a random
placement pushed apart by the soft-sphere minimisation), the stages on a tiny simulated
128-atom store (skin 0.1, so the box holds twice the cutoff).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import jax_x64

from torch.func import jacrev, vmap

from macroclosure.closure import (
    Autoencoder,
    build_autoencoder,
    encoder_jacobian,
    closure_data,
    closure_net_jacobian,
    latent_gram,
    latent_names,
    load_closure,
    run_closure,
)
from macroclosure.config import ConfigError, complete_section, validate
from macroclosure.descriptors import POOLED_FEATURES, THERMODYNAMIC_VARIABLES, PooledDescriptors, ThermodynamicClosure, neighbour_pairs, particle_box
from macroclosure.sampling import sample
from macroclosure.simulate import simulate
from macroclosure.systems import build_system
from macroclosure import lennard_jones_md as lj
from macroclosure.train import latent_rate, train

ATOMS = 128


def settings_of(atoms: int, **changes) -> dict:
    return complete_section("lennard_jones", "simulate", {"atoms": atoms, "skin": 0.1, "minimise_steps": 50} | changes)


@pytest.fixture(scope="module")
def system():
    return build_system("lennard_jones", settings_of(ATOMS))


@pytest.fixture(scope="module")
def states(system):
    """Three states [3, 6 atoms]: soft-sphere-minimised positions shifted by whole boxes (so they
    are unwrapped), Gaussian velocities."""
    sim = lj.simulation_functions(system.settings)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(3):
        with jax_x64(True):
            positions = np.asarray(lj.minimise(sim, jnp.asarray(rng.uniform(0.0, sim.box, (ATOMS, 3))), 200, soft=True)[0])
        positions = positions + sim.box * rng.integers(-2, 3, (ATOMS, 3))
        rows.append(np.concatenate([positions.ravel(), rng.normal(0.0, 1.0, 3 * ATOMS)]))
    return torch.as_tensor(np.stack(rows), dtype=torch.float64)


@pytest.fixture(scope="module")
def model(system, states):
    """A random particle autoencoder in float64, standardised on the states."""
    torch.manual_seed(0)
    inputs = PooledDescriptors(particle_box(system))
    features = inputs(states, *inputs.constants(states))
    autoencoder = Autoencoder(system.dims.dof, 5, system.observables, 1, hidden=(16,), inputs=inputs,
                              x_mean=features.mean(0), x_std=features.std(0))
    return autoencoder.double()


def blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, : 3 * ATOMS].reshape(-1, ATOMS, 3), x[:, 3 * ATOMS :].reshape(-1, ATOMS, 3)


def joined(positions: torch.Tensor, velocities: torch.Tensor) -> torch.Tensor:
    return torch.cat([positions.flatten(1), velocities.flatten(1)], dim=1)


def symmetry(name: str, x: torch.Tensor, box: float) -> torch.Tensor:
    """x under one of the symmetries the encoder must respect."""
    positions, velocities = blocks(x)
    generator = torch.Generator().manual_seed(1)
    if name == "permutation":  # atoms relabelled: position and velocity rows together
        order = torch.randperm(ATOMS, generator=generator)
        return joined(positions[:, order], velocities[:, order])
    if name == "translation":
        return joined(positions + box * torch.rand(3, generator=generator, dtype=x.dtype), velocities)
    if name == "rotation":  # 90 degrees about z, (x, y, z) -> (-y, x, z): a symmetry of the cube
        quarter = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=x.dtype)
        return joined(positions @ quarter.T, velocities @ quarter.T)
    if name == "wrapping":
        return joined(torch.remainder(positions, box), velocities)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["permutation", "translation", "rotation", "wrapping"])
def test_the_encoding_is_invariant(model, states, system, name):
    with torch.no_grad():
        moved = model.encode(symmetry(name, states, system.layout["box_length"]))
        torch.testing.assert_close(moved, model.encode(states), rtol=0, atol=1e-10)


def test_the_encoding_is_not_constant(model, states):
    """The invariance test is not passed by an encoder blind to the configuration."""
    with torch.no_grad():
        z = model.encode(states)
    assert (z[1:] - z[:1]).abs().amax() > 1e-3


def test_jacobian_matches_central_differences(model, states):
    J = encoder_jacobian(model, states)
    assert J.shape == (3, 5, 6 * ATOMS)
    generator = torch.Generator().manual_seed(2)
    step = 1e-6
    with torch.no_grad():
        for _ in range(3):
            direction = torch.randn(states.shape, generator=generator, dtype=torch.float64)
            difference = (model.encode(states + step * direction) - model.encode(states - step * direction)) / (2 * step)
            torch.testing.assert_close(torch.einsum("bdn,bn->bd", J, direction), difference, rtol=1e-6, atol=1e-6)


def test_the_closed_form_jacobian_equals_reverse_mode_autograd(model, states):
    """encoder_jacobian (observables' rows, then closure-net rows pulled back through the
    descriptors' closed-form Jacobian) equals jacrev of the whole encoder, to 1e-10."""
    constants = model.constants(states)
    reference = vmap(jacrev(model.encode))(states, *constants)
    torch.testing.assert_close(encoder_jacobian(model, states, constants), reference, rtol=0, atol=1e-10 * reference.abs().max().item())


def test_the_closure_losss_gram_from_closure_data_equals_j_jt(model, states):
    """J J^T from the once-per-state Gram blocks (ClosureData) is that of J itself, so the
    condition penalty does not change with the factoring."""
    J = encoder_jacobian(model, states)
    with torch.no_grad():
        gram = latent_gram(closure_data(model, states, 2), closure_net_jacobian(model, model.standardised_inputs(states)))
    torch.testing.assert_close(gram, J @ J.mT, rtol=1e-10, atol=1e-10 * (J @ J.mT).abs().max().item())


def test_the_l_z_target_from_one_forward_pass_is_j_f(model, states):
    """train.latent_rate's jvp through the descriptors gives J f for the particle encoder too."""
    force = torch.randn(states.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, rate = latent_rate(model, states, force)
    expected = torch.einsum("bdn,bn->bd", encoder_jacobian(model, states), force)
    torch.testing.assert_close(rate, expected, rtol=1e-10, atol=1e-10 * expected.abs().max().item())


def test_the_decoder_reconstructs_the_standardised_descriptors(model, states):
    assert model(states).shape == (3, POOLED_FEATURES)
    assert model.standardised_inputs(states).shape == (3, POOLED_FEATURES)


# --- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["predator_prey", "allen_cahn"])
def test_the_schema_refuses_the_particle_encoder_for_a_grid_system(grid):
    with pytest.raises(ConfigError, match=rf"systems\.{grid}\.closure\.encoder': 'particles' is not one of \['mlp'\]"):
        validate({"systems": {grid: {"closure": {"encoder": "particles"}}}})
    efficiency = {"systems": {"lennard_jones": {}},
                  "efficiency": {"systems": {grid: {"configurations": [10], "closure": {"encoder": "particles"}}}}}
    with pytest.raises(ConfigError, match=rf"efficiency\.systems\.{grid}\.closure\.encoder': 'particles'"):
        validate(efficiency)


def test_the_particle_encoder_refuses_more_latent_variables_than_descriptors():
    closure = {"encoder": "particles", "latent_dim": POOLED_FEATURES + 1}
    with pytest.raises(ConfigError, match=rf"systems\.lennard_jones\.closure\.latent_dim': {POOLED_FEATURES + 1} exceeds"):
        validate({"systems": {"lennard_jones": {"closure": closure}}})


def test_the_encoder_defaults_to_the_mlp_without_filling_the_key():
    """Absent means mlp, and the section stays as it was, so existing jobs' params do not change."""
    config = validate({"systems": {"lennard_jones": {}}})
    assert "encoder" not in config["systems"]["lennard_jones"]["closure"]
    hparams = {"system": "lennard_jones", "system_settings": settings_of(256), "latent_dim": 3, "hidden": [4]}
    assert build_autoencoder(hparams).inputs.size == 6 * 256


# --- the stages ---------------------------------------------------------------------------
def closure_then_training(tmp_path, closure_settings: dict):
    """Simulate a tiny store, fit the closure with these settings, then train an MLP with L_z and
    with L_x,p (50 of 800 atoms' fraction) on it; returns the loaded closure and its hyper-parameters."""
    trajectories = tmp_path / "train.zarr"
    simulate("lennard_jones", settings_of(ATOMS, steps=10, save_every=5, trajectories={"train": 1, "test": 1}, dtype="float64"),
             "train", str(trajectories), device="cpu", progress=False)
    closure = tmp_path / "closure"
    settings = {"encoder": "particles", "hidden": [8], "epochs": 1, "batch_size": 3, "condition_rows": "closure"} | closure_settings
    run_closure(str(trajectories), str(closure), settings, device="cpu", progress=False)
    train_settings = {"epochs": 2, "batch_size": 2, "mlp": {"hidden": [8]}}
    for loss, p in (("L_z", 1.0), ("L_xp", 0.0625)):
        forces = tmp_path / f"forces_{p}.zarr"
        sample(str(trajectories), str(forces), p, 0, {"configurations": 3, "batch_size": 3}, device="cpu", progress=False)
        out = tmp_path / f"mlp_{loss}"
        train(str(trajectories), str(forces), str(closure), str(out), "mlp", loss, 0, train_settings, device="cpu", progress=False)
        assert (out / "model.pt").exists()
    model, hparams, _ = load_closure(closure)
    return model, hparams


def test_closure_and_training_run_with_the_particle_encoder(tmp_path):
    model, hparams = closure_then_training(tmp_path, {"latent_dim": 3})
    assert hparams["encoder"] == "particles" and isinstance(model.inputs, PooledDescriptors)
    assert torch.all(model.x_std != 1)  # the descriptors' statistics were fitted and saved


def test_the_descriptor_pair_energy_is_the_systems_potential():
    """descriptors.lennard_jones_energy (torch) restates lennard_jones_md.pair_energy (jax):
    both must give the same truncated energy, inside, at and beyond the cutoff."""
    from macroclosure.descriptors import lennard_jones_energy

    r = np.concatenate([np.linspace(0.85, 3.0, 200), [2.5 - 1e-12, 2.5, 2.5 + 1e-12]])
    with jax_x64(True):
        expected = np.asarray(lj.pair_energy(jnp.asarray(r), 2.5))
    got = lennard_jones_energy(torch.as_tensor(r, dtype=torch.float64), 2.5).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)
    assert expected[-2] == 0.0 and expected[-3] != 0.0


# --- the thermodynamic closure variables (`closure.thermodynamic`) ------------------------
@pytest.fixture(scope="module")
def thermodynamic_model(system, states):
    """A random particle autoencoder with the three analytic closure variables and two learnt."""
    torch.manual_seed(0)
    box = particle_box(system)
    inputs = PooledDescriptors(box)
    features = inputs(states, *inputs.constants(states))
    autoencoder = Autoencoder(system.dims.dof, 6, system.observables, 1, hidden=(16,), inputs=inputs,
                              x_mean=features.mean(0), x_std=features.std(0), analytic_closure=ThermodynamicClosure(box))
    return autoencoder.double()


@pytest.mark.parametrize("reference_cutoff", [None, 2.0])
def test_the_thermodynamic_variables_are_the_hand_computed_energy_power_and_squared_force(system, states, reference_cutoff):
    """U / A, sum v.F / A and sum |F|^2 / A equal the hand-computed ones: the forces are the
    velocity rows of f (jax-md, m = 1) of the system simulated with the encoder's cutoff (the
    system's own, or the closure's reference_cutoff), the energy the sum over all pairs (minimum
    image, numpy) of lennard_jones_md.pair_energy at that cutoff."""
    box = particle_box(system, reference_cutoff)
    reference = system if reference_cutoff is None else build_system("lennard_jones", settings_of(ATOMS, r_cutoff=reference_cutoff))
    assert box.r_cutoff == reference.settings["r_cutoff"]
    variables = ThermodynamicClosure(box)(states, *neighbour_pairs(states, box))
    for state, got in zip(states.numpy(), variables.numpy()):
        positions, velocities = state[: 3 * ATOMS].reshape(ATOMS, 3), state[3 * ATOMS :].reshape(ATOMS, 3)
        with jax_x64(True):
            forces = np.asarray(reference.rhs(jnp.asarray(state)))[3 * ATOMS :].reshape(ATOMS, 3)
        delta = positions[:, None] - positions[None]
        delta -= box.box_length * np.round(delta / box.box_length)
        r = np.sqrt(np.square(delta).sum(-1))[np.triu_indices(ATOMS, 1)]
        with jax_x64(True):
            energy = float(np.asarray(lj.pair_energy(jnp.asarray(r), box.r_cutoff)).sum())
        expected = [energy / ATOMS, np.einsum("ai,ai->", velocities, forces) / ATOMS, np.square(forces).sum() / ATOMS]
        np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["permutation", "translation", "rotation", "wrapping"])
def test_the_thermodynamic_encoding_is_invariant(thermodynamic_model, states, system, name):
    with torch.no_grad():
        moved = thermodynamic_model.encode(symmetry(name, states, system.layout["box_length"]))
        torch.testing.assert_close(moved, thermodynamic_model.encode(states), rtol=0, atol=1e-10)


def test_the_thermodynamic_jacobian_matches_central_differences_and_j_f_gives_the_energy_exchange(thermodynamic_model, states, system):
    """J (reverse over reverse through the forces) matches central differences; along the
    system's own f, the potential energy's rate is minus the power (energy conservation) and the
    temperature's is 2 A / (3 (A - 1)) times it, exactly."""
    model = thermodynamic_model
    constants = model.constants(states)
    J = encoder_jacobian(model, states, constants)
    assert J.shape == (3, 6, 6 * ATOMS)
    generator = torch.Generator().manual_seed(3)
    step = 1e-6
    with torch.no_grad():  # the pairs held fixed: the truncated LJ force jumps where a pair crosses r_c
        direction = torch.randn(states.shape, generator=generator, dtype=torch.float64)
        difference = (model.encode(states + step * direction, *constants) - model.encode(states - step * direction, *constants)) / (2 * step)
    torch.testing.assert_close(torch.einsum("bdn,bn->bd", J, direction), difference, rtol=1e-6, atol=1e-6 * difference.abs().max().item())
    with jax_x64(True):
        force = torch.stack([torch.as_tensor(np.asarray(system.rhs(jnp.asarray(x.numpy())))) for x in states])
    z, rate = latent_rate(model, states, force)
    power = z[:, 2]
    torch.testing.assert_close(rate[:, 1], -power, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rate[:, 0], 2 * ATOMS * power / (3 * (ATOMS - 1)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rate, torch.einsum("bdn,bn->bd", J, force), rtol=1e-9, atol=1e-9 * rate.abs().max().item())


def test_the_thermodynamic_closed_form_jacobian_equals_reverse_mode_autograd(thermodynamic_model, states):
    """The analytic rows' closed form (F and two Hessian-vector products) equals jacrev through
    the whole encoder, forces and all, to 1e-10."""
    constants = thermodynamic_model.constants(states)

    def one_state(x, pairs, real):
        return thermodynamic_model.encode(x[None], pairs[None], real[None])[0]

    reference = vmap(jacrev(one_state))(states, *constants)
    got = encoder_jacobian(thermodynamic_model, states, constants)
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-10 * reference.abs().max().item())


def test_with_nothing_learnt_z_is_temperature_and_the_thermodynamic_variables_and_j_matches_differences(system, states):
    box = particle_box(system)
    model = Autoencoder(system.dims.dof, 4, system.observables, 1, hidden=(16,), inputs=PooledDescriptors(box),
                        analytic_closure=ThermodynamicClosure(box)).double()
    constants = model.constants(states)
    with torch.no_grad():
        z = model.encode(states, *constants)
        direction = torch.randn(states.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        difference = (model.encode(states + 1e-6 * direction, *constants) - model.encode(states - 1e-6 * direction, *constants)) / 2e-6
    torch.testing.assert_close(z, torch.cat([system.observables(states), ThermodynamicClosure(box)(states, *constants)], 1))
    J = encoder_jacobian(model, states, constants)
    torch.testing.assert_close(torch.einsum("bdn,bn->bd", J, direction), difference, rtol=1e-6, atol=1e-6 * difference.abs().max().item())


def test_the_thermodynamic_closure_needs_the_particle_encoder_and_room_in_the_latent():
    with pytest.raises(ConfigError, match=r"systems\.lennard_jones\.closure\.thermodynamic': needs 'systems\.lennard_jones\.closure\.encoder: particles'"):
        validate({"systems": {"lennard_jones": {"closure": {"thermodynamic": True, "latent_dim": 4}}}})
    with pytest.raises(ConfigError, match=r"systems\.lennard_jones\.closure\.latent_dim': 3 leaves no room for the 3 thermodynamic"):
        validate({"systems": {"lennard_jones": {"closure": {"thermodynamic": True, "encoder": "particles", "latent_dim": 3}}}})
    with pytest.raises(ConfigError, match=r"systems\.predator_prey\.closure\.thermodynamic': True is not one of \[False\]"):
        validate({"systems": {"predator_prey": {"closure": {"thermodynamic": True}}}})
    assert "thermodynamic" not in validate({"systems": {"lennard_jones": {}}})["systems"]["lennard_jones"]["closure"]


def test_a_reference_cutoff_needs_the_particle_encoder_and_at_most_the_simulated_cutoff():
    key = r"systems\.lennard_jones\.closure\.reference_cutoff'"
    with pytest.raises(ConfigError, match=key + r": needs 'systems\.lennard_jones\.closure\.encoder: particles'"):
        validate({"systems": {"lennard_jones": {"closure": {"reference_cutoff": 2.0}}}})
    with pytest.raises(ConfigError, match=key + r": 3\.0 exceeds the simulated r_cutoff 2\.5"):
        validate({"systems": {"lennard_jones": {"closure": {"encoder": "particles", "reference_cutoff": 3.0}}}})
    with pytest.raises(ConfigError, match=r"efficiency\.systems\.lennard_jones\.closure\.reference_cutoff': 3\.0 exceeds .* at size 256"):
        validate({"systems": {"lennard_jones": {}}, "efficiency": {"systems": {"lennard_jones": {
            "sizes": [256], "configurations": [10], "closure": {"encoder": "particles", "reference_cutoff": 3.0}}}}})
    with pytest.raises(ConfigError, match=r"systems\.predator_prey\.closure\.reference_cutoff'"):
        validate({"systems": {"predator_prey": {"closure": {"reference_cutoff": 2.0}}}})
    validate({"systems": {"lennard_jones": {"closure": {"encoder": "particles", "reference_cutoff": 2.0}}}})


def test_closure_and_training_run_with_only_thermodynamic_closure_variables(tmp_path):
    """latent_dim 4: T and the three analytic variables, nothing learnt in the encoder, so the
    condition penalty has no rows; the closure, L_z and L_x,p still run. The closure's reference
    cutoff is saved and rebuilds an encoder whose pairs and potential use it."""
    model, hparams = closure_then_training(tmp_path, {"thermodynamic": True, "latent_dim": 4, "reference_cutoff": 2.0})
    assert hparams["thermodynamic"] and isinstance(model.analytic_closure, ThermodynamicClosure) and model.n_fixed == 4
    assert hparams["reference_cutoff"] == 2.0 and model.analytic_closure.box.r_cutoff == model.inputs.box.r_cutoff == 2.0
    assert latent_names(model, ["temperature"]) == ["temperature", *THERMODYNAMIC_VARIABLES]
