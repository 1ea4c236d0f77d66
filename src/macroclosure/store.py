"""Zarr v3 stores written and read through xarray: contracts, validation, atomic writes.

Every store carries `macroclosure_store` (its kind) and is written under a temporary name
that is renamed into place only when complete, so a killed job never leaves a store that
looks finished. Readers check the kind, the system, the variables and their dimensions,
and say which file and which field is wrong. Float arrays use NaN as fill value, so a lost
chunk reads as NaN and `read` refuses it; integer arrays carry checksums instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import xarray as xr

CONTRACTS = {
    "trajectories": {"state": ("trajectory", "time", "dof")},
    "forces": {
        "trajectory": ("sample",),
        "time_index": ("sample",),
        "index": ("sample", "row"),
        "force": ("sample", "row"),
    },
}
TARGET_CHUNK_BYTES = 4 * 2**20
INDEX_DTYPE = np.int64  # every index a store holds (trajectory, time, row), whatever the system


class StoreError(RuntimeError):
    """A store that is missing, foreign, incomplete or corrupt."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"store {path}: {problem}")
        self.path = Path(path)


def described(long_name: str, units: str | None = None) -> dict:
    """The CF attributes that say what a variable is: `long_name`, and `units` where it has some."""
    return {"long_name": long_name} | ({"units": units} if units else {})


