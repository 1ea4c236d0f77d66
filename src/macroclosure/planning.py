"""Planning: the configuration turned into the jobs of the pipeline and of the efficiency target.

`config` loads, fills and checks a configuration; this module says which jobs it makes and
which settings each job receives. Params are Snakemake's rerun trigger, so a job receives
only the settings it uses (`job_settings`): adding a model, a fraction or a seed plans only
the new jobs, and changing one model's settings reruns only that model. The efficiency grid
(`plan`, `stage_spec`) passes its jobs through the same function. The Snakefile imports this
module, so it imports nothing heavy.

The rules of arithmetic every stage shares live here, once: the k = round(p x n) units or
configurations a fraction p of n means (`fraction_count`), and the states a simulation saves
(`saved_frames`, `saved_states`).

Besides the runs of `training_runs`, a system trains L_z at equal force budget
(`sample.equal_budget`): for each fraction p < 1 that L_x,p trains on, full forces on
round(p x configurations) configurations, the force evaluations L_x,p at p spends.

The efficiency grid: every (system, size, model, loss, subset, training-set size, seed) is
one run, the ordinary stages on its own paths under results/efficiency/{system}/size{size}/;
it measures built-in systems (a user's own system runs in the pipeline). A subset is written
`p{p}` (a fraction of the units; p = 1 for L_z and L_x) or `k{k}` (a fixed number of units per
configuration at every size, as in the published Lennard-Jones scaling).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import NamedTuple

from macroclosure.models import model_names
from macroclosure.systems import dimensions, size_key

FULL_FORCE_LOSSES = ("L_z", "L_x")
PARTIAL_FORCE_LOSSES = ("L_xp", "L_xpc", "L_zp", "L_zu")  # trained at every p < 1 (and every k)
SAMPLE_PLANNING_KEYS = ("fractions", "equal_budget")  # decide which sample jobs exist, not what one computes
TRAIN_PLANNING_KEYS = ("models", "losses")  # decide which train jobs exist
LOSS_KEYS = {"surrogate_degree": "L_xpc"}  # train settings that only this loss reads
BUDGET_LOSS = "L_z"


def fraction_count(p: float, count: int) -> int:
    """The k = round(p x count) units of a configuration (or configurations of a budget) that a
    fraction p of `count` means: the one rounding every stage and check agrees on."""
    return round(p * count)


def saved_frames(simulate: dict) -> int:
    """States one trajectory saves: the initial state and one every `save_every` steps."""
    return simulate["steps"] // simulate["save_every"] + 1


def saved_states(simulate: dict) -> int:
    """States the training trajectories save, the most configurations a sample can draw."""
    return simulate["trajectories"]["train"] * saved_frames(simulate)


def imported_store(simulate: dict, split: str) -> str | None:
    """The root zarr.json of the imported store `simulate.source` names for `split` (what the
    workflow copies in instead of simulating), or None where the system is simulated."""
    source = simulate.get("source")
    if not source:
        return None
    path = source[split].rstrip("/")
    return path if path.endswith("zarr.json") else f"{path}/zarr.json"


def format_fraction(p: float) -> str:
    """The fraction as it appears in paths: 0.2 -> '0.2', 1.0 -> '1', 1/16 -> '0.0625'."""
    return f"{p:g}"


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it, nested sections merged key by key."""
    result = copy.deepcopy(base)
    for name, value in changes.items():
        result[name] = merged(result[name], value) if isinstance(value, dict) and isinstance(result.get(name), dict) else value
    return result


def partial_fractions(system: dict) -> list[float]:
    """The fractions p < 1 that the partial-force losses (PARTIAL_FORCE_LOSSES) train on."""
    return [p for p in system["sample"]["fractions"] if p < 1]


def training_runs(system: dict) -> list[tuple[str, float]]:
    """Every (loss, p) the system trains: full-force losses at p = 1, partial-force losses at
    each p < 1."""
    runs = [(loss, 1.0) for loss in system["train"]["losses"] if loss in FULL_FORCE_LOSSES]
    runs += [(loss, p) for loss in system["train"]["losses"] if loss in PARTIAL_FORCE_LOSSES for p in partial_fractions(system)]
    return runs


