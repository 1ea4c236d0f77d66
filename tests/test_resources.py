"""Resource estimates per job: larger configurations ask for more, and the estimates cover
what the benchmarks measured (so a job is not killed at the limit it asked for)."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import pytest
import yaml

from macroclosure.config import validate
from macroclosure.resources import JACOBIAN_BYTES, estimate

REPOSITORY = Path(__file__).resolve().parents[1]
STAGES = ("simulate", "sample", "closure", "train", "evaluate")


def spec_of(system: str = "predator_prey", **sections) -> dict:
    """The validated config section of `system`, defaults filled in, with `sections` given."""
    return validate({"systems": {system: copy.deepcopy(sections)}})["systems"][system]


def bigger(spec: dict, section: str, key: str, factor: int) -> dict:
    changed = copy.deepcopy(spec)
    changed[section][key] *= factor
    return changed


@pytest.mark.parametrize("stage", STAGES)
def test_a_larger_system_asks_for_more_memory(stage):
    small = spec_of(simulate={"cells": 50})
    large = bigger(small, "simulate", "cells", 200)
    assert estimate(stage, "predator_prey", large).mem_mb > estimate(stage, "predator_prey", small).mem_mb


def test_baselines_ask_for_more_with_a_larger_system():
    small = spec_of(simulate={"cells": 50})
    large = bigger(small, "simulate", "cells", 200)
    assert estimate("baselines", "predator_prey", large).mem_mb > estimate("baselines", "predator_prey", small).mem_mb


@pytest.mark.parametrize(
    "stage, section, key",
    [
        ("simulate", "simulate", "steps"),
        ("sample", "sample", "configurations"),
        ("closure", "closure", "epochs"),
        ("train", "train", "epochs"),
        ("train", "train", "ensemble"),
        ("evaluate", "simulate", "steps"),
    ],
)
def test_more_work_asks_for_more_time(stage, section, key):
    small = spec_of(simulate={"cells": 200})
    large = bigger(small, section, key, 100)
    assert estimate(stage, "predator_prey", large).runtime > estimate(stage, "predator_prey", small).runtime


def test_more_trajectories_per_batch_ask_for_more_simulation_memory():
    small = spec_of(simulate={"cells": 500, "batch_size": 4, "trajectories": {"train": 64, "test": 4}})
    large = bigger(small, "simulate", "batch_size", 16)
    assert estimate("simulate", "predator_prey", large).mem_mb > estimate("simulate", "predator_prey", small).mem_mb
    assert estimate("simulate", "predator_prey", large, split="test") == estimate("simulate", "predator_prey", small, split="test")


@pytest.mark.parametrize("stage", ["sample", "train"])
def test_full_forces_ask_for_more_memory_than_partial_ones(stage):
    spec = spec_of(simulate={"cells": 2000}, sample={"configurations": 4000})
    assert estimate(stage, "predator_prey", spec, p=1.0).mem_mb > estimate(stage, "predator_prey", spec, p=0.1).mem_mb


def test_a_retry_asks_for_twice_as_much():
    spec = spec_of()
    first, second = estimate("train", "predator_prey", spec), estimate("train", "predator_prey", spec, attempt=2)
    assert second == (2 * first.mem_mb, 2 * first.runtime)


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="'report'"):
        estimate("report", "predator_prey", spec_of())


def test_jacobian_budget_matches_training():
    from macroclosure import train

    assert JACOBIAN_BYTES == train.JACOBIAN_BYTES


def measured_jobs() -> list[tuple[str, dict, float]]:
    """(stage, wildcards, max RSS in MB) of every job of the Allen-Cahn 200 x 200 benchmark."""
    path = REPOSITORY / "benchmarks/allen_cahn_200_memory.tsv"  # committed record of that run
    jobs = []
    for row in csv.DictReader(path.open(), delimiter="\t"):
        stage = row["job"].split("_")[0]
        wildcards = {}
        if stage == "simulate":
            wildcards["split"] = row["job"].split("_")[1]
        if match := re.search(r"_p([0-9.]+)_seed", row["job"]):
            wildcards["p"] = float(match[1])
        jobs.append((stage, wildcards, float(row["max_rss_mb"])))
    return jobs


def test_estimates_cover_the_measured_peak_memory_at_200_by_200():
    config = validate(yaml.safe_load((REPOSITORY / "benchmarks/allen_cahn_200.yaml").read_text()))
    spec = config["systems"]["allen_cahn"]
    jobs = measured_jobs()
    assert {stage for stage, _, _ in jobs} == set(STAGES)
    for stage, wildcards, measured in jobs:
        assert estimate(stage, "allen_cahn", spec, **wildcards).mem_mb >= measured, (stage, wildcards)


def repository_systems() -> dict[str, dict]:
    return validate(yaml.safe_load((REPOSITORY / "config.yaml").read_text()))["systems"]


@pytest.mark.parametrize("system", sorted(repository_systems()))
def test_longer_trajectories_ask_for_more_time_in_every_system(system):
    """Longer trajectories ask for more time to simulate and to evaluate, whatever the system."""
    spec = repository_systems()[system]
    longer = bigger(spec, "simulate", "steps", 1000)
    for stage in ("simulate", "evaluate"):
        assert estimate(stage, system, longer).runtime > estimate(stage, system, spec).runtime, stage


@pytest.mark.parametrize("stage", ["closure", "train"])
def test_the_particle_encoders_jacobians_ask_for_time_that_covers_their_measured_cost(stage):
    """800 atoms, d = 4: the closed-form Jacobian took up to 0.43 s a state on the loaded 2-core
    CPU; the closure takes one per state (not per epoch), training one per configuration."""
    sections = {"closure": {"configurations": 400, "epochs": 30, "latent_dim": 4}, "sample": {"configurations": 400}}
    mlp = spec_of("lennard_jones", simulate={"atoms": 800}, **sections)
    particles = copy.deepcopy(mlp)
    particles["closure"]["encoder"] = "particles"
    measured_minutes = 400 * 0.43 / 60
    assert estimate(stage, "lennard_jones", particles).runtime >= estimate(stage, "lennard_jones", mlp).runtime + measured_minutes
