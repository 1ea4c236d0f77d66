"""Configuration validation: bad input is refused naming the key; omitted sections get defaults."""

import copy
import re

import pytest
import yaml
from conftest import REPOSITORY

from macroclosure.config import ConfigError, complete_section, load_config, validate

PP = ("systems", "predator_prey")


@pytest.fixture(scope="module")
def repository_config():
    return yaml.safe_load((REPOSITORY / "config.yaml").read_text())


@pytest.fixture
def config(repository_config):
    return copy.deepcopy(repository_config)


def setting(config, *keys):
    """The dict that holds the last key (systems.predator_prey.<section>...)."""
    node = config
    for key in PP + keys[:-1]:
        node = node[key]
    return node, keys[-1]


def change(config, *keys, value):
    node, key = setting(config, *keys)
    node[key] = value
    return config


def refused(config, *patterns):
    """validate(config) raises ConfigError whose message matches every pattern."""
    with pytest.raises(ConfigError) as caught:
        validate(config)
    for pattern in patterns:
        assert re.search(pattern, str(caught.value)), f"{pattern!r} not in: {caught.value}"
    return str(caught.value)


def allowed_keys(message):
    return message.split("allowed keys here: ")[1].split("\n")[0].split(", ")


def test_repository_config_is_valid(config):
    assert validate(config)["systems"]["predator_prey"]["closure"]["latent_dim"] > 2


BENCHMARK_FOLDERS = ("paper", "paper/ablation", "default_run", "default_tuning", "efficiency", "lj_scaling", "particle_closure")
BENCHMARK_CONFIGS = sorted(path.relative_to(REPOSITORY) for folder in BENCHMARK_FOLDERS
                           for path in (REPOSITORY / "benchmarks" / folder).glob("*.yaml"))


@pytest.mark.parametrize("path", BENCHMARK_CONFIGS, ids=str)
def test_every_committed_benchmark_config_is_valid(path):
    """The configs behind committed records must still run as their records say."""
    load_config(REPOSITORY / path)


def test_unknown_top_level_key_is_named_with_the_allowed_keys(config):
    config["reslts"] = "typo"
    message = refused(config, r"config key '<top level>'", r"'reslts' was unexpected")
    assert {"device", "results", "systems"} <= set(allowed_keys(message))


def test_unknown_nested_key_is_named_with_its_path_and_the_allowed_keys(config):
    change(config, "train", "foo", value=1)
    message = refused(config, r"config key 'systems\.predator_prey\.train'", r"'foo' was unexpected")
    assert {"epochs", "models", "losses", "lr"} <= set(allowed_keys(message))


def test_unknown_system_is_named(config):
    config["systems"]["lennard_jones_typo"] = {}
    message = refused(config, r"config key 'systems'", r"'lennard_jones_typo' was unexpected")
    assert "predator_prey" in allowed_keys(message)


def test_wrong_type_is_named(config):
    change(config, "train", "epochs", value="ten")
    refused(config, r"config key 'systems\.predator_prey\.train\.epochs'", r"'ten' is not of type 'integer'")


@pytest.mark.parametrize("p", [0, 1.5, -0.1])
def test_fraction_outside_zero_to_one_is_refused(config, p):
    change(config, "sample", "fractions", value=[0.2, p])
    refused(config, r"config key 'systems\.predator_prey\.sample\.fractions\[1\]'", re.escape(str(p)))


def test_fraction_one_is_allowed(config):
    change(config, "sample", "fractions", value=[1.0])
    change(config, "train", "losses", value=["L_z", "L_x"])
    validate(config)


def test_latent_dim_equal_to_the_observables_is_refused(config):
    change(config, "closure", "latent_dim", value=2)
    refused(config, r"systems\.predator_prey\.closure\.latent_dim", r"number of observables \(2\)")
    change(config, "closure", "latent_dim", value=3)
    validate(config)  # one closure variable is enough


@pytest.mark.parametrize("section, key, value", [("train", "models", ["mlp", "transformer"]), ("train", "losses", ["L_q"])])
def test_unknown_model_or_loss_is_named(config, section, key, value):
    change(config, section, key, value=value)
    refused(config, rf"config key 'systems\.predator_prey\.{section}\.{key}\[\d\]'", re.escape(repr(value[-1])))


