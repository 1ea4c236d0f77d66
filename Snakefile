# macroclosure: closure models from partial microscopic forces.
# Rules hold wiring only; every stage is a `macroclosure <stage>` command (src/macroclosure).
import json
import os
import sys
from pathlib import Path

from macroclosure.config import format_fraction, training_runs, validate
from macroclosure.efficiency_plan import forces_fraction, plan, sizes, stage_spec
from macroclosure.resources import estimate

# `--configfile other.yaml` replaces config.yaml instead of being merged into it, so a
# config that lists fewer systems runs fewer systems; `--config key=value` without it is
# laid over config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"

validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# Jobs run the `macroclosure` command of the environment Snakemake itself runs in.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]

RESULTS = config["results"]
SYSTEMS = list(config["systems"])
# Stages that compute ask SLURM for a GPU unless the config says `device: cpu`, and run in
# the CUDA environment under `--sdm conda` (it falls back to the CPU where there is none).
GPUS = 0 if config["device"] == "cpu" else 1
ENVIRONMENT = str(Path(workflow.basedir) / "envs" / ("macroclosure.yaml" if GPUS == 0 else "macroclosure-cuda.yaml"))


wildcard_constraints:
    system="|".join(SYSTEMS),
    split="train|test",
    p=r"[0-9.e-]+",
    seed=r"\d+",
    model="[a-z]+",
    loss="L_[a-z]+",


def section(system, stage):
    """One stage's settings as JSON: a rule reruns only when its own section changes."""
    return json.dumps(config["systems"][system][stage], sort_keys=True)


def run_names(system):
    """model_loss_pP_seedS of every latent model the system trains."""
    spec = config["systems"][system]
    return [
        f"{model}_{loss}_p{format_fraction(p)}_seed{seed}"
        for model in spec["train"]["models"]
        for loss, p in training_runs(spec)
        for seed in spec["seeds"]
    ]


def need(stage, wildcards, attempt):
    """Memory and runtime of one job of `stage`, estimated from its system's config sizes."""
    spec = config["systems"][wildcards.system]
    return estimate(stage, wildcards.system, spec, attempt, wildcards.get("split", "train"), wildcards.get("p", 1.0))


include: "workflow/rules/simulate.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/closure.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/efficiency.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
