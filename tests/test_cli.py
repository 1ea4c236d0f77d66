"""The command line guides: help on every argument, registry choices, clear answers to
misspelt names, and `info` (`--version`: test_hygiene.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from macroclosure import __version__
from macroclosure.cli import main, parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_every_argument_help():
    for name, sub in subcommands().items():
        assert sub.description and len(sub.description) > 40, name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest}"


@pytest.mark.parametrize("argument, wrong, valid", [
    ("--model", "mpl", ["gfinn", "mlp", "onsager"]),
    ("--loss", "L_p", ["L_x", "L_xp", "L_xpc", "L_z", "L_zp", "L_zu"]),
])
def test_a_misspelt_name_gets_the_valid_ones_and_exit_code_2(capsys, argument, wrong, valid):
    arguments = {"--trajectories": "t", "--forces": "f", "--closure": "c", "--model": "mlp", "--loss": "L_z",
                 "--seed": "0", "--settings": "{}", "--out": "o"} | {argument: wrong}
    with pytest.raises(SystemExit) as stop:
        main(["train", *[part for pair in arguments.items() for part in pair]])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and f"invalid choice: '{wrong}'" in error
    assert all(f"'{name}'" in error for name in valid)


def test_a_misspelt_system_gets_the_known_systems(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["simulate", "--system", "predator_pray", "--split", "train", "--settings", "{}", "--out", "o"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and all(name in error for name in ("allen_cahn", "lennard_jones", "predator_prey"))


@pytest.mark.parametrize("p", ["0", "1.5", "half"])
def test_a_fraction_outside_0_1_is_refused(capsys, p):
    with pytest.raises(SystemExit) as stop:
        main(["sample", "--trajectories", "t", "--p", p, "--seed", "0", "--settings", "{}", "--out", "o"])
    assert stop.value.code == 2
    assert "argument --p" in capsys.readouterr().err


def test_info_shows_what_a_store_holds_and_its_provenance(capsys, train_store):
    assert main(["info", str(train_store)]) == 0
    shown = capsys.readouterr().out
    provenance = json.loads(__import__("xarray").open_zarr(train_store, consolidated=False).attrs["provenance"])
    assert "trajectories store of predator_prey" in shown
    assert "state (trajectory=3, time=5, dof=10) float64" in shown
    assert f"config digest: {provenance['config_digest']}" in shown
    assert f"macroclosure {__version__}" in shown and "seed: 0" in shown


def test_info_shows_a_model_folders_hyper_parameters(capsys, tmp_path):
    hparams = {"model": "mlp", "loss": "L_xp", "system": "predator_prey", "p": 0.2,
               "provenance": {"config_digest": "abc123", "seed": 1, "device": "cpu", "versions": {"torch": "2"}}}
    (tmp_path / "hparams.json").write_text(json.dumps(hparams))
    assert main(["info", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "latent model mlp trained with L_xp of predator_prey" in shown
    assert "p: 0.2" in shown and "config digest: abc123" in shown


def test_info_on_something_else_says_so_in_one_line(caplog, tmp_path):
    assert main(["info", str(tmp_path)]) == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"info failed: store {tmp_path}: is neither a macroclosure store (zarr.json with macroclosure_store)"
        " nor a model folder (hparams.json)"]
