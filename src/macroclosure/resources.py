"""Memory and runtime one job asks the scheduler for, estimated from the configuration's sizes.

The rules call `estimate` in their `resources:`, so a larger configuration asks SLURM for
more instead of being killed at a fixed limit. Each stage reports its largest arrays and its
dominant work from the system's sizes (`systems.dimensions`, generic over systems) and its
own settings:

    mem_mb  = base (interpreter, JAX / torch, compiled code) + COPIES x largest arrays
    runtime = BASE_MINUTES + the stage's dominant work at conservative CPU throughputs

Calibrated on benchmarks/results/ (Allen-Cahn 200 x 200 peak memory, training throughput);
tests/test_resources.py checks the estimates cover those measurements. A retried job
(Snakemake's `attempt`) asks for `attempt` times as much, so a job killed for memory or
time gets more on its next try.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from macroclosure.planning import fraction_count, saved_frames
from macroclosure.systems import dimensions

MB = 2**20
COPIES = 3  # input, working and output copies of the largest arrays a stage holds
BASE_MB = {"simulate": 1000, "sample": 1000, "closure": 1500, "train": 1500, "evaluate": 1000,
           "baselines": 1000, "adopt": 500}
BASE_MINUTES = 10  # start-up, imports, compilation, store I/O
JACOBIAN_BYTES = 256 * MB  # batch of encoder Jacobians in training (train.JACOBIAN_BYTES)
# Throughputs a few times below what this 2-core CPU measured (benchmarks/results/, DESIGN.md)
SIMULATE_RATE = 1e6  # state values advanced by one step per second (RK4 PDEs 2.5e7, jax-md LJ ~3e6)
SAMPLE_RATE = 1e6  # state values read per second to compute partial forces
COPY_RATE = 5e7  # bytes per second an imported store is copied at (file by file)
LAYER_RATE = 1e8  # multiply-adds per second through an autoencoder's first layer
TRAIN_RATE = 5e3  # latent-model samples per second and member (forward and backward)
ROLLOUT_RATE = 1e3  # latent RK4 steps per second (batched over trajectories)
# atoms per second of the particle encoder's closed-form Jacobian (descriptors.pooled_pull_back, every
# row at once): 800 atoms took 0.25-0.43 s per state on the 2-core CPU at load average 3.4
PARTICLE_JACOBIAN_RATE = 1.5e3


class Need(NamedTuple):
    """What one job asks for: memory in MB and runtime in minutes."""

    mem_mb: int
    runtime: int


class Sizes(NamedTuple):
    """The sizes every estimate is made from."""

    dof: int
    units: int
    rows_per_unit: int
    itemsize: int  # bytes per stored state value
    frames: int  # saved states per trajectory


def sizes(system: str, spec: dict) -> Sizes:
    """Sizes of `system` under its validated config section `spec`."""
    simulate = spec["simulate"]
    dims = dimensions(system, simulate)
    return Sizes(dims.dof, dims.units, dims.rows_per_unit, np.dtype(simulate["dtype"]).itemsize, saved_frames(simulate))


def force_rows(size: Sizes, p: float) -> int:
    """State rows whose force one configuration holds at fraction p."""
    return fraction_count(p, size.units) * size.rows_per_unit


def simulate_load(size: Sizes, spec: dict, split: str) -> tuple[float, float]:
    """Bytes and seconds: one batch of trajectories in memory; every state value advanced every step."""
    settings = spec["simulate"]
    count = settings["trajectories"][split]
    batch = min(settings["batch_size"], count)
    return batch * size.frames * size.dof * size.itemsize, count * settings["steps"] * size.dof / SIMULATE_RATE


def sample_load(size: Sizes, spec: dict, p: float) -> tuple[float, float]:
    """Bytes and seconds: the force array (values and int64 indices) plus one batch of
    states; reading the states dominates."""
    settings = spec["sample"]
    forces = settings["configurations"] * force_rows(size, p) * (size.itemsize + 8)
    states = min(settings["batch_size"], settings["configurations"]) * size.dof * size.itemsize
    return forces + states, settings["configurations"] * size.dof / SAMPLE_RATE


def jacobian_seconds(size: Sizes, closure: dict) -> float:
    """Seconds for one state's encoder Jacobian where it dominates (the particle encoder: linear
    in atoms); 0 for the MLP encoder, whose cost its first layer bounds."""
    if closure.get("encoder") != "particles":
        return 0.0
    return size.units / PARTICLE_JACOBIAN_RATE


def closure_load(size: Sizes, spec: dict) -> tuple[float, float]:
    """Bytes and seconds: the float32 training states and their closure.ClosureData (for the MLP
    encoder the inputs and the observables' Jacobian, each as large as the states); every epoch
    passes the inputs through the first layer, and the particle encoder's Jacobians are taken once
    per state."""
    settings = spec["closure"]
    states = min(settings["configurations"], spec["simulate"]["trajectories"]["train"] * size.frames)
    per_epoch = size.dof * settings["hidden"][0] / LAYER_RATE
    return 3 * states * size.dof * 4, states * (settings["epochs"] * per_epoch + jacobian_seconds(size, settings))


def train_load(size: Sizes, spec: dict, p: float) -> tuple[float, float]:
    """Bytes and seconds: the float64 forces with their indices and one batch of Jacobians;
    every epoch passes every sample through every member."""
    configurations = spec["sample"]["configurations"]
    settings = spec["train"]
    memory = configurations * force_rows(size, p) * 16 + JACOBIAN_BYTES
    jacobians = configurations * jacobian_seconds(size, spec["closure"])
    return memory, settings["epochs"] * configurations * settings["ensemble"] / TRAIN_RATE + jacobians


def evaluate_load(size: Sizes, spec: dict) -> tuple[float, float]:
    """Bytes and seconds: one test trajectory at a time is encoded, then every member is
    rolled out over all saved times."""
    count = spec["simulate"]["trajectories"]["test"]
    encoding = count * size.frames * size.dof * spec["closure"]["hidden"][0] / LAYER_RATE
    rollouts = spec["train"]["ensemble"] * size.frames * spec["evaluate"]["substeps"] / ROLLOUT_RATE
    return size.frames * size.dof * size.itemsize, encoding + rollouts


def baselines_load(size: Sizes, spec: dict) -> tuple[float, float]:
    """Bytes and seconds: one trajectory's states at a time; every saved state of both splits is read."""
    count = sum(spec["simulate"]["trajectories"].values())
    return size.frames * size.dof * size.itemsize, count * size.frames * size.dof / SAMPLE_RATE


def adopt_load(size: Sizes, spec: dict, split: str) -> tuple[float, float]:
    """Bytes and seconds: a store copied file by file (one chunk in memory) at COPY_RATE."""
    count = spec["simulate"]["trajectories"][split]
    return 0.0, count * size.frames * size.dof * size.itemsize / COPY_RATE


def estimate(stage: str, system: str, spec: dict, attempt: int = 1, split: str = "train", p: float = 1.0) -> Need:
    """Memory (MB) and runtime (minutes) for one job of `stage` on `system`.

    `spec` is the system's validated config section; `split` and `p` are the job's
    wildcards where the stage has them; `attempt` counts Snakemake's tries of the job.
    """
    size = sizes(system, spec)
    loads = {
        "simulate": lambda: simulate_load(size, spec, split),
        "sample": lambda: sample_load(size, spec, float(p)),
        "closure": lambda: closure_load(size, spec),
        "train": lambda: train_load(size, spec, float(p)),
        "evaluate": lambda: evaluate_load(size, spec),
        "baselines": lambda: baselines_load(size, spec),
        "adopt": lambda: adopt_load(size, spec, split),
    }
    if stage not in loads:
        raise ValueError(f"no resource estimate for stage '{stage}'; known: {', '.join(loads)}")
    memory, seconds = loads[stage]()
    mem_mb = 100 * math.ceil((BASE_MB[stage] + COPIES * memory / MB) / 100)
    runtime = math.ceil(BASE_MINUTES + seconds / 60)
    return Need(mem_mb * attempt, runtime * attempt)
