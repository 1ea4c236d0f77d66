"""The `macroclosure efficiency` stage: rollout error against the cost of force computation.

From the metrics of every run of the efficiency grid (`planning.plan`): rollout error, mean
and std over seeds and ensemble members and always against the encoded ground-truth test
trajectories, against force evaluations; per size the smallest training set whose mean error
is at most e_tol, the force evaluations and force wall time it took, and the ratio L_z / L_x,p.
Per system and size the baselines (`macroclosure.baselines`) stand beside the curves, and a
point whose mean error is not below the mean course is marked as having no skill.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from macroclosure.planning import run_of, size_of_baselines, sizes  # noqa: E402
from macroclosure.report import (DIVERGED_ERROR, annealing_note, draw_baselines, finish_error_axis,  # noqa: E402
                                 load_baselines, load_metrics, save_figure, with_baselines, write_table)
from macroclosure.runtime import log  # noqa: E402

BASELINE = "L_z"
CURVE = ["system", "size", "units", "loss", "subset"]
BOUND_SIGN = {"exact": "", "at least": "≥ ", "at most": "≤ "}  # how to_tolerance.md writes a ratio's bound
# Force evaluations to reach e_tol = 3e-3 in the published figures: units (coordinates, atoms) -> {loss: evaluations}
PUBLISHED = {
    "predator_prey": {100: {"L_z": 6e5, "L_xp": 1.5e5}},
    "lennard_jones": {
        800: {"L_z": 1.2e6, "L_xp": 1.1e5},
        2700: {"L_z": 2.0e6, "L_xp": 8.8e4},
        6400: {"L_z": 4.8e6, "L_xp": 1.0e5},
        21600: {"L_z": 1.1e7, "L_xp": 6.3e4},
    },
}


def load_runs(paths: list[str]) -> pd.DataFrame:
    """One row per trained model (run x ensemble member): its run, metrics and size in units.
    The size is the metrics' own `units`; metrics written before they carried it give it as
    evaluations / (configurations p), which is exact only where p x units is a whole number."""
    rows = pd.concat([load_metrics([path]).assign(**run_of(path)._asdict()) for path in paths], ignore_index=True)
    inferred = (rows["force_evaluations"] / (rows["configurations"] * rows["p"])).round()
    rows["units"] = (rows["units"].fillna(inferred) if "units" in rows else inferred).astype(int)
    return rows


def load_size_baselines(paths: list[str]) -> pd.DataFrame:
    """One row per (system, size, baseline): `report.load_baselines` with the size of each path."""
    return pd.concat([load_baselines([path]).assign(size=size_of_baselines(path)) for path in paths], ignore_index=True)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (curve, training-set size): force cost and rollout error mean and std over models.

    A diverged model (error above DIVERGED_ERROR or non-finite) makes the mean infinite: a
    training-set size that does not reliably give a usable model has not reached any tolerance.
    """
    rows = rows.assign(diverged=~(rows["rollout_error"] <= DIVERGED_ERROR))
    rows["rollout_error"] = rows["rollout_error"].where(~rows["diverged"], np.inf)
    points = rows.groupby([*CURVE, "configurations"], sort=True).agg(
        force_unit=("force_unit", "first"),
        force_evaluations=("force_evaluations", "mean"),
        force_wall_seconds=("force_wall_seconds", "mean"),
        rollout_error_mean=("rollout_error", "mean"),
        rollout_error_std=("rollout_error", lambda errors: float(np.std(errors)) if np.isfinite(errors).all() else np.inf),
        seeds=("seed", "nunique"),
        models=("seed", "count"),
        diverged=("diverged", "sum"),
        never_annealed=("never_annealed", "sum"),
    ).reset_index()
    return points.astype({"force_evaluations": int, "diverged": int, "never_annealed": int})