def sample_settings(sample: dict, configurations: int | None = None) -> dict:
    """What one sample job uses: the sample section without the planning keys, and its own
    configuration count where the job has one (an equal-budget or efficiency store)."""
    settings = {key: value for key, value in sample.items() if key not in SAMPLE_PLANNING_KEYS}
    return settings | ({"configurations": int(configurations)} if configurations else {})


def train_settings(train: dict, model: str, loss: str | None = None) -> dict:
    """What one train job uses: the shared training settings and its own model's block, not
    the lists of models and losses, the other models' blocks, nor other losses' keys (LOSS_KEYS:
    all of them where `loss` is None)."""
    others = set(model_names()) - {model} | {key for key, owner in LOSS_KEYS.items() if owner != loss}
    return {key: value for key, value in train.items() if key not in TRAIN_PLANNING_KEYS and key not in others}


def job_settings(spec: dict, stage: str, wildcards: Mapping) -> dict:
    """The settings one job of `stage` receives, from its system section `spec` (as under
    `systems:`, or an efficiency grid's `stage_spec`) and its wildcards (`model`, `loss`, `configurations`)."""
    if stage == "sample":
        return sample_settings(spec["sample"], wildcards.get("configurations"))
    if stage == "train":
        return train_settings(spec["train"], wildcards["model"], wildcards.get("loss"))
    return spec[stage]


def with_configurations(spec: dict, configurations: int | None) -> dict:
    """The system section with its sample count set to a job's `configurations` (what the
    resource estimates of an equal-budget job read); `spec` itself where there is none."""
    if not configurations:
        return spec
    return spec | {"sample": spec["sample"] | {"configurations": int(configurations)}}


def budget_runs(spec: dict) -> list[tuple[float, int]]:
    """(p, configurations) of every equal-budget L_z run: one per fraction a partial-force loss
    trains on, where `sample.equal_budget` is on and L_z is trained; full forces on
    round(p x configurations)."""
    if not (spec["sample"]["equal_budget"] and BUDGET_LOSS in spec["train"]["losses"]):
        return []
    count = spec["sample"]["configurations"]
    fractions = sorted({p for loss, p in training_runs(spec) if loss in PARTIAL_FORCE_LOSSES})
    return [(p, fraction_count(p, count)) for p in fractions]


def run_names(spec: dict) -> list[str]:
    """The folder name of every latent model a system trains: model_loss_pP_seedS, and
    model_L_z_p1_cN_seedS for the equal-budget runs on N configurations."""
    models, seeds = spec["train"]["models"], spec["seeds"]
    runs = [f"{model}_{loss}_p{format_fraction(p)}_seed{seed}"
            for model in models for loss, p in training_runs(spec) for seed in seeds]
    runs += [f"{model}_{BUDGET_LOSS}_p1_c{count}_seed{seed}"
             for model in models for _, count in budget_runs(spec) for seed in seeds]
    return list(dict.fromkeys(runs))


# --- the efficiency grid ---------------------------------------------------------------


class Run(NamedTuple):
    """One trained and evaluated model of the grid."""

    system: str
    size: int
    model: str
    loss: str
    subset: str
    configurations: int
    seed: int

    @property
    def folder(self) -> str:
        """Where the run's size lives, relative to results/efficiency."""
        return f"{self.system}/size{self.size}"

    @property
    def name(self) -> str:
        return f"{self.model}_{self.loss}_{self.subset}_c{self.configurations}_seed{self.seed}"


RUN_PATH = re.compile(
    r"(?P<system>[a-z0-9_]+)/size(?P<size>\d+)/evaluation/(?P<model>[a-z]+)_(?P<loss>L_[a-z]+)_(?P<subset>[pk][0-9.e-]+)"
    r"_c(?P<configurations>\d+)_seed(?P<seed>\d+)/metrics\.json$"
)