def test_fraction_sampling_no_unit_is_refused(config):
    change(config, "simulate", "cells", value=3)  # 6 units: p = 0.05 gives 0.3 units, rounded to 0
    change(config, "sample", "fractions", value=[0.05, 1.0])
    refused(config, r"systems\.predator_prey\.sample\.fractions", r"p = 0\.05 samples no coordinate of 6")


def test_smallest_fraction_sampling_one_unit_is_allowed(config):
    change(config, "simulate", "cells", value=3)
    change(config, "sample", "fractions", value=[0.1, 1.0])  # 0.6 units: rounds to 1
    validate(config)


def test_more_configurations_than_saved_states_are_refused(config):
    change(config, "sample", "equal_budget", value=False)  # a fifth of 6 configurations is too few to train on
    change(config, "simulate", "trajectories", value={"train": 2, "test": 1})
    change(config, "simulate", "steps", value=20)
    change(config, "sample", "configurations", value=7)  # 2 trajectories x 3 saved states
    refused(config, r"systems\.predator_prey\.sample\.configurations", r"7 exceeds the 6 saved training states")
    change(config, "sample", "configurations", value=6)
    validate(config)


@pytest.mark.parametrize("loss", ["L_xp", "L_zp"])
def test_partial_loss_without_a_partial_fraction_is_refused(config, loss):
    change(config, "train", "losses", value=["L_z", loss])
    change(config, "sample", "fractions", value=[1.0])
    refused(config, r"systems\.predator_prey\.train\.losses", rf"{loss} needs a fraction p < 1")


def test_lzp_with_fewer_force_rows_than_latent_rates_is_refused(config):
    change(config, "train", "losses", value=["L_z", "L_zp"])
    change(config, "closure", "latent_dim", value=4)
    change(config, "sample", "fractions", value=[0.02, 1.0])  # 2 of the 100 grid values
    refused(config, r"systems\.predator_prey\.sample\.fractions",
            r"L_zp estimates 4 latent rates from the 2 force rows that p = 0.02 gives per configuration")
    change(config, "sample", "fractions", value=[0.04, 1.0])
    validate(config)


def test_equal_budget_is_a_boolean(config):
    change(config, "sample", "equal_budget", value="yes")
    refused(config, r"config key 'systems\.predator_prey\.sample\.equal_budget'", r"'yes' is not of type 'boolean'")


def test_an_equal_budget_too_small_to_train_is_refused_naming_the_key(config):
    change(config, "sample", "configurations", value=7)  # p = 0.2: full forces on round(1.4) = 1 configuration
    refused(config, r"systems\.predator_prey\.sample\.equal_budget'", r"p = 0\.2 on 7 configurations trains on 1")
    change(config, "sample", "equal_budget", value=False)
    validate(config)


def test_every_problem_is_reported_at_once(config):
    change(config, "train", "epochs", value="ten")
    change(config, "closure", "lr", value=-1)
    refused(config, r"train\.epochs", r"closure\.lr")


def test_omitted_sections_get_their_defaults():
    config = validate({"systems": {"predator_prey": {}}})
    system = config["systems"]["predator_prey"]
    assert system["closure"]["latent_dim"] == 4
    assert system["simulate"]["cells"] == 50 and system["simulate"]["trajectories"] == {"train": 40, "test": 10}
    assert system["sample"]["fractions"] == [0.2, 1.0]
    assert system["train"]["mlp"]["activation"] == "relu"
    assert config["results"] == "results" and config["device"] == "auto"


def test_defaults_do_not_override_given_values():
    config = validate({"systems": {"predator_prey": {"closure": {"latent_dim": 6}, "simulate": {"cells": 20}}}})
    system = config["systems"]["predator_prey"]
    assert system["closure"]["latent_dim"] == 6 and system["closure"]["hidden"] == [32, 32]
    assert system["simulate"]["cells"] == 20 and system["simulate"]["dt"] == 0.01


