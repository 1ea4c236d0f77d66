"""`macroclosure info`: what a store or a model folder holds and where it came from.

Stores (trajectories, forces) are recognised by their `macroclosure_store` attribute and
opened with the same checks every stage applies; closure and dynamics folders by their
`hparams.json`. Both carry a provenance record: the digest of the settings that made them,
the settings themselves, the seed, the device and the package versions.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from macroclosure.store import CONTRACTS, StoreError, open_store

HIDDEN_ATTRIBUTES = ("provenance", "checksums", "macroclosure_store")


def describe(path: str | Path) -> str:
    """A readable account of the store or model folder at `path`."""
    path = Path(path)
    if not path.exists():
        raise StoreError(path, "does not exist")
    if (path / "hparams.json").is_file():
        return describe_model(path)
    return describe_store(path)


def store_kind(path: Path) -> str:
    """The kind a zarr store declares in its root attributes, read without opening it."""
    try:
        attributes = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        attributes = {}
    kind = attributes.get("macroclosure_store")
    if kind not in CONTRACTS:
        raise StoreError(path, "is neither a macroclosure store (zarr.json with macroclosure_store) nor a model folder (hparams.json)")
    return kind


def describe_store(path: Path) -> str:
    """Kind, variables (dimensions, sizes, type, units), attributes and provenance of a store."""
    kind = store_kind(path)
    with warnings.catch_warnings():  # zarr on the marker file Snakemake leaves in directory outputs
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        ds = open_store(path, kind)
    lines = [f"{path}: {kind} store of {ds.attrs.get('system', '?')}", "variables:"]
    lines += [f"  {variable_line(name, ds[name])}" for name in sorted(ds.variables)]
    lines.append("attributes:")
    lines += [f"  {key}: {value}" for key, value in sorted(ds.attrs.items()) if key not in HIDDEN_ATTRIBUTES]
    checksummed = sorted(json.loads(ds.attrs.get("checksums", "{}")))
    if checksummed:
        lines.append(f"  checksums verified: {', '.join(checksummed)}")
    return "\n".join(lines + provenance_lines(json.loads(ds.attrs.get("provenance", "{}"))))


def variable_line(name: str, variable) -> str:
    """`name (dim=size, ...) dtype [units]  long name` for one variable."""
    shape = ", ".join(f"{dim}={size}" for dim, size in zip(variable.dims, variable.shape))
    units = f" [{variable.attrs['units']}]" if "units" in variable.attrs else ""
    long_name = f"  {variable.attrs['long_name']}" if "long_name" in variable.attrs else ""
    return f"{name} ({shape}) {variable.dtype}{units}{long_name}"


def describe_model(path: Path) -> str:
    """Hyper-parameters and provenance of a closure or dynamics folder."""
    hparams = json.loads((path / "hparams.json").read_text())
    what = f"latent model {hparams['model']} trained with {hparams['loss']}" if "loss" in hparams else "closure autoencoder"
    lines = [f"{path}: {what} of {hparams.get('system', '?')}", "files: " + ", ".join(sorted(p.name for p in path.iterdir() if not p.name.startswith("."))),
             "hyper-parameters:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in sorted(hparams.items()) if key != "provenance"]
    return "\n".join(lines + provenance_lines(hparams.get("provenance", {})))


def provenance_lines(record: dict) -> list[str]:
    """Where an output came from: settings digest, seed, device, versions, settings."""
    if not record:
        return ["provenance: none recorded"]
    versions = ", ".join(f"{name} {version}" for name, version in sorted(record.get("versions", {}).items()))
    return [
        "provenance:",
        f"  config digest: {record.get('config_digest')}",
        f"  seed: {record.get('seed')}",
        f"  device: {record.get('device')}",
        f"  versions: {versions}",
        f"  settings: {json.dumps(record.get('settings'), sort_keys=True)}",
    ]