def size_tolerances(settings: dict, baselines: pd.DataFrame) -> dict[tuple[str, int], float]:
    """e_tol per (system, size) of the efficiency section `settings`: the grid's
    `tolerance_mean_course` times that size's mean-course error where it sets one (a fluctuation
    floor that changes with size asks for a tolerance that does too), else its `tolerance`, else
    the section's."""
    found = {}
    for system, grid in settings["systems"].items():
        for size in sizes(system, grid):
            if "tolerance_mean_course" in grid:
                course = baselines[(baselines["system"] == system) & (baselines["size"] == size)
                                   & (baselines["model"] == "mean course")]["rollout_error"]
                found[system, size] = grid["tolerance_mean_course"] * float(course.iloc[0])
            else:
                found[system, size] = grid.get("tolerance", settings["tolerance"])
    return found


def to_tolerance(points: pd.DataFrame, tolerances: dict[tuple[str, int], float]) -> pd.DataFrame:
    """Per curve, the smallest training set whose mean rollout error is at most its size's
    tolerance (`tolerances`, (system, size) -> e_tol):
    its configurations, force evaluations and force wall time (NaN and reached = False when no
    training set of the grid got there; `largest_force_evaluations` is then a lower bound)."""
    rows = []
    for key, curve in points.sort_values("configurations").groupby(CURVE, sort=True):
        tolerance = tolerances[key[0], key[1]]
        below = curve[curve["rollout_error_mean"] <= tolerance]
        first = below.iloc[0] if len(below) else None
        rows.append(dict(zip(CURVE, key)) | {
            "tolerance": tolerance,
            "force_unit": curve["force_unit"].iloc[0],
            "reached": first is not None,
            "configurations": first["configurations"] if first is not None else np.nan,
            "force_evaluations": first["force_evaluations"] if first is not None else np.nan,
            "force_wall_seconds": first["force_wall_seconds"] if first is not None else np.nan,
            "rollout_error_mean": first["rollout_error_mean"] if first is not None else np.nan,
            "largest_force_evaluations": curve["force_evaluations"].max(),
        })
    return pd.DataFrame(rows)


def ratios(reached: pd.DataFrame) -> pd.DataFrame:
    """Per size and partial curve, L_z's cost to e_tol over that curve's, in force evaluations
    and in force wall time. `bound` says how to read it: exact (both reached), at least (only the
    partial curve reached, L_z's largest training set taken as its cost), at most (only L_z
    reached, the partial curve's largest training set taken as its cost), or unknown (NaN)."""
    rows = []
    for (system, size), group in reached.groupby(["system", "size"], sort=True):
        baseline = group[group["loss"] == BASELINE]
        if baseline.empty:
            continue
        base = baseline.iloc[0]
        for other in group[group["loss"] != BASELINE].itertuples():
            bound = {(True, True): "exact", (False, True): "at least", (True, False): "at most"}.get(
                (bool(base["reached"]), bool(other.reached)), "unknown")
            evaluations = base["force_evaluations"] if base["reached"] else base["largest_force_evaluations"]
            partial = other.force_evaluations if other.reached else other.largest_force_evaluations
            rows.append({
                "system": system, "size": size, "units": other.units, "loss": other.loss, "subset": other.subset,
                "bound": bound,
                "force_evaluation_ratio": evaluations / partial if bound != "unknown" else np.nan,
                "force_wall_ratio": base["force_wall_seconds"] / other.force_wall_seconds if bound == "exact" else np.nan,
            })
    return pd.DataFrame(rows, columns=["system", "size", "units", "loss", "subset", "bound", "force_evaluation_ratio",
                                       "force_wall_ratio"])


