# macroclosure: closure models from partial microscopic forces.
# Rules hold wiring only; every stage is a `macroclosure <stage>` command (src/macroclosure).
import json
import os
import sys
from pathlib import Path

from macroclosure.config import validate
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

RESULTS = config["results"]
SYSTEMS = list(config["systems"])
# Stages that compute ask SLURM for a GPU unless the config says `device: cpu`, and run in
# the CUDA environment under `--sdm conda` (it falls back to the CPU where there is none).
GPUS = 0 if config["device"] == "cpu" else 1
ENVIRONMENT = str(Path(workflow.basedir) / "envs" / ("macroclosure.yaml" if GPUS == 0 else "macroclosure-cuda.yaml"))

# What jobs read from the environment, passed on by `envvars` to jobs that run elsewhere (SLURM):
# - PATH: jobs run the `macroclosure` command of the environment Snakemake itself runs in;
# - MACROCLOSURE_CONFIG, MACROCLOSURE_EFFICIENCY: the validated configuration and its efficiency
#   section, for the report jobs (as params they would fill the info pane of every report item;
#   their params hold its digest, the rerun trigger);
# - MACROCLOSURE_SOURCE: the env files' pip sections install this package editable from it, since
#   Snakemake builds an env from a copy of its file, from where no relative path leads back here.
whole_config = json.dumps(config, sort_keys=True)
efficiency_config = json.dumps(config["efficiency"], sort_keys=True)
os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)
os.environ["MACROCLOSURE_CONFIG"] = whole_config
os.environ["MACROCLOSURE_EFFICIENCY"] = efficiency_config
os.environ["MACROCLOSURE_SOURCE"] = workflow.basedir


envvars:
    "PATH",
    "MACROCLOSURE_CONFIG",
    "MACROCLOSURE_EFFICIENCY",
    "MACROCLOSURE_SOURCE",


report: "workflow/report/workflow.rst"


wildcard_constraints:
    system="|".join(SYSTEMS),
    split="train|test",
    p=r"[0-9.e-]+",
    seed=r"\d+",
    model="[a-z]+",
    loss="L_[a-z]+",
    configurations=r"\d+",


# A zarr store is declared by its root zarr.json, not as a directory() output: Snakemake would
# put its .snakemake_timestamp inside the store, and xarray warns on every opening. Stages take
# a store's folder or its zarr.json, and still write the whole folder atomically.
include: "workflow/rules/common.smk"
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
