"""Where the workflow runs: the local and SLURM profiles, the conda environments and the
device setting. A dry run needs no cluster, so the SLURM profile's plan is checked here."""

from __future__ import annotations

import copy
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from macroclosure.cli import main
from macroclosure.config import validate
from macroclosure.planning import with_configurations
from macroclosure.resources import estimate
from macroclosure.runtime import jax_device, torch_device

REPOSITORY = Path(__file__).resolve().parents[1]
PROFILES = REPOSITORY / "workflow/profiles"
BIN = Path(sys.executable).parent
GPU_STAGES = {"simulate", "sample", "closure", "train", "evaluate"}
GPU_RULES = GPU_STAGES | {"sample_budget", "train_budget", "evaluate_budget"}  # and L_z at equal budget
TINY = {
    "systems": {
        "predator_prey": {
            "seeds": [0],
            "simulate": {"cells": 10, "steps": 100, "save_every": 10, "trajectories": {"train": 4, "test": 2}},
            "sample": {"fractions": [0.2, 1.0], "configurations": 40},
            "train": {"models": ["mlp"]},
        }
    },
}


def dry_run(tmp_path: Path, profile: str, device: str, config: dict = TINY) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job `snakemake --profile <profile> -n` plans for `config` on `device`."""
    config = copy.deepcopy(config) | {"device": device}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [str(BIN / "snakemake"), "--snakefile", str(REPOSITORY / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(tmp_path / "config.yaml"), "--profile", str(PROFILES / profile), "-n"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = []
    for rule, block in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", result.stdout, re.MULTILINE):
        line = re.search(r"^    resources: (.*)$", block, re.MULTILINE)
        resources = dict(item.split("=", 1) for item in line[1].split(", ")) if line else {}
        jobs.append((rule, resources))
    return jobs


@pytest.fixture(scope="module")
def slurm_plan(tmp_path_factory) -> list[tuple[str, dict[str, str]]]:
    return dry_run(tmp_path_factory.mktemp("slurm"), "slurm", "auto")


def test_slurm_dry_run_plans_every_stage(slurm_plan):
    assert {rule for rule, _ in slurm_plan} == GPU_RULES | {"baselines", "report", "all"}


def test_slurm_dry_run_asks_for_a_gpu_on_the_computing_stages_only(slurm_plan):
    for rule, resources in slurm_plan:
        assert (resources.get("gpu") == "1") == (rule in GPU_RULES), (rule, resources)


def test_slurm_jobs_carry_the_account_and_partition_of_the_profile(slurm_plan):
    for rule, resources in slurm_plan:
        assert resources["slurm_account"] == resources["slurm_partition"] == "CHANGE-ME", rule


def test_slurm_jobs_ask_for_the_estimated_memory_and_runtime(slurm_plan):
    spec = validate(copy.deepcopy(TINY))["systems"]["predator_prey"]
    simulate = [resources for rule, resources in slurm_plan if rule == "simulate"]
    need = estimate("simulate", "predator_prey", spec, split="train")
    assert {(r["mem_mb"], r["runtime"]) for r in simulate} == {(str(need.mem_mb), str(need.runtime))}


def test_equal_budget_training_asks_for_the_time_of_its_own_configuration_count(tmp_path):
    config = copy.deepcopy(TINY)
    config["systems"]["predator_prey"]["train"]["epochs"] = 100_000  # 40 configurations: minutes of training
    spec = validate(copy.deepcopy(config))["systems"]["predator_prey"]
    runtimes = {(rule, resources["runtime"]) for rule, resources in dry_run(tmp_path, "slurm", "auto", config)
                if rule.startswith("train")}
    budget = estimate("train", "predator_prey", with_configurations(spec, round(0.2 * 40))).runtime
    assert runtimes == {("train", str(estimate("train", "predator_prey", spec).runtime)), ("train_budget", str(budget))}
    assert budget < estimate("train", "predator_prey", spec).runtime


def test_account_and_partition_are_set_in_one_place():
    places = [path for path in [REPOSITORY / "Snakefile", *REPOSITORY.glob("workflow/**/*.*")]
              if path.is_file() and "slurm_account" in path.read_text()]
    assert places == [PROFILES / "slurm/profile.yaml"]


def test_cpu_device_asks_for_no_gpu(tmp_path):
    assert all("gpu" not in resources or resources["gpu"] == "0" for _, resources in dry_run(tmp_path, "slurm", "cpu"))


def test_local_profile_plans_with_two_cores_and_stops_at_the_first_failure(tmp_path):
    profile = yaml.safe_load((PROFILES / "default/profile.yaml").read_text())
    assert profile["cores"] == 2 and profile["keep-going"] is False
    assert {"params", "input", "code"} <= set(profile["rerun-triggers"])
    assert {rule for rule, _ in dry_run(tmp_path, "default", "cpu")} == GPU_RULES | {"baselines", "report", "all"}


def test_every_rule_that_runs_a_command_names_a_conda_environment():
    for path in (REPOSITORY / "workflow/rules").glob("*.smk"):
        for rule in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.MULTILINE)[1:]:
            if "    shell:" in rule:
                assert "    conda:\n        ENVIRONMENT" in rule, (path, rule.splitlines()[0])


def gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def test_auto_runs_on_the_cpu_without_a_gpu_and_says_so(caplog):
    if gpu_visible():
        pytest.skip("a GPU is visible")
    with caplog.at_level(logging.INFO, logger="macroclosure"):
        assert torch_device("auto").type == "cpu"
        assert jax_device("auto").platform == "cpu"
    assert "torch runs on cpu (device setting: auto)" in caplog.text
    assert "JAX runs on" in caplog.text and "(device setting: auto)" in caplog.text


@pytest.mark.parametrize("choose", [torch_device, jax_device])
def test_cuda_without_a_gpu_is_a_clear_error(choose):
    if gpu_visible():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="device 'cuda' was requested but .* sees no GPU"):
        choose("cuda")


def test_stage_asked_for_cuda_without_a_gpu_fails_before_writing(tmp_path, caplog):
    if gpu_visible():
        pytest.skip("a GPU is visible")
    out = tmp_path / "train.zarr"
    settings = '{"cells": 5, "steps": 20, "save_every": 10, "trajectories": {"train": 2, "test": 1}}'
    with caplog.at_level(logging.ERROR, logger="macroclosure"):
        code = main(["simulate", "--system", "predator_prey", "--split", "train", "--settings", settings,
                     "--device", "cuda", "--out", str(out), "--no-progress"])
    assert code == 1
    assert "device 'cuda' was requested" in caplog.text
    assert not out.exists()


@pytest.mark.parametrize("engine, gpu", [("lammps", "0"), ("jax-md", "1")])
def test_lammps_simulations_ask_for_no_gpu(tmp_path, engine, gpu):
    config = copy.deepcopy(TINY)
    config["systems"] = {"lennard_jones": {"seeds": [0], "simulate": {"atoms": 256, "engine": engine, "trajectories": {"train": 2, "test": 1}},
                                           "sample": {"configurations": 20}, "closure": {"configurations": 20}}}
    simulations = [resources for rule, resources in dry_run(tmp_path, "slurm", "auto", config) if rule == "simulate"]
    assert len(simulations) == 2 and all(resources["gpu"] == gpu for resources in simulations)