def markdown(reached: pd.DataFrame, ratio: pd.DataFrame) -> str:
    """Force evaluations to e_tol per size and curve, beside the published figures (e_tol = 3e-3)."""
    lines = ["Force evaluations until the mean rollout error over seeds is at most e_tol; published: the reference "
             "figures at e_tol = 3e-3. `> n`: not reached with the largest training set, n force evaluations.", "",
             "| system | size | units | loss | subset | e_tol | configurations | force evaluations | force wall time (s) "
             "| L_z / this | published |", "|" + "---|" * 11]
    for row in reached.itertuples():
        match = ratio[(ratio["system"] == row.system) & (ratio["size"] == row.size) & (ratio["subset"] == row.subset)
                      & (ratio["loss"] == row.loss)]
        factor = "" if match.empty or match["bound"].iloc[0] == "unknown" else (
            BOUND_SIGN[match["bound"].iloc[0]] + f"{match['force_evaluation_ratio'].iloc[0]:.2g}×")
        published = PUBLISHED.get(row.system, {}).get(row.units, {}).get(row.loss)
        cost = (f"{int(row.configurations)} | {row.force_evaluations:.2g} {row.force_unit}s | {row.force_wall_seconds:.3g}"
                if row.reached else f"| > {row.largest_force_evaluations:.2g} {row.force_unit}s |")
        lines.append(f"| {row.system} | {row.size} | {row.units} | {row.loss} | {row.subset} | {row.tolerance:.3g} | {cost} "
                     f"| {factor} | {'' if published is None else f'{published:.2g}'} |")
    return "\n".join(lines) + "\n"


def baselines_markdown(baselines: pd.DataFrame) -> str:
    """The baselines' mean rollout errors per system and size, as a Markdown table."""
    table = baselines.pivot_table(index=["system", "size", "units"], columns="model", values="rollout_error")
    lines = ["Baselines on the same test trajectories (no learnt dynamics): persistence keeps the observables at "
             "their initial value, the mean course follows the mean relative course of the training trajectories. "
             "A training set whose mean error is not below the mean course has no skill (points.csv: no_skill).", "",
             "| system | size | units | persistence | mean course |", "|" + "---|" * 5]
    for (system, size, units), row in table.iterrows():
        lines.append(f"| {system} | {size} | {units} | {row['persistence']:.2e} | {row['mean course']:.2e} |")
    return "\n".join(lines) + "\n"


def _label(loss: str, subset: str) -> str:
    return f"{loss} {subset[0]} = {subset[1:]}"


def plot_data_efficiency(points: pd.DataFrame, baselines: pd.DataFrame, system: str, tolerances: dict, path: Path) -> None:
    """Rollout error (mean ± std over seeds) against force evaluations, one panel per size with
    its e_tol (`tolerances`, as size_tolerances), one curve per (loss, subset), the size's
    baselines as black lines; a training set with a diverged model is drawn as ▲ on the top edge."""
    points, baselines = points[points["system"] == system], baselines[baselines["system"] == system]
    panels = sorted(points["size"].unique())
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    finite = points["rollout_error_mean"][np.isfinite(points["rollout_error_mean"])]
    tolerance = max(tolerances[system, size] for size in panels)
    top = 3 * max(finite.max(), tolerance) if len(finite) else DIVERGED_ERROR
    for axis, size in zip(axes[0], panels):
        here = points[points["size"] == size]
        for number, ((loss, subset), curve) in enumerate(here.groupby(["loss", "subset"], sort=True)):
            good = np.isfinite(curve["rollout_error_mean"])
            axis.errorbar(curve["force_evaluations"][good], curve["rollout_error_mean"][good],
                          yerr=curve["rollout_error_std"][good], color=f"C{number}", marker="o", ms=4, capsize=3,
                          label=_label(loss, subset))
            axis.scatter(curve["force_evaluations"][~good], np.full((~good).sum(), top), color=f"C{number}", marker="^")
        draw_baselines(axis, baselines[baselines["size"] == size])
        finish_error_axis(axis, tolerances[system, size], f"{system}, {here['units'].iloc[0]} {here['force_unit'].iloc[0]}s", here["force_unit"].iloc[0])
    save_figure(figure, path)


