"""Our rollout errors beside the published ones: one Markdown table per paper run.

Reads the `points.csv` an efficiency run wrote (mean and std over seeds and ensemble members
per loss and training-set size) and writes `benchmarks/paper/{name}.md`, with the published
number and the ratio ours / published where the paper reports that point (METHOD.md,
"Protocol details that decide the numbers").

    .venv/bin/python benchmarks/paper/compare.py predator_prey results/paper/predator_prey/efficiency/points.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

# (loss, configurations) -> published relative rollout error of the observables
PUBLISHED = {
    "predator_prey": {("L_z", 600): 1.8e-2, ("L_z", 3000): 3.2e-3, ("L_z", 6000): 1.2e-3,
                      ("L_xp", 3000): 4.0e-3, ("L_xp", 7500): 1.9e-3, ("L_xp", 15000): 1.34e-3,
                      ("L_xp", 30000): 1.13e-3, ("L_xp", 120000): 5.7e-4},
    # Lennard-Jones 800 at equal budget 1e6: L_z on 1 250 configurations, L_x,p on 20 000 x 50 atoms
    "lennard_jones_800_onsager": {("L_z", 1250): 4.45e-3, ("L_xp", 20000): 1.17e-3},
    "lennard_jones_800_mlp": {("L_z", 1250): 2.60e-2, ("L_xp", 20000): 1.34e-3},
    "lennard_jones_800_gfinn": {("L_z", 1250): 1.28e-2, ("L_xp", 20000): 2.84e-3},
    # Allen-Cahn 200 x 200 (mean of 3 seeds): L_z on 2 500 states, L_x,p on 40 000 states x p = 1/25
    "allen_cahn": {("L_z", 2500): 6.93e-3, ("L_xp", 40000): 3.98e-3},
}


def table(name: str, points: pd.DataFrame) -> str:
    """Markdown: one row per (loss, subset, configurations), ours beside the published."""
    published = PUBLISHED[name]
    lines = ["| loss | subset | configurations | force evaluations | ours: rollout error (mean ± std) | models "
             "| diverged | published | ours / published |", "|" + "---|" * 9]
    trained = points[points["loss"].isin(["L_z", "L_x", "L_xp"])]
    for row in trained.sort_values(["loss", "configurations"]).itertuples():
        reference = published.get((row.loss, int(row.configurations)))
        ratio = row.rollout_error_mean / reference if reference else None
        lines.append(
            f"| {row.loss} | {row.subset} | {int(row.configurations)} | {row.force_evaluations:.3g} {row.force_unit}s "
            f"| {row.rollout_error_mean:.3g} ± {row.rollout_error_std:.2g} | {row.models} | {row.diverged} "
            f"| {'' if reference is None else f'{reference:.3g}'} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    baselines = points[~points["loss"].isin(["L_z", "L_x", "L_xp"])]
    lines += ["", "Baselines on the same test trajectories (no dynamics learnt): "
              + "; ".join(f"{row.loss} {row.rollout_error_mean:.3g}" for row in baselines.itertuples())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    name, points_path = sys.argv[1], sys.argv[2]
    out = Path(__file__).parent / f"{name}_table.md"
    out.write_text(table(name, pd.read_csv(points_path)))
    print(out.read_text())
