"""Configuration: load, fill in defaults and check; nothing else (the jobs a configuration
makes are `planning`'s).

The Snakefile validates the configuration before any job is planned, so a bad `config.yaml`
stops the run with the offending key named, instead of failing hours later inside a job.
The schema is assembled: `workflow/schemas/config.schema.yaml` holds what every system
shares, and each system module (`macroclosure.systems`) and latent model record
(`macroclosure.models`) brings its own settings, so a new system or model needs no edit here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from macroclosure import systems
from macroclosure.descriptor_counts import POOLED_FEATURES, THERMODYNAMIC_VARIABLES
from macroclosure.models import MODELS, model_names
from macroclosure.planning import (PARTIAL_FORCE_LOSSES, all_training_sets, budget_runs, fraction_count, imported_store,
                                   merged, partial_fractions, saved_states, section_at, simulate_settings, sizes)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
MIN_BUDGET_CONFIGURATIONS = 2  # training holds out at least one configuration for validation


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


def _validator_with_defaults(schema: dict) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator that fills in each property's `default` before checking it."""
    base = jsonschema.Draft202012Validator

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    return cls(schema)


def _describe(error: jsonschema.ValidationError, prefix: str = "") -> str:
    """One line naming the key, the problem and, where the schema says, what is allowed."""
    key = ".".join(filter(None, [prefix, error.json_path.removeprefix("$").removeprefix(".")])) or "<top level>"
    message = f"config key '{key}': {error.message}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        message += f"; allowed keys here: {', '.join(allowed)}"
        return message
    description = error.schema.get("description")
    if description:
        message += f" ({description})"
    return message