def checksum(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _temporary_path(path: Path, tag: str = "partial") -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


def _replace(path: Path, temporary: Path) -> None:
    """Move `temporary` to `path`; an existing `path` is set aside first and removed last,
    so at every instant either the old or the new complete store is in place (or set aside)."""
    previous = _temporary_path(path, "previous")
    if path.exists():
        path.rename(previous)
    temporary.rename(path)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block completes.

    Temporaries left behind by killed writers of the same path are removed first.
    """
    path = Path(path)
    temporary = _temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as error:
        raise StoreError(path, f"cannot be written: {error}") from error
    try:
        yield temporary
        _replace(path, temporary)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise StoreError(path, f"cannot be written: {error}") from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def store_folder(path: str | Path) -> Path:
    """The store at `path`: the folder itself, or the folder of its root `zarr.json`.

    The workflow declares a store by its `zarr.json` (a file output), so Snakemake puts no
    marker file inside the store and plain xarray opens it without warnings."""
    path = Path(path)
    return path.parent if path.name == "zarr.json" else path


def _checksummed(ds: xr.Dataset) -> xr.Dataset:
    """Record a checksum of every integer variable, which has no NaN fill to betray a lost chunk."""
    sums = {name: checksum(ds[name].values) for name in ds.data_vars if ds[name].dtype.kind in "iu"}
    return ds.assign_attrs(checksums=json.dumps(sums, sort_keys=True)) if sums else ds


def write_store(ds: xr.Dataset, path: str | Path, kind: str) -> None:
    """Write a whole dataset atomically as a store of `kind`."""
    ds = _checksummed(ds.assign_attrs(macroclosure_store=kind))
    with atomic_directory(store_folder(path)) as temporary:
        ds.to_zarr(temporary, mode="w", consolidated=False, zarr_format=3)


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most about TARGET_CHUNK_BYTES: whole trailing axes, as many slices of the
    split axis as fit, and single slices along the leading axes (so one huge trajectory is
    split along time instead of becoming one huge chunk)."""
    for axis in range(len(shape)):
        trailing = itemsize * int(np.prod(shape[axis + 1 :], dtype=np.int64))
        if trailing <= TARGET_CHUNK_BYTES:  # whole slices of this axis fit: take as many as fit
            count = max(1, int(min(shape[axis], TARGET_CHUNK_BYTES // max(trailing, 1))))
            return (1,) * axis + (count,) + tuple(shape[axis + 1 :])
    return tuple(shape)  # only for an empty shape


@contextlib.contextmanager
def streamed_store(path: str | Path, kind: str, attrs: dict, append_dim: str) -> Iterator:
    """Yield `append(ds)`: blocks appended along `append_dim`, renamed into place at the end.

    `attrs` are written with the first block; `append` returns the number of blocks so far.
    """
    with atomic_directory(store_folder(path)) as temporary:
        written = 0

        def append(block: xr.Dataset) -> int:
            nonlocal written
            # xarray replaces the group's attributes on every write, appends included
            block = block.assign_attrs(macroclosure_store=kind, **attrs)
            if written == 0:
                encoding = {
                    name: {"chunks": chunk_shape(block[name].shape, block[name].dtype.itemsize)}
                    for name in block.data_vars
                    if block[name].ndim > 1
                }
                block.to_zarr(temporary, mode="w", consolidated=False, zarr_format=3, encoding=encoding)
            else:
                block.to_zarr(temporary, append_dim=append_dim, consolidated=False)
            written += 1
            return written

        yield append
        if written == 0:
            raise StoreError(path, "nothing was written")


def open_store(path: str | Path, kind: str, system: str | None = None) -> xr.Dataset:
    """Open a store (its folder or its zarr.json) lazily after checking it is a complete
    `kind` store (of `system`)."""
    path = store_folder(path)
    if not path.exists():
        raise StoreError(path, "does not exist (has the stage that writes it run?)")
    if not (path / "zarr.json").is_file():
        raise StoreError(path, "is not a zarr v3 store (no zarr.json); it may be half-written or foreign")
    try:
        ds = xr.open_zarr(path, consolidated=False, zarr_format=3)
    except Exception as error:  # zarr raises many types for damaged metadata
        raise StoreError(path, f"cannot be opened: {error}") from error
    found = ds.attrs.get("macroclosure_store")
    if found != kind:
        what = f"a '{found}' store" if found else "not a macroclosure store"
        raise StoreError(path, f"is {what}; expected a '{kind}' store")
    if system is not None and ds.attrs.get("system") != system:
        raise StoreError(path, f"holds system '{ds.attrs.get('system')}', expected '{system}'")
    for name, dims in CONTRACTS[kind].items():
        if name not in ds.variables:
            raise StoreError(path, f"lacks the variable '{name}'")
        if ds[name].dims != dims:
            raise StoreError(path, f"variable '{name}' has dimensions {ds[name].dims}, expected {dims}")
    for name, coordinate in ds.coords.items():  # loaded on opening: a lost chunk reads as NaN
        if coordinate.dtype.kind == "f" and not np.isfinite(coordinate.values).all():
            raise StoreError(path, f"coordinate '{name}' holds non-finite values (lost chunks or bad data)")
    _verify_checksums(ds, path)
    return ds


def _verify_checksums(ds: xr.Dataset, path: Path) -> None:
    for name, expected in json.loads(ds.attrs.get("checksums", "{}")).items():
        if checksum(read(ds, name, path)) != expected:
            raise StoreError(path, f"variable '{name}' does not match its checksum (lost or altered chunks)")


def read(ds: xr.Dataset, name: str, path: str | Path | None = None, **selection) -> np.ndarray:
    """Load `ds[name]` (optionally `.isel(**selection)`) and refuse damaged or non-finite data."""
    path = path or ds.encoding.get("source", "<store>")
    try:
        values = ds[name].isel(**selection).values
    except Exception as error:  # codec errors for truncated or garbled chunks
        raise StoreError(path, f"variable '{name}' cannot be read: {error}") from error
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise StoreError(path, f"variable '{name}' holds non-finite values (lost chunks or bad data)")
    return values


def read_states(ds: xr.Dataset, trajectory: np.ndarray, time_index: np.ndarray) -> np.ndarray:
    """States [S, N] at the (trajectory, time_index) pairs, reading only what they touch."""
    return read(
        ds,
        "state",
        trajectory=xr.DataArray(trajectory, dims="sample"),
        time=xr.DataArray(time_index, dims="sample"),
    )
