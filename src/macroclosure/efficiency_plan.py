"""Planning of the efficiency target: the jobs of the `efficiency:` grid and their settings.

Every (system, size, model, loss, subset, training-set size, seed) is one run: the ordinary
stages (simulate, sample, closure, train, evaluate) on its own paths under
results/efficiency/{system}/size{size}/, so runs go in parallel and reruns reuse them. The
Snakefile plans with this module (it imports nothing heavy) and `config.check_semantics`
checks the grid with it; `macroclosure.efficiency` aggregates what the runs measured.

A subset is written `p{p}` (a fraction of the units; p = 1 for L_z and L_x) or `k{k}` (a fixed
number of units per configuration at every size, as in the published Lennard-Jones scaling).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from macroclosure.config import FULL_FORCE_LOSSES, encoder_problems, format_fraction, merged, section_problems

SIZE_KEY = {"predator_prey": "cells", "allen_cahn": "cells", "lennard_jones": "atoms"}  # simulate key that sets the size


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
    r"(?P<system>[a-z_]+)/size(?P<size>\d+)/evaluation/(?P<model>[a-z]+)_(?P<loss>L_[a-z]+)_(?P<subset>[pk][0-9.e-]+)"
    r"_c(?P<configurations>\d+)_seed(?P<seed>\d+)/metrics\.json$"
)


def run_of(path: str) -> Run:
    """The run whose metrics.json lies at `path` (the inverse of the rules' paths)."""
    match = RUN_PATH.search(str(path))
    if not match:
        raise ValueError(f"{path} is not the metrics.json of an efficiency run ({RUN_PATH.pattern})")
    fields = match.groupdict()
    return Run(**{name: int(value) if name in ("size", "configurations", "seed") else value for name, value in fields.items()})


BASELINES_PATH = re.compile(r"[a-z_]+/size(?P<size>\d+)/baselines\.json$")


def size_of_baselines(path: str) -> int:
    """The size whose baselines.json lies at `path` (results/efficiency/{system}/size{size}/)."""
    match = BASELINES_PATH.search(str(path))
    if not match:
        raise ValueError(f"{path} is not the baselines.json of an efficiency size ({BASELINES_PATH.pattern})")
    return int(match["size"])


def sizes(system: str, grid: dict) -> list[int]:
    """The sizes measured: the grid's `sizes`, or the one size of its simulate section."""
    return grid.get("sizes") or [grid["simulate"][SIZE_KEY[system]]]


def simulate_settings(system: str, grid: dict, size: int) -> dict:
    """The grid's simulate section at one size."""
    return grid["simulate"] | {SIZE_KEY[system]: size}


def section_at(grid: dict, stage: str, size: int) -> dict:
    """The grid's closure or train section at one size, with the `at_sizes` entries naming it laid over."""
    section = grid[stage]
    for override in grid["at_sizes"]:
        if size in override["sizes"]:
            section = merged(section, override.get(stage, {}))
    return section


def subsets(grid: dict) -> list[tuple[str, str]]:
    """Every (loss, subset) trained: full-force losses at p1, L_xp at each fraction and each k."""
    runs = [(loss, "p1") for loss in grid["losses"] if loss in FULL_FORCE_LOSSES]
    if "L_xp" in grid["losses"]:
        runs += [("L_xp", f"p{format_fraction(p)}") for p in grid["fractions"]]
        runs += [("L_xp", f"k{k}") for k in grid["sampled_units"]]
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


def problems(config: dict) -> list[str]:
    """Settings of the `efficiency:` section that validate but cannot run, each naming its key."""
    from macroclosure.systems import dimensions, setting_problems

    found = []
    for system, grid in config["efficiency"]["systems"].items():
        prefix = f"efficiency.systems.{system}"
        size_key = "sizes" if "sizes" in grid else f"simulate.{SIZE_KEY[system]}"
        if "L_xp" in grid["losses"] and not (grid["fractions"] or grid["sampled_units"]):
            found.append(f"config key '{prefix}.losses': L_xp needs 'fractions' or 'sampled_units'")
        simulate = grid["simulate"]
        available = simulate["trajectories"]["train"] * (simulate["steps"] // simulate["save_every"] + 1)
        found += [f"config key '{prefix}.configurations': {count} exceeds the {available} saved training states"
                  for count in all_training_sets(grid) if count > available]
        found += [f"config key '{prefix}.configurations_by_loss.{loss}': {loss} is not one of the grid's losses"
                  for loss in grid["configurations_by_loss"] if loss not in grid["losses"]]
        for size in sizes(system, grid):
            simulate = simulate_settings(system, grid, size)
            found += [f"config key '{prefix}.{size_key if key == SIZE_KEY[system] else 'simulate.' + key}': {why}"
                      for key, why in setting_problems(system, simulate).items()]
            dims = dimensions(system, simulate)
            found += [f"config key '{prefix}.sampled_units': k = {k} exceeds the {dims.units} {dims.unit}s at size {size}"
                      for k in grid["sampled_units"] if k > dims.units]
            found += [f"config key '{prefix}.fractions': p = {p} samples no {dims.unit} of {dims.units} at size {size}"
                      for p in grid["fractions"] if round(p * dims.units) < 1]
            closure = section_at(grid, "closure", size)
            found += encoder_problems(closure, f"{prefix}.closure", f" at size {size}")
            latent_dim = closure["latent_dim"]
            if latent_dim <= dims.observables:
                found.append(f"config key '{prefix}.closure.latent_dim': {latent_dim} must be larger "
                             f"than the number of observables ({dims.observables}) at size {size}")
        found += override_problems(system, grid, prefix)
    return list(dict.fromkeys(found))


def override_problems(system: str, grid: dict, prefix: str) -> list[str]:
    """`at_sizes` entries that name a size the grid does not measure, or change a key the stage lacks."""
    found = []
    for number, override in enumerate(grid["at_sizes"]):
        key = f"{prefix}.at_sizes[{number}]"
        found += [f"config key '{key}.sizes': {size} is not one of the grid's sizes {sizes(system, grid)}"
                  for size in override["sizes"] if size not in sizes(system, grid)]
        found += [problem for stage in ("closure", "train") if stage in override
                  for problem in section_problems(system, stage, merged(grid[stage], override[stage]), f"{key}.{stage}")]
    return found


def units_at(system: str, grid: dict, size: int) -> int:
    """Sampling units (coordinates, atoms) of the system at one size."""
    from macroclosure.systems import dimensions

    return dimensions(system, simulate_settings(system, grid, size)).units


def forces_fraction(system: str, grid: dict, size: int, subset: str) -> str:
    """The fraction p, as it appears in a forces path, whose sample holds the subset's units:
    `k{k}` -> k / units, written so that round(p * units) gives k back."""
    return format_fraction(subset_fraction(subset, units_at(system, grid, size)))
