"""Collect the closure-seed runs of `closure_seeds.sh` into one table: per closure seed, the
Allen-Cahn MLP rollout errors of L_z and L_x,p (and L_x where it ran) over the latent seeds,
the per-seed ratios to L_z, the closure's final losses and its metric (`latent_metric.py`).

    .venv/bin/python benchmarks/default_tuning/closure_seeds.py results/tune/allen_cahn_closure_seed*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from latent_metric import measure  # noqa: E402

ROWS = {"L_z": "mlp_L_z_p1_seed", "L_x": "mlp_L_x_p1_seed", "L_xp": "mlp_L_xp_p0.2_seed"}


def errors(system_results: Path, prefix: str) -> dict[int, float]:
    """Rollout error per latent seed of the evaluated runs named `prefix`SEED."""
    found = {}
    for metrics in sorted((system_results / "evaluation").glob(f"{prefix}*/metrics.json")):
        record = json.loads(metrics.read_text())
        found[record["seed"]] = record["rollout_error"]
    return found


def closure_row(results: Path) -> dict:
    system_results = results / "allen_cahn"
    closure_seed = json.loads((system_results / "closure" / "hparams.json").read_text())["provenance"]["settings"]["seed"]
    history = pd.read_csv(system_results / "closure" / "history.csv")
    metric = measure(system_results)
    row = {"closure seed": closure_seed, "reconstruction": history["reconstruction"].iloc[-1],
           "median kappa(JJ^T)": np.median(metric["kappa_gram"]),
           "median kappa(M)": np.median(metric["kappa_metric"]),
           "F share of trace(M)": metric["trace_share"][0]}
    reference = errors(system_results, ROWS["L_z"])
    row["L_z"] = np.mean(list(reference.values()))
    row["L_z per seed"] = list(reference.values())
    for loss in ("L_x", "L_xp"):
        found = errors(system_results, ROWS[loss])
        if not found:
            continue
        row[loss] = np.mean(list(found.values()))
        row[f"{loss} per seed"] = list(found.values())
        row[f"{loss} / L_z"] = row[loss] / row["L_z"]
        row[f"{loss} / L_z per seed"] = ", ".join(f"{found[s] / reference[s]:.2f}" for s in sorted(found))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="results folders of closure_seeds.sh")
    args = parser.parse_args()
    table = pd.DataFrame([closure_row(results) for results in args.results]).sort_values("closure seed")
    per_seed = [column for column in table.columns if column.endswith(" per seed") and not column.endswith("/ L_z per seed")]
    print(table.drop(columns=per_seed).to_markdown(index=False, floatfmt=".3g"))
    pooled_reference = np.concatenate(table["L_z per seed"].to_list())
    print(f"\nL_z over every closure and seed ({len(pooled_reference)} models): mean {pooled_reference.mean():.3g}, "
          f"std {pooled_reference.std():.2g}")
    for loss in ("L_x", "L_xp"):
        if loss not in table:
            continue
        ratios = table[f"{loss} / L_z"]
        pooled = np.concatenate(table[f"{loss} per seed"].to_list())
        print(f"{loss} over every closure and seed ({len(pooled)} models): mean {pooled.mean():.3g}, std {pooled.std():.2g}; "
              f"pooled mean / L_z's {pooled.mean() / pooled_reference.mean():.3g}. Per closure {loss} / L_z: median "
              f"{ratios.median():.3g}, range {ratios.min():.3g}-{ratios.max():.3g}, at most 1.5 in {int((ratios <= 1.5).sum())} "
              f"of {len(ratios)}")
    ratio = table["L_xp / L_z"]
    for column in ("reconstruction", "median kappa(M)", "F share of trace(M)", "L_z"):
        print(f"Spearman correlation of L_xp / L_z with {column}: {ratio.corr(table[column], method='spearman'):.2f}")


if __name__ == "__main__":
    main()
