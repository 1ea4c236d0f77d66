"""Configuration: schema validation with defaults, semantic checks, and section digests.

The Snakefile calls `load_config` before any job is planned, so a bad `config.yaml` stops
the run with the offending key named, instead of failing hours later inside a job.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
FULL_FORCE_LOSSES = ("L_z", "L_x")


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


def validate(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Validate `config` in place against the schema, filling defaults; raise ConfigError."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = _without_echoes(sorted(_validator_with_defaults(schema).iter_errors(config), key=lambda e: e.json_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    check_semantics(config)
    return config


def complete_section(system: str, stage: str, settings: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """One stage's settings validated against its part of the schema, defaults filled in.

    Lets a stage run from the command line with a partial section, and refuses a bad one
    with the key named, exactly as the whole-config validation would.
    """
    settings = copy.deepcopy(settings)
    problems = section_problems(system, stage, settings, f"systems.{system}.{stage}", schema_path)
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
    return settings


def section_problems(system: str, stage: str, settings: dict, key: str, schema_path: Path = SCHEMA_PATH) -> list[str]:
    """What is wrong with one stage's settings, each line naming its key under `key`; fills
    the section's defaults in place."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    try:
        reference = schema["$defs"][system]["properties"][stage]["$ref"]
    except KeyError:
        raise ConfigError(f"no settings '{stage}' are known for system '{system}'") from None
    validator = _validator_with_defaults({"$ref": reference, "$defs": schema["$defs"]})
    return [_describe(error, prefix=key) for error in sorted(validator.iter_errors(settings), key=lambda e: e.json_path)]


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it, nested sections merged key by key."""
    result = copy.deepcopy(base)
    for name, value in changes.items():
        result[name] = merged(result[name], value) if isinstance(value, dict) and isinstance(result.get(name), dict) else value
    return result


def check_semantics(config: dict) -> None:
    """Checks the schema cannot express: sizes that depend on the system and each other."""
    from macroclosure.efficiency_plan import problems as efficiency_problems
    from macroclosure.planning import budget_problems
    from macroclosure.systems import dimensions, setting_problems

    problems = []
    for name, system in config["systems"].items():
        prefix = f"systems.{name}"
        dims = dimensions(name, system["simulate"])
        problems += [
            f"config key '{prefix}.simulate.{key}': {why}" for key, why in setting_problems(name, system["simulate"]).items()
        ]
        latent = system["closure"]["latent_dim"]
        if latent <= dims.observables:
            problems.append(
                f"config key '{prefix}.closure.latent_dim': {latent} must be larger than the "
                f"number of observables ({dims.observables}) to leave room for a closure"
            )
        problems += encoder_problems(system["closure"], f"{prefix}.closure")
        for p in system["sample"]["fractions"]:
            if round(p * dims.units) < 1:
                problems.append(
                    f"config key '{prefix}.sample.fractions': p = {p} samples no {dims.unit} "
                    f"of {dims.units} (p * units must be at least 1)"
                )
        simulate = system["simulate"]
        available = simulate["trajectories"]["train"] * (simulate["steps"] // simulate["save_every"] + 1)
        if system["sample"]["configurations"] > available:
            problems.append(
                f"config key '{prefix}.sample.configurations': {system['sample']['configurations']} "
                f"exceeds the {available} saved training states"
            )
        if "L_xp" in system["train"]["losses"] and not partial_fractions(system):
            problems.append(
                f"config key '{prefix}.train.losses': L_xp needs a fraction p < 1 in "
                f"'{prefix}.sample.fractions'"
            )
        problems += budget_problems(system, prefix)
    problems += efficiency_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def encoder_problems(closure: dict, key: str, where: str = "") -> list[str]:
    """The particle encoder's limit: d latent variables need at least d independent inputs, so
    latent_dim can be at most the number of pooled descriptors."""
    if closure.get("encoder") != "particles":
        return []
    from macroclosure.descriptors import POOLED_FEATURES

    if closure["latent_dim"] <= POOLED_FEATURES:
        return []
    return [f"config key '{key}.latent_dim': {closure['latent_dim']} exceeds the {POOLED_FEATURES} pooled "
            f"descriptors the particles encoder reads{where}, so J would be rank deficient"]


def load_config(path: str | Path) -> dict:
    """Read, validate and complete a YAML configuration file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read configuration {path}: {error}") from error
    return validate(config)


def partial_fractions(system: dict) -> list[float]:
    """The fractions p < 1 that L_xp trains on."""
    return [p for p in system["sample"]["fractions"] if p < 1]


def training_runs(system: dict) -> list[tuple[str, float]]:
    """Every (loss, p) the system trains: full-force losses at p = 1, L_xp at each p < 1."""
    runs = [(loss, 1.0) for loss in system["train"]["losses"] if loss in FULL_FORCE_LOSSES]
    if "L_xp" in system["train"]["losses"]:
        runs += [("L_xp", p) for p in partial_fractions(system)]
    return runs


def format_fraction(p: float) -> str:
    """The fraction as it appears in paths: 0.2 -> '0.2', 1.0 -> '1', 1/16 -> '0.0625'."""
    return f"{p:g}"


def digest(section: Any) -> str:
    """A stable SHA-256 of a configuration section (keys sorted), recorded in every output."""
    canonical = json.dumps(section, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