def plot_scaling(reached: pd.DataFrame, ratio: pd.DataFrame, system: str, path: Path) -> None:
    """Against system size: force evaluations and force wall time to e_tol per curve, and the
    ratio L_z / L_x,p of both. A curve that never reached e_tol shows its largest training
    set as an open ▲ (the cost is at least that)."""
    reached, ratio = reached[reached["system"] == system], ratio[ratio["system"] == system]
    unit = reached["force_unit"].iloc[0]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    colours = {key: f"C{number}" for number, key in enumerate(sorted(set(zip(reached["loss"], reached["subset"]))))}
    for (loss, subset), curve in reached.groupby(["loss", "subset"], sort=True):
        colour, hit = colours[loss, subset], curve["reached"].astype(bool)
        axes[0].plot(curve["units"][hit], curve["force_evaluations"][hit], "o-", color=colour, label=_label(loss, subset))
        axes[0].scatter(curve["units"][~hit], curve["largest_force_evaluations"][~hit], marker="^", facecolors="none",
                        edgecolors=colour)
        axes[1].plot(curve["units"][hit], curve["force_wall_seconds"][hit], "o-", color=colour, label=_label(loss, subset))
    for (loss, subset), curve in ratio.groupby(["loss", "subset"], sort=True):
        for column, style in (("force_evaluation_ratio", "o-"), ("force_wall_ratio", "s--")):
            what = "evaluations" if column == "force_evaluation_ratio" else "wall time"
            axes[2].plot(curve["units"], curve[column], style, color=colours[loss, subset],
                         label=f"{BASELINE} / {_label(loss, subset)}: {what}")
    titles = ("force evaluations to e_tol", "force wall time to e_tol", f"ratio {BASELINE} / partial")
    ylabels = (f"force evaluations ({unit}s)", "force wall time (s)", "ratio")
    drawn = (True, reached["reached"].any(), np.isfinite(ratio[["force_evaluation_ratio", "force_wall_ratio"]].to_numpy()).any())
    for axis, title, ylabel, filled in zip(axes, titles, ylabels, drawn):
        axis.set(title=f"{system}: {title}", xlabel=f"system size ({unit}s)", ylabel=ylabel)
        if not filled:  # nothing to draw (and nothing a log axis could scale)
            axis.text(0.5, 0.5, "e_tol not reached at any size", ha="center", va="center", transform=axis.transAxes)
            continue
        axis.set(xscale="log", yscale="log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    save_figure(figure, path)


def efficiency(metrics_paths: list[str], baselines_paths: list[str], out: str, settings: dict) -> None:
    """Write the tables (points, to_tolerance and ratios as CSV and HTML, to_tolerance.md) and the
    figures (data_efficiency_{system}.png; scaling_{system}.png where the grid has several
    sizes) of the efficiency grid `settings` (the config's efficiency section) into `out`;
    `baselines_paths` are the baselines.json of every system and size, shown beside the curves."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = summarise(load_runs(metrics_paths))
    baselines = load_size_baselines(baselines_paths)
    tolerances = size_tolerances(settings, baselines)
    reached = to_tolerance(points, tolerances)
    ratio = ratios(reached)
    tables = {
        "points": (with_baselines(points, baselines, ["system", "size"], name="loss"),
                   "Efficiency grid: rollout error and force cost per run, then the baselines of each size"),
        "to_tolerance": (reached, "Smallest training set reaching e_tol, per size and curve"),
        "ratios": (ratio, "Cost of L_z to e_tol over each partial-force curve's"),
    }
    for name, (table, title) in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        write_table(table, title, out / f"{name}.html")
    (out / "to_tolerance.md").write_text(markdown(reached, ratio) + "\n" + baselines_markdown(baselines)
                                         + annealing_note(points, ["system", "size", "loss", "subset", "configurations"]))
    for system, grid in settings["systems"].items():
        plot_data_efficiency(points, baselines, system, tolerances, out / f"data_efficiency_{system}.png")
        if len(sizes(system, grid)) > 1:
            plot_scaling(reached, ratio, system, out / f"scaling_{system}.png")
    log.info("efficiency of %d runs written to %s", len(metrics_paths), out)
