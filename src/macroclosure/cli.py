"""macroclosure: learn macroscopic closure models from partial microscopic forces.

One subcommand per pipeline stage, with the arguments the Snakemake rules use, so any stage
runs without Snakemake; `validate` checks a config and `info` describes an output.
Settings are the stage's section of the validated configuration, as JSON text or @file.
Example:
  macroclosure sample --trajectories results/predator_prey/trajectories/train.zarr
      --p 0.2 --seed 0 --settings '{"configurations": 4000, "batch_size": 1024}' --out f.zarr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from macroclosure import __version__
from macroclosure.runtime import log, setup_logging


def settings_json(text: str) -> dict:
    """JSON object given inline or as @path."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def run_simulate(args):
    from macroclosure.simulate import simulate

    simulate(args.system, args.settings, args.split, args.out, args.device, args.progress)


def run_import(args):
    from macroclosure.importing import import_trajectories

    import_trajectories(args.files, args.out, args.split, args.settings, args.frames_per_trajectory, args.format)


def run_adopt(args):
    from macroclosure.importing import adopt

    adopt(args.source, args.out, args.split, args.settings)


def run_sample(args):
    from macroclosure.sampling import sample

    sample(args.trajectories, args.out, args.p, args.seed, args.settings, args.device, args.progress)


def run_closure(args):
    from macroclosure.closure import run_closure

    run_closure(args.trajectories, args.out, args.settings, args.device, args.progress)


def run_train(args):
    from macroclosure.train import train

    train(args.trajectories, args.forces, args.closure, args.out, args.model, args.loss, args.seed,
          args.settings, args.device, args.progress)


def run_evaluate(args):
    from macroclosure.evaluate import evaluate

    evaluate(args.model_dir, args.closure, args.trajectories, args.out, args.settings, args.device)


def run_baselines(args):
    from macroclosure.baselines import baselines

    baselines(args.train, args.test, args.out)


def run_report(args):
    from macroclosure.report import report

    report(args.metrics, args.models, args.baselines, args.out, args.config)


def run_efficiency(args):
    from macroclosure.efficiency import efficiency

    efficiency(args.metrics, args.baselines, args.out, args.settings)


def run_info(args):
    from macroclosure.info import describe

    print(describe(args.store))


def run_validate(args):
    from macroclosure.config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")


class Names:
    """The names a registry holds, looked up when first needed (checking a value, printing
    help), so that `--help` or `--version` does not import JAX and torch for every stage."""

    def __init__(self, lookup):
        self._lookup = lookup
        self._names = None

    def _all(self) -> list[str]:
        if self._names is None:
            self._names = sorted(self._lookup())
        return self._names

    def __contains__(self, name) -> bool:
        return name in self._all()

    def __iter__(self):
        return iter(self._all())


