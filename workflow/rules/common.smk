# Helpers of the rules: the settings, resources and paths of one job, found from its wildcards.
# A job of the efficiency grid has a `size` wildcard, so the pipeline's stages and the grid's
# runs share these helpers and the efficiency rules inherit params and resources unchanged.
import json

from macroclosure.planning import (forces_fraction, imported_store, job_settings, plan, run_names, sizes, stage_spec,
                                   with_configurations)
from macroclosure.resources import estimate
from macroclosure.runtime import digest
from macroclosure.systems import module_of

EFFICIENCY_GRIDS = config["efficiency"]["systems"]
# A system whose config names imported stores (`simulate.source`) is not simulated: its stores are
# copied in by `adopt`; each rule's output constrains `system` to its own systems.
IMPORTED = [system for system in SYSTEMS if imported_store(config["systems"][system]["simulate"], "train")]
SIMULATED_SYSTEMS = "|".join(system for system in SYSTEMS if system not in IMPORTED) or "none"
IMPORTED_SYSTEMS = "|".join(IMPORTED) or "none"


def job_spec(wildcards) -> dict:
    """The system section one job reads: its system's under `systems:`, or for an efficiency
    run the grid's at its size; at the job's own training-set size where it has one."""
    configurations = wildcards.get("configurations")
    if "size" not in wildcards.keys():
        return with_configurations(config["systems"][wildcards.system], configurations)
    return stage_spec(wildcards.system, EFFICIENCY_GRIDS[wildcards.system], int(wildcards.size),
                      int(configurations) if configurations else None)


def source_store(wildcards) -> str:
    """The imported store (its zarr.json) a system's `simulate.source` names for the job's split."""
    return imported_store(config["systems"][wildcards.system]["simulate"], wildcards.split)


def section(wildcards, stage) -> str:
    """The settings one job of `stage` uses, as JSON: a job reruns only when they change."""
    return json.dumps(job_settings(job_spec(wildcards), stage, wildcards), sort_keys=True)


def simulate_gpus(wildcards) -> int:
    """A GPU for a simulation, unless its engine runs on CPUs only (LAMMPS)."""
    return 0 if job_settings(job_spec(wildcards), "simulate", wildcards).get("engine") == "lammps" else GPUS


def fraction(wildcards) -> str:
    """The fraction p of a job: its `p`, or an efficiency run's subset as the fraction at its size."""
    if "subset" not in wildcards.keys():
        return wildcards.get("p", "1")
    return forces_fraction(wildcards.system, EFFICIENCY_GRIDS[wildcards.system], int(wildcards.size), wildcards.subset)


def need(stage, wildcards, attempt):
    """Memory and runtime of one job of `stage`, estimated from the sizes of its system section."""
    return estimate(stage, wildcards.system, job_spec(wildcards), attempt, wildcards.get("split", "train"),
                    fraction(wildcards))


def efficiency_forces(wildcards) -> str:
    """The force sample an efficiency run trains on: its subset as the fraction p at its size."""
    size_folder = f"{RESULTS}/efficiency/{wildcards.system}/size{wildcards.size}"
    return f"{size_folder}/forces/p{fraction(wildcards)}/c{wildcards.configurations}_seed{wildcards.seed}.zarr/zarr.json"


def rollout_labels(wildcards):
    """A run's labels in the HTML report, its training-set size among them (the report shows
    one figure per distinct set of labels, and equal-budget runs differ from others only there)."""
    configurations = wildcards.get("configurations") or config["systems"][wildcards.system]["sample"]["configurations"]
    return {"model": wildcards.model, "loss": wildcards.loss, "p": wildcards.p, "configurations": str(configurations),
            "seed": wildcards.seed}


def rollout_figure(path):
    """A run's rollout figure in the HTML report (shown per system, labelled by `rollout_labels`)."""
    return report(path, caption="../report/rollout.rst", category="Rollouts", subcategory="{system}", labels=rollout_labels)
