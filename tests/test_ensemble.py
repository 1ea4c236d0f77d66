"""Ensembles trained as one stacked, vmapped model behave like their members trained alone."""

import copy

import pytest
import torch

from macroclosure.config import complete_section
from macroclosure.ensemble import Stacked, build_members, member_seed
from macroclosure.losses import micro_moments
from macroclosure.normalisation import Normalisation
from macroclosure.train import fit_dynamics, lr_dropped, mean_losses, split_validation, warn_if_never_annealed

DIM = 3
MODELS = {"mlp": {"hidden": [16]}, "onsager": {"hidden": 8}, "gfinn": {"hidden": 8}}
SETTINGS = complete_section("predator_prey", "train", {"epochs": 4, "batch_size": 16, "lr": 1e-3, "plateau_patience": 100,
                                                      "plateau_factor": 0.5, "validation_fraction": 0.25})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def identity_normalisation() -> Normalisation:
    return Normalisation(z_mean=[0.0] * DIM, z_std=[1.0] * DIM, rate_mean=[0.0] * DIM, rate_std=[1.0] * DIM)


def training_data(loss: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(64, DIM, generator=generator)
    if loss == "L_z":
        return {"z": z, "target": -z + 0.1 * torch.randn(64, DIM, generator=generator)}
    rows = torch.randn(64, 5, DIM, generator=generator, dtype=torch.float64)
    force = torch.randn(64, 5, generator=generator, dtype=torch.float64)
    return {"z": z} | micro_moments(rows, force)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stacked_members_give_each_members_output(name):
    members = build_members(name, DIM, MODELS[name], seed=1, count=3)
    z = torch.randn(7, DIM)
    stacked = Stacked(members).map(lambda model: model(z))
    for member, output in zip(members, stacked):
        torch.testing.assert_close(output, member(z), rtol=1e-5, atol=1e-6)


def test_members_are_initialised_independently_and_reproducibly():
    first = build_members("mlp", DIM, MODELS["mlp"], seed=2, count=2)
    again = build_members("mlp", DIM, MODELS["mlp"], seed=2, count=2)
    weight = "net.0.weight"
    assert not torch.equal(first[0].state_dict()[weight], first[1].state_dict()[weight])
    assert torch.equal(first[1].state_dict()[weight], again[1].state_dict()[weight])
    assert member_seed(2, 1) != member_seed(1, 2)


@pytest.mark.parametrize("name, loss", [("mlp", "L_z"), ("onsager", "L_xp"), ("gfinn", "L_z")])
def test_ensemble_training_equals_training_the_members_one_by_one(name, loss):
    members = build_members(name, DIM, MODELS[name], seed=0, count=2)
    data = training_data(loss)
    _, together, _ = fit_dynamics(copy.deepcopy(members), loss, data, identity_normalisation(), SETTINGS, seed=5,
                               device=torch.device("cpu"), progress=False)
    for member, trained_together in zip(members, together):
        _, (alone,), _ = fit_dynamics([copy.deepcopy(member)], loss, data, identity_normalisation(), SETTINGS, seed=5,
                                   device=torch.device("cpu"), progress=False)
        assert alone.keys() == trained_together.keys()
        for key in alone:
            torch.testing.assert_close(trained_together[key], alone[key], rtol=1e-4, atol=1e-5)
        changed = any(not torch.equal(alone[key], member.state_dict()[key]) for key in alone)
        assert changed, "training did not move the parameters"


def test_each_member_keeps_its_own_plateau_schedule():
    # Patience 1 at a large rate: the members stall, and so halve their rates, at different epochs.
    schedule = SETTINGS | {"epochs": 40, "lr": 0.2, "plateau_patience": 1, "plateau_on": "training", "keep": "last"}
    members = build_members("mlp", DIM, MODELS["mlp"], seed=0, count=2)
    data = training_data("L_z")
    cpu = torch.device("cpu")
    history, together, _ = fit_dynamics(copy.deepcopy(members), "L_z", data, identity_normalisation(), schedule, seed=5,
                                     device=cpu, progress=False)
    alone = [fit_dynamics([copy.deepcopy(member)], "L_z", data, identity_normalisation(), schedule, seed=5, device=cpu,
                          progress=False) for member in members]
    rates = [[row["lr"] for row in member_history] for member_history, _, _ in alone]
    assert rates[0] != rates[1], "both members kept the same schedule: the test proves nothing"
    assert [row["lr"] for row in history] == pytest.approx([(a + b) / 2 for a, b in zip(*rates)])
    for trained_together, (_, (trained_alone,), _) in zip(together, alone):
        for key in trained_alone:
            torch.testing.assert_close(trained_together[key], trained_alone[key], rtol=1e-4, atol=1e-5)


def test_final_rates_tell_which_members_were_annealed(caplog):
    cpu = torch.device("cpu")
    data = training_data("L_z")
    # Patience 1 at a large rate: both members stall and halve their rates within 40 epochs.
    fast = SETTINGS | {"epochs": 40, "lr": 0.2, "plateau_patience": 1, "plateau_on": "training", "keep": "last"}
    history, _, lowered = fit_dynamics(build_members("mlp", DIM, MODELS["mlp"], seed=0, count=2), "L_z", data,
                                       identity_normalisation(), fast, seed=5, device=cpu, progress=False)
    assert max(lowered) < fast["lr"] and sum(lowered) / 2 == pytest.approx(history[-1]["lr"])
    assert lr_dropped(lowered, fast) == [True, True]
    # Patience 100 cannot fire in 4 epochs: the member ends at its starting rate, and the log says how to fix it.
    _, _, unchanged = fit_dynamics(build_members("mlp", DIM, MODELS["mlp"], seed=0, count=1), "L_z", data,
                                   identity_normalisation(), SETTINGS, seed=5, device=cpu, progress=False)
    assert unchanged == [SETTINGS["lr"]] and lr_dropped(unchanged, SETTINGS) == [False]
    warn_if_never_annealed(lr_dropped(unchanged, SETTINGS), SETTINGS)
    warn_if_never_annealed(lr_dropped(lowered, fast), fast)
    (warning,) = [record for record in caplog.records if record.levelname == "WARNING"]
    assert "1 of 1 members" in warning.getMessage() and "train.plateau_patience (100)" in warning.getMessage()
    # A schedule whose floor is its start cannot lower the rate: nothing to flag.
    assert lr_dropped(unchanged, SETTINGS | {"min_lr": SETTINGS["lr"]}) is None


def trained(settings: dict, seed: int = 5) -> tuple[list[dict], list[dict], dict]:
    """History, members' state_dicts and data of one MLP trained on noisy L_z targets."""
    members = build_members("mlp", DIM, MODELS["mlp"], seed=0, count=1)
    data = training_data("L_z")
    history, state_dicts, _ = fit_dynamics(members, "L_z", data, identity_normalisation(), SETTINGS | settings, seed=seed,
                                        device=torch.device("cpu"), progress=False)
    return history, state_dicts, data


def test_learning_rate_stops_at_its_floor():
    # Steps this small improve the loss by less than the plateau threshold: every epoch is a plateau.
    schedule = {"epochs": 12, "lr": 1e-6, "plateau_patience": 1, "plateau_factor": 0.1, "plateau_on": "training"}
    floored, _, _ = trained(schedule | {"min_lr": 1e-7})
    unbounded, _, _ = trained(schedule | {"min_lr": 0.0})
    assert min(row["lr"] for row in unbounded) < 1e-7, "the schedule never reached the floor: the test proves nothing"
    assert min(row["lr"] for row in floored) == pytest.approx(1e-7)
    assert floored[-1]["lr"] == pytest.approx(1e-7)


def validation_loss_of(state_dict: dict, data: dict, seed: int = 5) -> float:
    """The validation loss fit_dynamics reports, recomputed from a saved state_dict."""
    (model,) = build_members("mlp", DIM, MODELS["mlp"], seed=0, count=1)
    model.load_state_dict(state_dict)
    _, validation = split_validation(len(data["z"]), SETTINGS["validation_fraction"], torch.Generator().manual_seed(seed))
    scale = identity_normalisation().tensors()
    return float(mean_losses(Stacked([model]), "L_z", data, scale, validation, SETTINGS["batch_size"])[0])


def test_keep_best_saves_the_best_validation_epoch_and_keep_last_the_final_one():
    schedule = {"epochs": 30, "lr": 5e-2, "plateau_patience": 100}
    best_history, (best,), data = trained(schedule | {"keep": "best"})
    last_history, (last,), _ = trained(schedule | {"keep": "last"})
    validation = [row["validation_loss"] for row in best_history]
    assert validation[-1] > min(validation), "the last epoch was the best: the test proves nothing"
    assert [row["validation_loss"] for row in last_history] == validation
    assert validation_loss_of(best, data) == pytest.approx(min(validation), rel=1e-5)
    assert validation_loss_of(last, data) == pytest.approx(validation[-1], rel=1e-5)