def system_name(text: str) -> str:
    """A built-in system or the importable module of a user's own (README, Extending); else
    an argparse error naming the known systems."""
    from macroclosure.systems import plugin

    try:
        plugin(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def model_names() -> list[str]:
    from macroclosure.models import model_names as registered

    return list(registered())


def loss_names() -> list[str]:
    from macroclosure.losses import LOSSES

    return list(LOSSES)


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def fraction(text: str) -> float:
    """A fraction p with 0 < p <= 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def add_stage(stages, name: str, run, summary: str, description: str, out: str | None, settings=True, device=True):
    """A subcommand with its one-line summary, its description and the common arguments."""
    sub = stages.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}")
    sub.set_defaults(run=run)
    if out:
        sub.add_argument("--out", required=True, help=out)
    if settings:
        sub.add_argument("--settings", type=settings_json, required=True,
                         help="the stage's section of the validated config (e.g. systems.<system>.%s), JSON text or @file" % name)
    if device:
        sub.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                         help="where to compute: %(choices)s (default %(default)s: a GPU when one is visible)")
        sub.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    return sub


def add_trajectories(sub, split: str = "training") -> None:
    sub.add_argument("--trajectories", required=True, metavar="STORE", help=f"{split} trajectory store (written by simulate)")


def add_simulate_settings(sub) -> None:
    """The --settings of the stages that stand in for simulate: the system's simulate section."""
    sub.add_argument("--settings", type=settings_json, required=True,
                     help="the simulate section the trajectories must match (systems.lennard_jones.simulate of the "
                          "config), JSON text or @file; missing keys take the schema defaults")


def add_seed(sub, what: str) -> None:
    sub.add_argument("--seed", type=int, required=True, help=what)


def parser() -> argparse.ArgumentParser:
    """The `macroclosure` command line: one subcommand per pipeline stage, plus validate and info."""
    main = argparse.ArgumentParser(prog="macroclosure", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="Run `macroclosure <stage> --help` for a stage's arguments.")
    main.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    stages = main.add_subparsers(dest="stage", required=True, metavar="STAGE")

    sub = add_stage(stages, "simulate", run_simulate, "integrate trajectories into a trajectory store",
                    "Draws the split's initial states from the settings' seed and integrates them (RK4 for the PDEs, "
                    "velocity Verlet for molecular dynamics), streaming the saved frames to a zarr store.",
                    "trajectory store to write (e.g. results/<system>/trajectories/<split>.zarr)")
    sub.add_argument("--system", required=True, type=system_name, metavar="SYSTEM",
                     help="microscopic system: a built-in one or the importable module of your own (a wrong name lists the known ones)")
    sub.add_argument("--split", choices=["train", "test"], required=True, help="which trajectories: %(choices)s")

    sub = add_stage(stages, "import", run_import, "turn your own Lennard-Jones trajectories into a trajectory store",
                    "Reads LAMMPS text dumps (dump custom: id, xu yu zu or x y z ix iy iz, vx vy vz) or extended-XYZ files "
                    "(ASE), one trajectory per file, atoms sorted by id, and writes the store the simulate stage writes. "
                    "The atoms, the cubic periodic box and the frame spacing the files hold must match the settings "
                    "(box side from atoms / density, save_every steps of dt); what a file lacks is taken from them.",
                    "trajectory store to write (name it under simulate.source in the config)", settings=False, device=False)
    add_simulate_settings(sub)
    sub.add_argument("files", nargs="+", metavar="FILE", help="trajectory files, in the order of the trajectories")
    sub.add_argument("--split", choices=["train", "test"], required=True, help="which trajectories: %(choices)s")
    sub.add_argument("--format", choices=["lammps", "extxyz"], default=None,
                     help="file format: %(choices)s (default: extxyz for .xyz / .extxyz, else a LAMMPS dump)")
    sub.add_argument("--frames-per-trajectory", type=positive_int, default=None, metavar="N",
                     help="split each file into trajectories of N consecutive frames (default: a file is one trajectory)")

    sub = add_stage(stages, "adopt", run_adopt, "check an imported trajectory store and copy it into a run",
                    "What the workflow runs instead of simulate for a system with simulate.source: the store must pass the "
                    "store checks and match the run's simulate settings (atoms, density, r_cutoff, dt, save_every, steps, "
                    "dtype, trajectories of the split).", "trajectory store to write (results/<system>/trajectories/<split>.zarr)",
                    settings=False, device=False)
    add_simulate_settings(sub)
    sub.add_argument("--source", required=True, metavar="STORE", help="the imported trajectory store (written by import)")
    sub.add_argument("--split", choices=["train", "test"], required=True, help="which trajectories: %(choices)s")

    sub = add_stage(stages, "sample", run_sample, "compute partial forces on random subsets",
                    "Picks training configurations and, for each, a random subset of a fraction p of its units "
                    "(coordinates or atoms), and computes the forces on those units only.",
                    "force store to write (e.g. results/<system>/forces/p<p>/seed<seed>.zarr)")
    add_trajectories(sub)
    sub.add_argument("--p", type=fraction, required=True,
                     help="fraction of the units whose force is computed per configuration, 0 < p <= 1 (1: full forces)")
    add_seed(sub, "seed of the configuration and subset draw")

    sub = add_stage(stages, "closure", run_closure, "fit the closure autoencoder",
                    "Fits the encoder (the system's observables plus learnt closure variables) and its decoder with the "
                    "condition-number penalty, and saves it with the latent normalisation of the training trajectories.",
                    "closure folder to write (model.pt, hparams.json, normalisation.json)")
    add_trajectories(sub)

    sub = add_stage(stages, "train", run_train, "train a latent dynamics model",
                    "Trains an ensemble of latent models dz/dt = g(z) with one loss on one force store.",
                    "dynamics folder to write (model.pt, hparams.json, history.csv)")
    add_trajectories(sub)
    sub.add_argument("--forces", required=True, metavar="STORE", help="force store (written by sample)")
    sub.add_argument("--closure", required=True, metavar="FOLDER", help="closure folder (written by closure)")
    sub.add_argument("--model", required=True, choices=Names(model_names), metavar="MODEL",
                     help="latent dynamics model: %(choices)s")
    sub.add_argument("--loss", required=True, choices=Names(loss_names), metavar="LOSS",
                     help="training loss: %(choices)s (L_z and L_x need a full-force store, p = 1; L_xp, L_xpc, L_zp and L_zu a partial one)")
    add_seed(sub, "seed of the model initialisation and the minibatches")

    sub = add_stage(stages, "evaluate", run_evaluate, "roll out a trained model on the test trajectories",
                    "Encodes each test trajectory, integrates the latent model from its first state with RK4 and scores "
                    "the relative rollout error of the observables; writes metrics.json and a rollout figure.",
                    "evaluation folder to write")
    sub.add_argument("--model-dir", required=True, metavar="FOLDER", help="dynamics folder (written by train)")
    sub.add_argument("--closure", required=True, metavar="FOLDER", help="closure folder (written by closure)")
    add_trajectories(sub, "test")

    sub = add_stage(stages, "baselines", run_baselines, "score persistence and the mean course on the test trajectories",
                    "Two references every model should beat: the observables held at their initial value, and their "
                    "mean course over the training trajectories.", "baselines.json to write", settings=False, device=False)
    sub.add_argument("--train", required=True, metavar="STORE", help="training trajectory store (the mean course is learnt from it)")
    sub.add_argument("--test", required=True, metavar="STORE", help="test trajectory store")

    sub = add_stage(stages, "report", run_report, "aggregate metrics into tables and figures",
                    "Writes summary.csv, summary.md and summary.html (one row per system, model, loss, p and training-set "
                    "size), the error against force evaluations, the loss curves and the configuration.", "report folder to write",
                    settings=False, device=False)
    sub.add_argument("--metrics", nargs="+", required=True, metavar="JSON", help="metrics.json of every evaluated model")
    sub.add_argument("--baselines", nargs="+", required=True, metavar="JSON", help="baselines.json of every system")
    sub.add_argument("--models", nargs="+", required=True, metavar="FOLDER", help="dynamics folder of every trained model (its loss curves)")
    sub.add_argument("--config", type=settings_json, required=True, help="the validated configuration, JSON or @file")

    sub = add_stage(stages, "efficiency", run_efficiency,
                    "aggregate the efficiency grid: error against force evaluations, cost to e_tol",
                    "Fits error against force evaluations per system, size and loss, and reads off the force "
                    "evaluations each loss needs to reach the tolerance.", "efficiency folder to write", device=False)
    sub.add_argument("--metrics", nargs="+", required=True, metavar="JSON", help="metrics.json of every run of the grid")
    sub.add_argument("--baselines", nargs="+", required=True, metavar="JSON", help="baselines.json of every system and size")

    sub = add_stage(stages, "validate", run_validate, "validate a configuration file",
                    "Checks it against workflow/schemas/config.schema.yaml and the rules between keys, as the Snakefile "
                    "does before any job runs.", None, settings=False, device=False)
    sub.add_argument("config", help="configuration file (YAML), e.g. config.yaml")

    sub = add_stage(stages, "info", run_info, "show what a store or model folder holds and where it came from",
                    "Prints the variables (dimensions, sizes, types, units), the attributes and the provenance (config "
                    "digest, settings, seed, device, package versions) of a trajectory or force store, or the "
                    "hyper-parameters and provenance of a closure or dynamics folder.", None, settings=False, device=False)
    sub.add_argument("store", metavar="STORE", help="a .zarr store or a closure / dynamics folder under results/")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    try:
        args.run(args)
    except (ValueError, RuntimeError, OSError) as error:  # expected failures: one clear line
        log.error("%s failed: %s", args.stage, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