def test_load_config_reads_and_validates_a_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("systems:\n  predator_prey:\n    closure: {latent_dim: 5}\n")
    assert load_config(path)["systems"]["predator_prey"]["closure"]["latent_dim"] == 5
    path.write_text("systems:\n  predator_prey:\n    closure: {latent_dim: 2}\n")
    with pytest.raises(ConfigError, match="latent_dim"):
        load_config(path)


def test_unreadable_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "absent.yaml"))):
        load_config(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("systems: [unclosed\n")
    with pytest.raises(ConfigError, match=re.escape(str(broken))):
        load_config(broken)


def test_stage_section_is_completed_and_checked_on_its_own():
    settings = complete_section("predator_prey", "simulate", {"cells": 7})
    assert settings["cells"] == 7 and settings["dt"] == 0.01
    with pytest.raises(ConfigError, match=r"config key 'systems\.predator_prey\.simulate'.*'foo' was unexpected"):
        complete_section("predator_prey", "simulate", {"foo": 1})
    with pytest.raises(ConfigError, match=r"systems\.predator_prey\.sample\.configurations"):
        complete_section("predator_prey", "sample", {"configurations": 0})


# Plug-ins: the schema is assembled from each system's module and each latent model's record.
HEAT = {"module": "heat_equation", "simulate": {"cells": 8}, "sample": {"configurations": 100}}


def test_a_users_own_system_is_checked_against_the_settings_its_module_declares():
    heat = validate({"systems": {"heat": copy.deepcopy(HEAT)}})["systems"]["heat"]
    assert heat["simulate"]["diffusion"] == 1.0 and heat["train"]["models"] == ["mlp", "onsager"]
    message = refused({"systems": {"heat": HEAT | {"simulate": {"cellz": 8}}}}, r"config key 'systems\.heat\.simulate'")
    assert "diffusion" in allowed_keys(message)
    assert complete_section("heat_equation", "simulate", {})["cells"] == 32  # as a job, which knows the module only


@pytest.mark.parametrize("module, why", [("no_such_module", "No module named 'no_such_module'"),
                                         ("json", "is not a system: it lacks SETTINGS")])
def test_a_module_that_is_not_a_system_is_named_with_its_key(module, why):
    refused({"systems": {"heat": HEAT | {"module": module}}}, r"config key 'systems\.heat\.module'", why)


def test_every_latent_model_brings_its_settings_block():
    from macroclosure.models import MODELS

    train = validate({"systems": {"predator_prey": {}}})["systems"]["predator_prey"]["train"]
    assert set(MODELS) <= set(train) and train["gfinn"]["layers"] == 2


def test_the_efficiency_grid_measures_built_in_systems_only():
    config = {"systems": {"heat": copy.deepcopy(HEAT)}, "efficiency": {"systems": {"heat": {"configurations": [10]}}}}
    refused(config, r"config key 'efficiency.systems'", r"'heat' was unexpected")


def test_lxpc_is_refused_for_particles_whose_forces_have_no_stencil():
    """L_x,p,c's surrogate learns a grid's stencil law; Lennard-Jones forces read a neighbour list."""
    refused({"systems": {"lennard_jones": {"train": {"losses": ["L_z", "L_xpc"]}}}},
            r"systems\.lennard_jones\.train\.losses", r"L_xpc learns a force surrogate on a grid's stencil")
    grid = {"configurations": [100], "losses": ["L_z", "L_xpc"], "sampled_units": [50]}
    refused({"systems": {"predator_prey": {}}, "efficiency": {"systems": {"lennard_jones": grid}}},
            r"efficiency\.systems\.lennard_jones\.losses", r"L_xpc")
    validate({"systems": {"predator_prey": {"train": {"losses": ["L_z", "L_xpc"]}}}})


def test_a_negative_onsager_trunk_is_refused_naming_the_key(config):
    change(config, "train", "onsager", value={"hidden": 8, "trunk_layers": -1})
    refused(config, r"config key 'systems\.predator_prey\.train\.onsager\.trunk_layers'", r"-1 is less than the minimum of 0")
