"""The `macroclosure baselines` stage: what a model must beat to show skill.

Two predictions that learn no dynamics, scored on the test trajectories with the metric of
the trained models (`metric.relative_rollout_error` on the physical observables z*):

- persistence: z*(t) stays at z*(0);
- mean course: z*(0) times m(t), the mean over the training trajectories of z*(t) / z*(0),
  component by component. Where the ratio means nothing, for a component some training
  trajectory starts at |z*(0)| <= SMALL_START x the component's largest |z*| over the
  training set, that component follows the mean absolute course instead,
  z*(0) + mean(z*(t) - z*(0)).

The observables come from the raw states through the system's own `observables`, not through
a trained closure, so the baselines need only the two trajectory stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from macroclosure.metric import relative_rollout_error
from macroclosure.runtime import log
from macroclosure.store import open_store, read
from macroclosure.systems import System, system_of

BASELINES = ("persistence", "mean course")
SMALL_START = 1e-6  # |z*(0)| at or below this fraction of the component's scale counts as zero


def read_observables(path: str) -> tuple[System, np.ndarray, np.ndarray]:
    """The system, the saved times and z* [trajectory, time, m] of a trajectory store,
    computed one trajectory at a time (a store can be far larger than memory)."""
    ds = open_store(path, "trajectories")
    system = system_of(ds)
    with torch.no_grad():
        observables = np.stack([
            system.observables(torch.as_tensor(read(ds, "state", trajectory=i))).numpy()
            for i in range(ds.sizes["trajectory"])
        ])
    return system, ds["time"].values, observables


def relative_components(train: np.ndarray) -> np.ndarray:
    """[m] True where every training trajectory starts clear of zero, so that the course
    z*(t) / z*(0) is defined (see SMALL_START)."""
    scale = np.abs(train).max(axis=(0, 1))
    return (np.abs(train[:, 0]) > SMALL_START * scale).all(axis=0)


def mean_course(train: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The mean-course prediction [trajectory, time, m] from the initial observables
    start [trajectory, m], learnt from the training observables train [trajectory, time, m]."""
    relative = relative_components(train)
    initial = train[:, :1]
    ratio = (train / np.where(relative, initial, 1.0)).mean(0)
    shift = (train - initial).mean(0)
    start = start[:, None]
    return np.where(relative, start * ratio, start + shift)


def baseline_errors(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """Relative rollout error per test trajectory of each baseline, from the observables of
    the training and the test trajectories ([trajectory, time, m], one time grid)."""
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"training observables {train.shape[1:]} and test observables {test.shape[1:]} "
                         "(time, m) differ: the splits were not simulated with the same settings")
    persistence = np.broadcast_to(test[:, :1], test.shape)
    return {"persistence": relative_rollout_error(persistence, test),
            "mean course": relative_rollout_error(mean_course(train, test[:, 0]), test)}


def baselines(train_path: str, test_path: str, out: str) -> None:
    """Write `out` (baselines.json): per baseline the mean error over the test trajectories
    and the error of each, beside the system, its size in force units and the components that
    fell back to the absolute mean course."""
    system, train_time, train = read_observables(train_path)
    test_system, test_time, test = read_observables(test_path)
    if system.name != test_system.name or not np.allclose(train_time, test_time):
        raise ValueError(f"{train_path} and {test_path} are not one system on one time grid")
    errors = baseline_errors(train, test)
    record = {
        "system": system.name,
        "units": system.dims.units,
        "force_unit": system.dims.unit,
        "train_trajectories": len(train),
        "test_trajectories": len(test),
        "absolute_course": [name for name, relative in zip(system.observable_names, relative_components(train))
                            if not relative],
        "baselines": {name: {"rollout_error": float(error.mean()), "rollout_error_per_trajectory": error.tolist()}
                      for name, error in errors.items()},
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(record, indent=2))
    log.info("baselines over %d test trajectories: %s", len(test),
             ", ".join(f"{name} {error.mean():.3e}" for name, error in errors.items()))
