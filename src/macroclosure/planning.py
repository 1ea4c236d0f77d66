"""Planning of the pipeline's jobs: the runs a system trains and the settings each job receives.

Params are Snakemake's rerun trigger, so a job receives only the settings it uses
(`job_settings`): adding a model, a fraction or a seed plans only the new jobs, and changing
one model's settings reruns only that model. The efficiency grid (`efficiency_plan`) passes
its jobs through the same function. Like `efficiency_plan`, this module imports nothing heavy.

Besides the runs of `config.training_runs`, a system trains L_z at equal force budget
(`sample.equal_budget`): for each fraction p < 1 that L_x,p trains on, full forces on
round(p x configurations) configurations, the force evaluations L_x,p at p spends.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import yaml

from macroclosure.config import SCHEMA_PATH, format_fraction, training_runs

SAMPLE_PLANNING_KEYS = ("fractions", "equal_budget")  # decide which sample jobs exist, not what one computes
TRAIN_PLANNING_KEYS = ("models", "losses")  # decide which train jobs exist
BUDGET_LOSS = "L_z"
MIN_BUDGET_CONFIGURATIONS = 2  # training holds out at least one configuration for validation


@cache
def model_names() -> tuple[str, ...]:
    """Every latent model the schema knows (`train.models`): each has its own settings block."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return tuple(schema["$defs"]["train"]["properties"]["models"]["items"]["enum"])


def sample_settings(sample: dict, configurations: int | None = None) -> dict:
    """What one sample job uses: the sample section without the planning keys, and its own
    configuration count where the job has one (an equal-budget or efficiency store)."""
    settings = {key: value for key, value in sample.items() if key not in SAMPLE_PLANNING_KEYS}
    return settings | ({"configurations": int(configurations)} if configurations else {})


def train_settings(train: dict, model: str) -> dict:
    """What one train job uses: the shared training settings and its own model's block, not
    the lists of models and losses nor the other models' blocks."""
    others = set(model_names()) - {model}
    return {key: value for key, value in train.items() if key not in TRAIN_PLANNING_KEYS and key not in others}


def job_settings(spec: dict, stage: str, wildcards: Mapping) -> dict:
    """The settings one job of `stage` receives, from its system section `spec` (as under
    `systems:`, or an efficiency grid's `stage_spec`) and its wildcards (`model`, `configurations`)."""
    if stage == "sample":
        return sample_settings(spec["sample"], wildcards.get("configurations"))
    if stage == "train":
        return train_settings(spec["train"], wildcards["model"])
    return spec[stage]


def with_configurations(spec: dict, configurations: int | None) -> dict:
    """The system section with its sample count set to a job's `configurations` (what the
    resource estimates of an equal-budget job read); `spec` itself where there is none."""
    if not configurations:
        return spec
    return spec | {"sample": spec["sample"] | {"configurations": int(configurations)}}


def budget_configurations(p: float, configurations: int) -> int:
    """Configurations whose full forces cost what `configurations` at fraction p cost."""
    return round(p * configurations)


def budget_runs(spec: dict) -> list[tuple[float, int]]:
    """(p, configurations) of every equal-budget L_z run: one per fraction L_x,p trains on,
    where `sample.equal_budget` is on and L_z is trained."""
    if not (spec["sample"]["equal_budget"] and BUDGET_LOSS in spec["train"]["losses"]):
        return []
    count = spec["sample"]["configurations"]
    return [(p, budget_configurations(p, count)) for loss, p in training_runs(spec) if loss == "L_xp"]


def run_names(spec: dict) -> list[str]:
    """The folder name of every latent model a system trains: model_loss_pP_seedS, and
    model_L_z_p1_cN_seedS for the equal-budget runs on N configurations."""
    models, seeds = spec["train"]["models"], spec["seeds"]
    runs = [f"{model}_{loss}_p{format_fraction(p)}_seed{seed}"
            for model in models for loss, p in training_runs(spec) for seed in seeds]
    runs += [f"{model}_{BUDGET_LOSS}_p1_c{count}_seed{seed}"
             for model in models for _, count in budget_runs(spec) for seed in seeds]
    return list(dict.fromkeys(runs))


def budget_problems(spec: dict, prefix: str) -> list[str]:
    """Equal-budget runs too small to train, each naming `sample.equal_budget` under `prefix`."""
    return [f"config key '{prefix}.sample.equal_budget': L_z at the force budget of p = {p} on "
            f"{spec['sample']['configurations']} configurations trains on {count} configurations "
            f"(at least {MIN_BUDGET_CONFIGURATIONS} needed); raise sample.configurations or set equal_budget: false"
            for p, count in budget_runs(spec) if count < MIN_BUDGET_CONFIGURATIONS]