def run_of(path: str) -> Run:
    """The run whose metrics.json lies at `path` (the inverse of the rules' paths)."""
    match = RUN_PATH.search(str(path))
    if not match:
        raise ValueError(f"{path} is not the metrics.json of an efficiency run ({RUN_PATH.pattern})")
    fields = match.groupdict()
    return Run(**{name: int(value) if name in ("size", "configurations", "seed") else value for name, value in fields.items()})


BASELINES_PATH = re.compile(r"[a-z0-9_]+/size(?P<size>\d+)/baselines\.json$")


def size_of_baselines(path: str) -> int:
    """The size whose baselines.json lies at `path` (results/efficiency/{system}/size{size}/)."""
    match = BASELINES_PATH.search(str(path))
    if not match:
        raise ValueError(f"{path} is not the baselines.json of an efficiency size ({BASELINES_PATH.pattern})")
    return int(match["size"])


def sizes(system: str, grid: dict) -> list[int]:
    """The sizes measured: the grid's `sizes`, or the one size of its simulate section."""
    return grid.get("sizes") or [grid["simulate"][size_key(system)]]


def simulate_settings(system: str, grid: dict, size: int) -> dict:
    """The grid's simulate section at one size."""
    return grid["simulate"] | {size_key(system): size}


def section_at(grid: dict, stage: str, size: int) -> dict:
    """The grid's closure or train section at one size, with the `at_sizes` entries naming it laid over."""
    section = grid[stage]
    for override in grid["at_sizes"]:
        if size in override["sizes"]:
            section = merged(section, override.get(stage, {}))
    return section


def subsets(grid: dict) -> list[tuple[str, str]]:
    """Every (loss, subset) trained: full-force losses at p1, partial-force losses at each
    fraction and each k."""
    runs = [(loss, "p1") for loss in grid["losses"] if loss in FULL_FORCE_LOSSES]
    for loss in (loss for loss in grid["losses"] if loss in PARTIAL_FORCE_LOSSES):
        runs += [(loss, f"p{format_fraction(p)}") for p in grid["fractions"]]
        runs += [(loss, f"k{k}") for k in grid["sampled_units"]]
    return runs


def subset_fraction(subset: str, units: int) -> float:
    """The fraction p a subset means at `units` units (`k{k}` -> k / units)."""
    value = float(subset[1:])
    return value if subset[0] == "p" else value / units


def training_sets(grid: dict, loss: str) -> list[int]:
    """The training-set sizes a loss is trained on: its entry of `configurations_by_loss`, or
    the grid's `configurations`."""
    return grid["configurations_by_loss"].get(loss, grid["configurations"])


def all_training_sets(grid: dict) -> list[int]:
    """Every training-set size some loss of the grid is trained on."""
    return sorted({count for loss in grid["losses"] for count in training_sets(grid, loss)})


def plan(config: dict) -> list[Run]:
    """Every run of the configured efficiency grid."""
    return [
        Run(system, size, grid["model"], loss, subset, configurations, seed)
        for system, grid in config["efficiency"]["systems"].items()
        for size in sizes(system, grid)
        for loss, subset in subsets(grid)
        for configurations in training_sets(grid, loss)
        for seed in grid["seeds"]
    ]


def stage_spec(system: str, grid: dict, size: int, configurations: int | None = None) -> dict:
    """A system section (as under `systems:`) for one size and training-set size: what the
    stages and the resource estimates read."""
    return {
        "simulate": simulate_settings(system, grid, size),
        "sample": {"configurations": configurations or max(all_training_sets(grid)), "batch_size": grid["sample_batch_size"],
                   "draw": grid["sample_draw"]},
        "closure": section_at(grid, "closure", size),
        "train": section_at(grid, "train", size),
        "evaluate": grid["evaluate"],
    }


def units_at(system: str, grid: dict, size: int) -> int:
    """Sampling units (coordinates, atoms) of the system at one size."""
    return dimensions(system, simulate_settings(system, grid, size)).units


def forces_fraction(system: str, grid: dict, size: int, subset: str) -> str:
    """The fraction p, as it appears in a forces path, whose sample holds the subset's units:
    `k{k}` -> k / units, written so that fraction_count(p, units) gives k back."""
    return format_fraction(subset_fraction(subset, units_at(system, grid, size)))
