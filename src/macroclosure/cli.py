"""Command line: one subcommand per pipeline stage, with the arguments the Snakemake rules use.

Settings are the stage's section of the validated configuration, as JSON text or `@file`.
Example: macroclosure sample --trajectories results/predator_prey/trajectories/train.zarr \
    --p 0.2 --seed 0 --settings '{"configurations": 4000, "batch_size": 1024}' --out f.zarr
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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

    report(args.metrics, args.histories, args.baselines, args.out, args.config)


def run_efficiency(args):
    from macroclosure.efficiency import efficiency

    efficiency(args.metrics, args.baselines, args.out, args.settings)


def run_validate(args):
    from macroclosure.config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="macroclosure", description=__doc__.splitlines()[0])
    stages = main.add_subparsers(dest="stage", required=True)

    def stage(name, run, help, settings=True, device=True):
        sub = stages.add_parser(name, help=help)
        sub.set_defaults(run=run)
        sub.add_argument("--out", required=name != "validate", help="output store, folder or file")
        if settings:
            sub.add_argument("--settings", type=settings_json, required=True, help="the stage's config section, JSON or @file")
        if device:
            sub.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
            sub.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
        return sub

    sub = stage("simulate", run_simulate, "integrate trajectories into a trajectory store")
    sub.add_argument("--system", required=True, help="a built-in system, or the importable module of your own")
    sub.add_argument("--split", choices=["train", "test"], required=True)

    sub = stage("sample", run_sample, "compute partial forces on random subsets")
    sub.add_argument("--trajectories", required=True)
    sub.add_argument("--p", type=float, required=True)
    sub.add_argument("--seed", type=int, required=True)

    sub = stage("closure", run_closure, "fit the closure autoencoder")
    sub.add_argument("--trajectories", required=True)

    sub = stage("train", run_train, "train a latent dynamics model")
    for name in ("trajectories", "forces", "closure", "model", "loss"):
        sub.add_argument(f"--{name}", required=True)
    sub.add_argument("--seed", type=int, required=True)

    sub = stage("evaluate", run_evaluate, "roll out a trained model on the test trajectories")
    for name in ("model-dir", "closure", "trajectories"):
        sub.add_argument(f"--{name}", required=True)

    sub = stage("baselines", run_baselines, "score persistence and the mean course on the test trajectories",
                settings=False, device=False)
    sub.add_argument("--train", required=True, help="training trajectory store (the mean course is learnt from it)")
    sub.add_argument("--test", required=True, help="test trajectory store")

    sub = stage("report", run_report, "aggregate metrics into tables and figures", settings=False, device=False)
    sub.add_argument("--metrics", nargs="+", required=True)
    sub.add_argument("--baselines", nargs="+", required=True, help="baselines.json of every system")
    sub.add_argument("--histories", nargs="+", required=True)
    sub.add_argument("--config", type=settings_json, required=True, help="the validated configuration, JSON or @file")

    sub = stage("efficiency", run_efficiency, "aggregate the efficiency grid: error against force evaluations, cost to e_tol",
                device=False)
    sub.add_argument("--metrics", nargs="+", required=True)
    sub.add_argument("--baselines", nargs="+", required=True, help="baselines.json of every system and size")

    sub = stage("validate", run_validate, "validate a configuration file", settings=False, device=False)
    sub.add_argument("config")
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