def _without_echoes(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Drop an `unevaluatedProperties` error where a key inside the object has its own error: a
    failed `allOf` leaves every key of the object unevaluated, which would bury the real error."""
    inner = [error.json_path for error in errors if error.validator != "unevaluatedProperties"]
    return [error for error in errors if error.validator != "unevaluatedProperties"
            or not any(path.startswith(error.json_path + ".") for path in inner)]


@cache
def _shared_schema(schema_path: Path) -> dict:
    """The schema file: what every system shares (read once per process)."""
    return yaml.safe_load(Path(schema_path).read_text())


def system_definitions(name: str) -> dict:
    """The schema `$defs` of system `name`, from its module: its simulate settings, its section
    under `systems:` and its grid under `efficiency.systems:` (a grid system's closure reads x)."""
    plugin = systems.plugin(name)
    closure = {"$ref": "#/$defs/grid_closure" if plugin.KIND == "grid" else "#/$defs/closure", "default": {}}
    simulate = {"$ref": f"#/$defs/{name}_simulate", "default": {}}
    own = {} if name in systems.built_in_systems() else {
        "module": {"type": "string", "description": "the importable Python module of this system (README, Extending)"}}
    section = {"type": "object", "additionalProperties": False, "default": {}, "properties": own | {
        "seeds": {"$ref": "#/$defs/seeds", "default": [0, 1, 2]},
        "simulate": simulate,
        "sample": {"$ref": "#/$defs/sample", "default": {}},
        "closure": closure,
        "train": {"$ref": "#/$defs/train", "default": {}},
        "evaluate": {"$ref": "#/$defs/evaluate", "default": {}},
    }}
    grid = {"type": "object", "unevaluatedProperties": False, "default": {}, "required": ["configurations"],
            "allOf": [{"$ref": "#/$defs/efficiency_grid"}],
            "properties": {"simulate": simulate} | ({"closure": closure} if plugin.KIND == "grid" else {})}
    return {f"{name}_simulate": plugin.SETTINGS, name: section, f"efficiency_{name}": grid}


def schema(names: Iterable[str], schema_path: Path = SCHEMA_PATH) -> dict:
    """The configuration schema for the systems `names`: the shared file, each system's
    definitions and each latent model's settings block."""
    assembled = copy.deepcopy(_shared_schema(Path(schema_path)))
    definitions = assembled["$defs"]
    train = definitions["train"]["properties"]
    train["models"]["items"]["enum"] = list(model_names())
    train |= {name: model.settings for name, model in MODELS.items()}
    definitions["efficiency_grid"]["properties"]["model"]["enum"] = list(model_names())
    for name in names:
        definitions |= system_definitions(name)
    assembled["properties"]["systems"]["properties"] = {name: {"$ref": f"#/$defs/{name}"} for name in names}
    # The efficiency grid measures built-in systems only: its report reads their size keys without the config.
    assembled["properties"]["efficiency"]["properties"]["systems"]["properties"] = {
        name: {"$ref": f"#/$defs/efficiency_{name}"} for name in names if name in systems.built_in_systems()}
    return assembled


def register_own_systems(config: dict) -> list[str]:
    """Register every system under `systems:` that names its own `module:` and return their
    names; raises ConfigError naming the key of a module that cannot be imported or is not a system."""
    group = config.get("systems")
    names = []
    for name, section in (group if isinstance(group, dict) else {}).items():
        if isinstance(section, dict) and "module" in section and name not in systems.built_in_systems():
            try:
                systems.register(name, section["module"])
            except ValueError as error:
                raise ConfigError(f"config key 'systems.{name}.module': {error}") from None
            names.append(name)
    return names


def validate(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate `config` in place against the schema, filling defaults; raise ConfigError."""
    names = dict.fromkeys([*systems.built_in_systems(), *register_own_systems(config)])
    validator = _validator_with_defaults(schema(names, schema_path))
    errors = _without_echoes(sorted(validator.iter_errors(config), key=lambda e: e.json_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    check_semantics(config)
    return config


def complete_section(system: str, stage: str, settings: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """One stage's settings validated against its part of the schema, defaults filled in.

    Lets a stage run from the command line with a partial section, and refuses a bad one
    with the key named, exactly as the whole-config validation would. `system` is a system's
    name or, for a user's system, its module (as the stores record it).
    """
    settings = copy.deepcopy(settings)
    problems = section_problems(system, stage, settings, f"systems.{system}.{stage}", schema_path)
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
    return settings


def section_problems(system: str, stage: str, settings: dict, key: str, schema_path: Path = SCHEMA_PATH) -> list[str]:
    """What is wrong with one stage's settings, each line naming its key under `key`; fills
    the section's defaults in place."""
    try:
        definitions = schema([system], schema_path)["$defs"]
        reference = definitions[system]["properties"][stage]["$ref"]
    except (KeyError, ValueError):
        raise ConfigError(f"no settings '{stage}' are known for system '{system}'") from None
    validator = _validator_with_defaults({"$ref": reference, "$defs": definitions})
    return [_describe(error, prefix=key) for error in sorted(validator.iter_errors(settings), key=lambda e: e.json_path)]


def check_semantics(config: dict) -> None:
    """Checks the schema cannot express: sizes that depend on the system and each other."""
    problems = []
    for name, system in config["systems"].items():
        prefix = f"systems.{name}"
        dims = systems.dimensions(name, system["simulate"])
        problems += [
            f"config key '{prefix}.simulate.{key}': {why}"
            for key, why in systems.setting_problems(name, system["simulate"]).items()
        ]
        latent = system["closure"]["latent_dim"]
        if latent <= dims.observables:
            problems.append(
                f"config key '{prefix}.closure.latent_dim': {latent} must be larger than the "
                f"number of observables ({dims.observables}) to leave room for a closure"
            )
        problems += encoder_problems(system["closure"], f"{prefix}.closure", observables=dims.observables,
                                     r_cutoff=system["simulate"].get("r_cutoff"))
        for p in system["sample"]["fractions"]:
            if fraction_count(p, dims.units) < 1:
                problems.append(
                    f"config key '{prefix}.sample.fractions': p = {p} samples no {dims.unit} "
                    f"of {dims.units} (p * units must be at least 1)"
                )
        available = saved_states(system["simulate"])
        if system["sample"]["configurations"] > available:
            problems.append(
                f"config key '{prefix}.sample.configurations': {system['sample']['configurations']} "
                f"exceeds the {available} saved training states"
            )
        problems += [f"config key '{prefix}.train.losses': {loss} needs a fraction p < 1 in '{prefix}.sample.fractions'"
                     for loss in PARTIAL_FORCE_LOSSES if loss in system["train"]["losses"] and not partial_fractions(system)]
        if "L_zp" in system["train"]["losses"]:
            problems += [f"config key '{prefix}.sample.fractions': L_zp estimates {latent} latent rates from the "
                         f"{rows} force rows that p = {p} gives per configuration; it needs at least {latent}"
                         for p in partial_fractions(system) if (rows := fraction_count(p, dims.units) * dims.rows_per_unit) < latent]
        problems += surrogate_problems(name, system["train"]["losses"], f"{prefix}.train.losses")
        problems += budget_problems(system, prefix)
        problems += source_problems(system["simulate"], f"{prefix}.simulate.source")
    problems += efficiency_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def surrogate_problems(system: str, losses: list[str], key: str) -> list[str]:
    """L_xpc where the system offers no stencil for its force surrogate (particles), naming `key`."""
    if "L_xpc" not in losses or hasattr(systems.plugin(system), "stencil"):
        return []
    return [f"config key '{key}': L_xpc learns a force surrogate on a grid's stencil, and {system} has none "
            "(its forces do not read a fixed set of rows); use L_xp, L_zp or L_zu"]


def budget_problems(spec: dict, prefix: str) -> list[str]:
    """Equal-budget runs too small to train, each naming `sample.equal_budget` under `prefix`."""
    return [f"config key '{prefix}.sample.equal_budget': L_z at the force budget of p = {p} on "
            f"{spec['sample']['configurations']} configurations trains on {count} configurations "
            f"(at least {MIN_BUDGET_CONFIGURATIONS} needed); raise sample.configurations or set equal_budget: false"
            for p, count in budget_runs(spec) if count < MIN_BUDGET_CONFIGURATIONS]


def source_problems(simulate: dict, key: str) -> list[str]:
    """Imported stores (`simulate.source`) that are not there, each naming its key: caught before
    any job (what they hold is checked by the job that copies them in)."""
    return [f"config key '{key}.{split}': {simulate['source'][split]} is not a trajectory store (no {path} "
            "there); write one with `macroclosure import`"
            for split in ("train", "test") if (path := imported_store(simulate, split)) and not Path(path).is_file()]


def efficiency_problems(config: dict) -> list[str]:
    """Settings of the `efficiency:` section that validate but cannot run, each naming its key."""
    found = []
    for system, grid in config["efficiency"]["systems"].items():
        prefix = f"efficiency.systems.{system}"
        size_key = "sizes" if "sizes" in grid else f"simulate.{systems.size_key(system)}"
        if "source" in grid["simulate"]:
            found.append(f"config key '{prefix}.simulate.source': the efficiency grid simulates each of its sizes; "
                         f"imported stores go under systems.{system}.simulate.source")
        found += surrogate_problems(system, grid["losses"], f"{prefix}.losses")
        found += [f"config key '{prefix}.losses': {loss} needs 'fractions' or 'sampled_units'"
                  for loss in PARTIAL_FORCE_LOSSES if loss in grid["losses"] and not (grid["fractions"] or grid["sampled_units"])]
        available = saved_states(grid["simulate"])
        found += [f"config key '{prefix}.configurations': {count} exceeds the {available} saved training states"
                  for count in all_training_sets(grid) if count > available]
        found += [f"config key '{prefix}.configurations_by_loss.{loss}': {loss} is not one of the grid's losses"
                  for loss in grid["configurations_by_loss"] if loss not in grid["losses"]]
        for size in sizes(system, grid):
            simulate = simulate_settings(system, grid, size)
            found += [f"config key '{prefix}.{size_key if key == systems.size_key(system) else 'simulate.' + key}': {why}"
                      for key, why in systems.setting_problems(system, simulate).items()]
            dims = systems.dimensions(system, simulate)
            found += [f"config key '{prefix}.sampled_units': k = {k} exceeds the {dims.units} {dims.unit}s at size {size}"
                      for k in grid["sampled_units"] if k > dims.units]
            found += [f"config key '{prefix}.fractions': p = {p} samples no {dims.unit} of {dims.units} at size {size}"
                      for p in grid["fractions"] if fraction_count(p, dims.units) < 1]
            closure = section_at(grid, "closure", size)
            found += encoder_problems(closure, f"{prefix}.closure", f" at size {size}", dims.observables,
                                      simulate.get("r_cutoff"))
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


def encoder_problems(closure: dict, key: str, where: str = "", observables: int = 1, r_cutoff: float | None = None) -> list[str]:
    """The particle encoder's limit: d latent variables need at least d independent inputs, so
    latent_dim can be at most the number of pooled descriptors. The thermodynamic closure reads
    the particle encoder's neighbour pairs and takes three latent variables beside the observables.
    A reference cutoff belongs to the particle encoder and may not exceed the simulated one
    (`r_cutoff`), so the encoder's pair potential is never dearer than the system's."""
    found = []
    if "reference_cutoff" in closure:
        if closure.get("encoder") != "particles":
            found.append(f"config key '{key}.reference_cutoff': needs '{key}.encoder: particles' (it is the cutoff "
                         f"of that encoder's neighbour pairs){where}")
        elif r_cutoff is not None and closure["reference_cutoff"] > r_cutoff:
            found.append(f"config key '{key}.reference_cutoff': {closure['reference_cutoff']} exceeds the simulated "
                         f"r_cutoff {r_cutoff}{where}")
    if closure.get("thermodynamic", False):
        if closure.get("encoder") != "particles":
            found.append(f"config key '{key}.thermodynamic': needs '{key}.encoder: particles' (it reads that "
                         f"encoder's neighbour pairs){where}")
        if closure["latent_dim"] < observables + len(THERMODYNAMIC_VARIABLES):
            found.append(f"config key '{key}.latent_dim': {closure['latent_dim']} leaves no room for the "
                         f"{len(THERMODYNAMIC_VARIABLES)} thermodynamic closure variables beside {observables} "
                         f"observable(s){where}")
    if closure.get("encoder") == "particles" and closure["latent_dim"] > POOLED_FEATURES:
        found.append(f"config key '{key}.latent_dim': {closure['latent_dim']} exceeds the {POOLED_FEATURES} pooled "
                     f"descriptors the particles encoder reads{where}, so J would be rank deficient")
    return found


def load_config(path: str | Path) -> dict:
    """Read, validate and complete a YAML configuration file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read configuration {path}: {error}") from error
    return validate(config)
