"""Collect the closure-seed runs of `closure_seeds.sh` into one table: per closure seed, the
MLP rollout errors of L_z and the other losses that ran (L_x, L_x,p, L_x,p,c, L_z at L_x,p's
force budget) over the latent seeds,
the per-seed ratios to L_z, the closure's final losses and its metric (`latent_metric.py`);
then, over all closures and seeds: the pooled ratio of mean errors with a bootstrap interval
(closures resampled, then seeds within them), one-way ANOVAs of each loss's error by closure
and by latent seed (is the closure's draw distinguishable from the latent seed's?), and the
Spearman correlation of the per-closure ratio with the closure's statistics.

    .venv/bin/python benchmarks/default_tuning/closure_seeds.py results/tune/allen_cahn_closure_seed{0..7}
    .venv/bin/python benchmarks/default_tuning/closure_seeds.py results/tune/allen_cahn_closure_seed{0..7}_batch32 \
        --against results/tune/allen_cahn_closure_seed{0..7}   # a variant, model by model against the base
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from latent_metric import measure  # noqa: E402

ROWS = {"L_z": "mlp_L_z_p1_seed", "L_x": "mlp_L_x_p1_seed", "L_xp": "mlp_L_xp_p*_seed", "L_xpc": "mlp_L_xpc_p*_seed",
        "L_z budget": "mlp_L_z_p1_c*_seed"}  # L_z on the partial losses' force budget
PARTIAL = ("L_xp", "L_xpc")


def errors(system_results: Path, prefix: str) -> dict[int, float]:
    """Rollout error per latent seed of the evaluated runs named `prefix`SEED."""
    found = {}
    for metrics in sorted((system_results / "evaluation").glob(f"{prefix}*/metrics.json")):
        record = json.loads(metrics.read_text())
        found[record["seed"]] = record["rollout_error"]
    return found


def per_seed(table: pd.DataFrame, loss: str) -> np.ndarray:
    """A loss's rollout errors as [closure, latent seed]."""
    return np.array(table[f"{loss} per seed"].to_list())


def closure_row(results: Path, with_metric: bool = True) -> dict:
    """One closure seed's row; `with_metric` False leaves out the closure's statistics (a base
    run compared against shares its closure with the variant, whose row has them)."""
    (system_results,) = [folder.parent for folder in results.glob("*/closure")]
    closure_seed = json.loads((system_results / "closure" / "hparams.json").read_text())["provenance"]["settings"]["seed"]
    row = {"closure seed": closure_seed}
    if with_metric:
        history = pd.read_csv(system_results / "closure" / "history.csv")
        metric = measure(system_results)
        row |= {"reconstruction": history["reconstruction"].iloc[-1],
                "median kappa(JJ^T)": np.median(metric["kappa_gram"]),
                "median kappa(M)": np.median(metric["kappa_metric"]),
                "observables' share of trace(M)": metric["trace_share"][:metric["observables"]].sum()}
    reference = errors(system_results, ROWS["L_z"])
    row["L_z"] = np.mean(list(reference.values()))
    row["L_z per seed"] = list(reference.values())
    for loss in ("L_x", *PARTIAL, "L_z budget"):
        found = errors(system_results, ROWS[loss])
        if not found:
            continue
        row[loss] = np.mean(list(found.values()))
        row[f"{loss} per seed"] = list(found.values())
        row[f"{loss} / L_z"] = row[loss] / row["L_z"]
        row[f"{loss} / L_z per seed"] = ", ".join(f"{found[s] / reference[s]:.2f}" for s in sorted(found))
    return row


def compare(variant: pd.DataFrame, base: pd.DataFrame) -> None:
    """Print, per loss, the variant's pooled mean error over the base's and how many of its
    models (same closure and latent seed) beat their base twin."""
    assert variant["closure seed"].tolist() == base["closure seed"].tolist(), "pass the same closure seeds in order"
    for loss in [loss for loss in ROWS if loss in variant and loss in base]:
        new, old = (per_seed(frame, loss) for frame in (variant, base))
        print(f"variant / base, {loss}: pooled {new.mean() / old.mean():.3g}; lower for {int((new < old).sum())} "
              f"of {new.size} models")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="results folders of closure_seeds.sh")
    parser.add_argument("--against", type=Path, nargs="+", help="the base folders of the same closure seeds, in order")
    args = parser.parse_args()
    table = pd.DataFrame([closure_row(results) for results in args.results]).sort_values("closure seed")
    if args.against:
        base = pd.DataFrame([closure_row(results, with_metric=False) for results in args.against]).sort_values("closure seed")
        compare(table, base)
    seed_lists = [column for column in table.columns if column.endswith(" per seed") and not column.endswith("/ L_z per seed")]
    print(table.drop(columns=seed_lists).to_markdown(index=False, floatfmt=".3g"))
    reference = per_seed(table, "L_z")
    print(f"\nL_z over every closure and seed ({reference.size} models): mean {reference.mean():.3g}, std {reference.std():.2g}")
    rng = np.random.default_rng(0)
    for loss in ROWS:
        if loss not in table:
            continue
        errors_ = per_seed(table, loss)
        by_closure = stats.f_oneway(*errors_).pvalue
        by_seed = stats.f_oneway(*errors_.T).pvalue
        line = f"{loss}: ANOVA p by closure {by_closure:.2f}, by latent seed {by_seed:.2f}"
        if loss != "L_z":
            ratios = table[f"{loss} / L_z"]
            closures = rng.integers(0, len(errors_), (20000, len(errors_)))[..., None]
            seeds = rng.integers(0, errors_.shape[1], closures.shape[:2] + (errors_.shape[1],))
            resampled = errors_[closures, seeds].mean((1, 2)) / reference[closures, seeds].mean((1, 2))
            low, high = np.percentile(resampled, [2.5, 97.5])
            line += (f"; mean {errors_.mean():.3g}, std {errors_.std():.2g}, pooled mean / L_z's {errors_.mean() / reference.mean():.3g} "
                     f"(95 % bootstrap {low:.2f}-{high:.2f}); per closure {loss} / L_z: median {ratios.median():.3g}, range "
                     f"{ratios.min():.3g}-{ratios.max():.3g}, at most 1.5 in {int((ratios <= 1.5).sum())} of {len(ratios)}")
        print(line)
    budget = per_seed(table, "L_z budget")
    for loss in [loss for loss in PARTIAL if loss in table]:
        partial = per_seed(table, loss)
        print(f"At equal force budget, {loss} / L_z budget, pooled: {partial.mean() / budget.mean():.3g}; {loss} lower for "
              f"{int((partial < budget).sum())} of {budget.size} models")
    if "L_x" in table:
        paired = per_seed(table, "L_xp") / per_seed(table, "L_x")
        print(f"L_xp / L_x, model by model (same closure and seed): median {np.median(paired):.2f}, "
              f"range {paired.min():.2f}-{paired.max():.2f}")
    ratio = table["L_xp / L_z"]
    for column in ("reconstruction", "median kappa(M)", "observables' share of trace(M)", "L_z"):
        print(f"Spearman correlation of L_xp / L_z with {column}: {ratio.corr(table[column], method='spearman'):.2f}")


if __name__ == "__main__":
    main()
