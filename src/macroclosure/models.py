"""The latent models a config can train, each described by one record.

A record carries everything the rest of the project needs to know about a model: the torch
class that builds it (imported only when a model is built, so planning and validation stay
free of torch), the JSON-schema fragment of its settings block under `train:` (the
configuration schema is assembled from these), and its colour and marker in the figures.
Adding a latent model is its torch class plus one record here and its block in a config.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple


class LatentModel(NamedTuple):
    """What the configuration, the trainer and the report know about one latent model."""

    name: str  # its key in `train.models` and its settings block under `train:`
    network: str  # "module:Class" of its torch module, called as Class(dim, **settings)
    settings: dict  # JSON-schema fragment of its settings block (defaults filled by validation)
    colour: str  # matplotlib colour of its curves and points
    marker: str  # matplotlib marker of its points


def _block(properties: dict) -> dict:
    """A model's settings block: an object of `properties`, nothing else, empty by default."""
    return {"type": "object", "additionalProperties": False, "default": {}, "properties": properties}


MODELS = {
    model.name: model
    for model in (
        LatentModel(
            "mlp", "macroclosure.dynamics:MLP",
            _block({"hidden": {"$ref": "#/$defs/hidden_layers", "default": [256, 256]},
                    "activation": {"enum": ["relu", "tanh", "softplus"], "default": "relu"}}),
            "C0", "o",
        ),
        LatentModel(
            "onsager", "macroclosure.dynamics:onsager_net",
            _block({"hidden": {"$ref": "#/$defs/positive_int", "default": 32},
                    "trunk_layers": {"type": "integer", "minimum": 0, "default": 0,
                                     "description": "0: separate tanh networks for V, M and W and a forcing linear in z;"
                                                    " n: one residual trunk of n layers (published LJ: 3 x 256) read"
                                                    " out into V, M, W and a nonlinear forcing"},
                    "alpha": {"$ref": "#/$defs/positive_number", "default": 0.1},
                    "beta": {"$ref": "#/$defs/positive_number", "default": 0.1},
                    "forcing": {"type": "boolean", "default": True}}),
            "C1", "s",
        ),
        LatentModel(
            "gfinn", "macroclosure.dynamics:GFINN",
            _block({"hidden": {"$ref": "#/$defs/positive_int", "default": 64},
                    "layers": {"type": "integer", "minimum": 0, "default": 2,
                               "description": "hidden layers of the E and S networks"},
                    "rank": {"$ref": "#/$defs/positive_int", "description": "columns of the friction factor B (default d)"}}),
            "C2", "D",
        ),
    )
}


def model_names() -> tuple[str, ...]:
    """Every latent model a config can name in `train.models`, in registration order."""
    return tuple(MODELS)


def latent_model(name: str) -> LatentModel:
    """The record of model `name`; names the known ones when there is none."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown latent model {name!r}; known: {sorted(MODELS)}") from None


def network(name: str):
    """The torch class that builds model `name` (imported here, not at planning time)."""
    module, _, attribute = latent_model(name).network.partition(":")
    return getattr(importlib.import_module(module), attribute)
