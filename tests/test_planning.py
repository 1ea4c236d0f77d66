"""Planning: each job receives only the settings it uses, and the equal-budget L_z runs.
(Through Snakemake, the reruns these settings cause: tests/test_workflow.py.)"""

from __future__ import annotations

import copy

import pytest
import torch

from macroclosure.config import complete_section, validate
from macroclosure.dynamics import build_model
from macroclosure.models import model_names
from macroclosure.planning import budget_runs, job_settings, run_names, stage_spec, training_runs, with_configurations


def spec_of(**sections) -> dict:
    """The validated predator_prey section with `sections` given, defaults filled in."""
    return validate({"systems": {"predator_prey": copy.deepcopy(sections)}})["systems"]["predator_prey"]


@pytest.mark.parametrize("model", model_names())
def test_every_registered_model_builds_from_its_schema_defaults(model):
    settings = spec_of(train={"models": [model]})["train"][model]
    assert build_model(model, 4, settings)(torch.zeros(3, 4)).shape == (3, 4)


def test_a_train_job_receives_the_shared_settings_and_its_own_model_only():
    spec = spec_of(train={"models": ["mlp", "onsager"], "epochs": 7, "onsager": {"hidden": 9}})
    settings = job_settings(spec, "train", {"model": "onsager"})
    assert settings["epochs"] == 7 and settings["onsager"]["hidden"] == 9
    assert not {"models", "losses", "mlp", "gfinn"} & set(settings)
    assert set(spec["train"]) - set(settings) == {"models", "losses", "mlp", "gfinn", "surrogate_degree"}


def test_a_setting_of_one_loss_reaches_only_that_losss_jobs():
    """The surrogate degree is L_xpc's alone, so changing it reruns no other loss's training."""
    spec = spec_of(train={"losses": ["L_z", "L_xp", "L_xpc"], "surrogate_degree": 2})
    assert job_settings(spec, "train", {"model": "mlp", "loss": "L_xpc"})["surrogate_degree"] == 2
    assert "surrogate_degree" not in job_settings(spec, "train", {"model": "mlp", "loss": "L_xp"})


def test_the_train_stage_completes_a_reduced_section():
    settings = job_settings(spec_of(train={"onsager": {"hidden": 9}}), "train", {"model": "onsager"})
    completed = complete_section("predator_prey", "train", settings)
    assert completed["onsager"]["hidden"] == 9 and completed["lr"] == 5e-3


def test_a_sample_job_receives_the_sample_section_without_the_planning_keys():
    spec = spec_of(sample={"fractions": [0.2, 0.5, 1.0], "configurations": 300})
    assert job_settings(spec, "sample", {}) == {"configurations": 300, "batch_size": 1024, "draw": "states"}
    assert job_settings(spec, "sample", {"configurations": "60"})["configurations"] == 60


@pytest.mark.parametrize("stage", ["simulate", "closure", "evaluate"])
def test_other_stages_receive_their_whole_section(stage):
    spec = spec_of()
    assert job_settings(spec, stage, {}) == spec[stage]


def test_an_efficiency_train_job_receives_its_model_only():
    grid = validate({"systems": {"predator_prey": {}}, "efficiency": {"systems": {"predator_prey": {
        "configurations": [100], "model": "onsager"}}}})["efficiency"]["systems"]["predator_prey"]
    settings = job_settings(stage_spec("predator_prey", grid, 50, 100), "train", {"model": "onsager"})
    assert "onsager" in settings and not {"models", "losses", "mlp"} & set(settings)


def test_equal_budget_runs_are_lz_on_p_times_the_configurations_for_every_partial_fraction():
    spec = spec_of(seeds=[0, 1], sample={"fractions": [0.2, 0.25, 1.0], "configurations": 1000}, train={"models": ["mlp"]})
    assert budget_runs(spec) == [(0.2, 200), (0.25, 250)]
    assert {name for name in run_names(spec) if "_c" in name} == {
        f"mlp_L_z_p1_c{count}_seed{seed}" for count in (200, 250) for seed in (0, 1)}
    assert with_configurations(spec, "200")["sample"]["configurations"] == 200


def test_lzp_and_lzu_train_at_every_partial_fraction_and_share_l_xps_equal_budget_runs():
    spec = spec_of(sample={"fractions": [0.2, 0.25, 1.0], "configurations": 1000}, train={"losses": ["L_z", "L_xp", "L_zp", "L_zu"]})
    assert training_runs(spec) == [("L_z", 1.0), ("L_xp", 0.2), ("L_xp", 0.25), ("L_zp", 0.2), ("L_zp", 0.25),
                                   ("L_zu", 0.2), ("L_zu", 0.25)]
    assert budget_runs(spec) == [(0.2, 200), (0.25, 250)]  # one L_z run per budget, not one per partial loss


@pytest.mark.parametrize("sections", [
    {"sample": {"equal_budget": False}},
    {"train": {"losses": ["L_x", "L_xp"]}},  # no L_z
    {"train": {"losses": ["L_z", "L_x"]}},  # no L_x,p to compare with
])
def test_no_equal_budget_runs_where_switched_off_or_without_both_losses(sections):
    spec = spec_of(**sections)
    assert budget_runs(spec) == [] and not any("_c" in name for name in run_names(spec))


def test_the_report_names_the_lower_error_at_equal_budget_and_a_diverged_run_loses():
    import numpy as np
    import pandas as pd

    from macroclosure.report import equal_budget

    summary = pd.DataFrame({
        "system": ["pp"] * 5, "model": ["mlp", "mlp", "mlp", "onsager", "onsager"],
        "loss": ["L_xp", "L_z", "L_z", "L_xp", "L_z"], "p": [0.2, 1.0, 1.0, 0.2, 1.0],
        "configurations": [60, 12, 60, 60, 12], "force_evaluations": [240, 240, 1200, 240, 240],
        "rollout_error_mean": [1e-2, 2e-2, 5e-3, np.nan, 3e-2],
    })
    pairs = equal_budget(summary).set_index("model")
    assert pairs.loc["mlp", "configurations_z"] == 12 and pairs.loc["mlp", "equal_budget_winner"] == "L_xp"
    assert pairs.loc["onsager", "equal_budget_winner"] == "L_z"  # every L_xp model diverged
