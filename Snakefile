# macroclosure: closure models from partial microscopic forces.
# Rules hold wiring only; every stage is a `macroclosure <stage>` command (src/macroclosure).
import json
import os
import sys
from pathlib import Path

from macroclosure.config import validate
from macroclosure.planning import forces_fraction, job_settings, plan, run_names, sizes, stage_spec, with_configurations
from macroclosure.resources import estimate
from macroclosure.runtime import digest
from macroclosure.systems import module_of
from snakemake.utils import min_version

# `profile.yaml` profiles, `--config` laid over config.yaml and the report's labels behave as
# tested with this version (9.27.1).
min_version("9.27")

# `--configfile other.yaml` replaces config.yaml instead of being merged into it, so a
# config that lists fewer systems runs fewer systems; `--config key=value` without it is
# laid over config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"

validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# Jobs run the `macroclosure` command of the environment Snakemake itself runs in.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
# The jobs that need the whole validated configuration (report) or its efficiency section
# (efficiency_report) read it from the environment too: as params it would fill the info pane
# of every report item they make. Their params hold its digest, the rerun trigger.
os.environ["MACROCLOSURE_CONFIG"] = json.dumps(config, sort_keys=True)
os.environ["MACROCLOSURE_EFFICIENCY"] = json.dumps(config["efficiency"], sort_keys=True)


report: "workflow/report/workflow.rst"

RESULTS = config["results"]
SYSTEMS = list(config["systems"])
# Stages that compute ask SLURM for a GPU unless the config says `device: cpu`, and run in
# the CUDA environment under `--sdm conda` (it falls back to the CPU where there is none).
GPUS = 0 if config["device"] == "cpu" else 1
ENVIRONMENT = str(Path(workflow.basedir) / "envs" / ("macroclosure.yaml" if GPUS == 0 else "macroclosure-cuda.yaml"))
# Their pip sections install this package editable from ${MACROCLOSURE_SOURCE}: Snakemake
# builds an env from a copy of its file, from where no relative path leads back here.
os.environ["MACROCLOSURE_SOURCE"] = workflow.basedir


wildcard_constraints:
    system="|".join(SYSTEMS),
    split="train|test",
    p=r"[0-9.e-]+",
    seed=r"\d+",
    model="[a-z]+",
    loss="L_[a-z]+",
    configurations=r"\d+",


def section(wildcards, stage):
    """The settings one job of `stage` uses, as JSON: a job reruns only when they change."""
    return json.dumps(job_settings(config["systems"][wildcards.system], stage, wildcards), sort_keys=True)


def need(stage, wildcards, attempt):
    """Memory and runtime of one job of `stage`, estimated from its system's config sizes
    (and its own configuration count, where it has one)."""
    spec = with_configurations(config["systems"][wildcards.system], wildcards.get("configurations"))
    return estimate(stage, wildcards.system, spec, attempt, wildcards.get("split", "train"), wildcards.get("p", 1.0))


def rollout_labels(wildcards):
    """A run's labels in the HTML report, its training-set size among them (the report shows
    one figure per distinct set of labels, and equal-budget runs differ from others only there)."""
    configurations = wildcards.get("configurations") or config["systems"][wildcards.system]["sample"]["configurations"]
    return {"model": wildcards.model, "loss": wildcards.loss, "p": wildcards.p, "configurations": str(configurations),
            "seed": wildcards.seed}


def rollout_figure(path):
    """A run's rollout figure in the HTML report (shown per system, labelled by `rollout_labels`)."""
    return report(path, caption="../report/rollout.rst", category="Rollouts", subcategory="{system}", labels=rollout_labels)


include: "workflow/rules/simulate.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/closure.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/budget.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/efficiency.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
