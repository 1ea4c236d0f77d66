"""Aggregation of every evaluated model into the summary table and the report figures.

Beside the models stand the baselines of each system (`macroclosure.baselines`): a model whose
mean rollout error is not below the mean-course baseline is marked as having no skill.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from macroclosure.baselines import BASELINES  # noqa: E402
from macroclosure.history import read_history  # noqa: E402
from macroclosure.models import latent_model  # noqa: E402
from macroclosure.planning import BUDGET_LOSS, PARTIAL_FORCE_LOSSES, fraction_count  # noqa: E402
from macroclosure.runtime import log  # noqa: E402

GROUP = ["system", "model", "loss", "p", "configurations"]  # an equal-budget L_z run is its own row
ERROR_TOLERANCE = 3e-3  # METHOD.md's reference tolerance e_tol
DIVERGED_ERROR = 1.0  # a relative error above 1 is worse than predicting zero: the rollout left
SKILL_BASELINE = "mean course"  # a model shows skill only with a mean error below this baseline's
BASELINE_STYLE = dict(zip(BASELINES, (":", "-.")))  # line style of each baseline in the figures
PANEL_INCHES = (4.2, 3.2)  # one panel of a figure grid: about 460 x 350 pixels at the saved dpi
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{font-family: sans-serif; font-size: 13px; margin: 1em}}
table {{border-collapse: collapse}}
th, td {{padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap}}
th {{background: #f2f2f2; position: sticky; top: 0}}
pre {{font-size: 12px}}
</style></head>
<body><h3>{title}</h3>
{body}
</body></html>
"""


class SparseMinorLabels(ticker.Formatter):
    """Minor-tick labels of a log axis: only 2 and 5 of each decade, and only where the axis
    spans under two decades (where decades alone leave too few labels). Matplotlib labels
    every minor tick of a short axis, and 3, 4 and 6 x 10^n run into each other."""

    def __call__(self, value, position=None):
        low, high = self.axis.get_view_interval()
        exponent = math.floor(math.log10(value))
        mantissa = round(value / 10**exponent)
        if math.log10(high / low) >= 2 or mantissa not in (2, 5):
            return ""
        return f"${mantissa}\\times10^{{{exponent}}}$"


def finish_error_axis(axis, tolerance: float, title: str, force_unit: str) -> None:
    """Log-log axes of rollout error against force evaluations, with e_tol drawn."""
    axis.axhline(tolerance, color="grey", ls="--", lw=1, label=f"e_tol = {tolerance:.3g}")
    axis.set(xscale="log", yscale="log", title=title,
             xlabel=f"force evaluations ({force_unit}s)", ylabel="relative rollout error")
    for scale in (axis.xaxis, axis.yaxis):
        scale.set_minor_formatter(SparseMinorLabels())
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)


def draw_baselines(axis, baselines: pd.DataFrame) -> None:
    """Each baseline's mean rollout error (rows of `load_baselines`) as a black horizontal line."""
    for row in baselines.itertuples():
        axis.axhline(row.rollout_error, color="k", ls=BASELINE_STYLE[row.model], lw=1,
                     label=f"{row.model} = {row.rollout_error:.2g}")


def save_figure(figure, path: Path) -> None:
    """Write a figure as PNG and free it (figures pile up in long reports otherwise)."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_page(body: str, title: str, path: Path) -> None:
    """A standalone HTML page: the HTML report shows such an item inline, where a CSV or YAML
    file is only a download link."""
    path.write_text(PAGE.format(title=html.escape(title), body=body))


def write_table(table: pd.DataFrame, title: str, path: Path) -> None:
    """`table` as an HTML page: floats to 3 significant digits, missing values empty."""
    body = table.to_html(index=False, na_rep="", float_format=lambda value: f"{value:.3g}", border=0)
    write_page(body, title, path)


def load_metrics(paths: list[str]) -> pd.DataFrame:
    """One row per trained model: (system, model, loss, p, seed, ensemble member), with
    `never_annealed`: True where the member's learning rate could drop but never did."""
    rows = []
    for path in paths:
        metrics = json.loads(Path(path).read_text())
        errors = metrics.pop("member_rollout_errors")
        dropped = metrics.pop("member_lr_dropped", None) or [None] * len(errors)
        for member, (error, lowered) in enumerate(zip(errors, dropped)):
            rows.append(metrics | {"member": member, "rollout_error": error, "never_annealed": lowered is False})
    return pd.DataFrame(rows)


def annealing_note(table: pd.DataFrame, label: list[str]) -> str:
    """Markdown lines naming the rows of a summary `table` (columns `never_annealed`, `models`)
    with models whose learning rate never dropped, each named by its `label` columns; empty
    where there are none. Their loss kept creeping down by more than the plateau threshold, so
    their weights come from the starting rate, which for `keep: last` is an un-annealed iterate."""
    flagged = table[table["never_annealed"].fillna(0) > 0]
    if flagged.empty:
        return ""
    lines = [f"- {', '.join(f'{column} {row[column]}' for column in label)}: {int(row['never_annealed'])} of "
             f"{int(row['models'])} models" for _, row in flagged.iterrows()]
    return ("\nModels whose learning rate never dropped (the plateau schedule did not fire within `train.epochs`; "
            "lower `train.plateau_patience` or raise `train.epochs`):\n\n" + "\n".join(lines) + "\n")


def closure_note(config: dict) -> str:
    """A Markdown line naming the closure each system's rows share. Every seed and ensemble
    member of a system trains on the one closure of its `closure.seed`, so the table's ± is
    their spread alone and leaves out how much another closure would move a row (on
    Allen-Cahn, 8 closures moved L_x,p / L_z of 3 seeds from 1.04 to 2.55:
    benchmarks/default_tuning/README.md)."""
    seeds = ", ".join(f"{name} {section['closure']['seed']}" for name, section in sorted(config["systems"].items()))
    return (f"\nEach system's rows share one closure (`closure.seed`: {seeds}), so the ± is over latent seeds and "
            "ensemble members only; the closure's own variability is not in it (rerun with another `closure.seed` to "
            "see it).\n")


def load_baselines(paths: list[str]) -> pd.DataFrame:
    """One row per (baselines.json, baseline): system, units, force_unit, model (the baseline's
    name) and rollout_error, its mean over the test trajectories."""
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        for name, scores in record["baselines"].items():
            rows.append({"system": record["system"], "units": record["units"], "force_unit": record["force_unit"],
                         "model": name, "rollout_error": scores["rollout_error"]})
    return pd.DataFrame(rows)


def mark_skill(table: pd.DataFrame, baselines: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`table` with `no_skill`: True where its rollout_error_mean is not below the mean-course
    baseline with the same `keys` (system, or system and size). A mean that is NaN or infinite
    (every model diverged) has no skill either."""
    floor = baselines[baselines["model"] == SKILL_BASELINE].set_index(keys)["rollout_error"].rename("floor")
    return table.assign(no_skill=~(table["rollout_error_mean"] < table.join(floor, on=keys)["floor"]))


def with_baselines(table: pd.DataFrame, baselines: pd.DataFrame, keys: list[str], name: str = "model") -> pd.DataFrame:
    """The models' `table` marked by `mark_skill`, and after each group of `keys` its baselines
    as rows of their own: the baseline's name in the column `name`, its mean error, no force
    evaluations, configurations or seeds, one model, nothing diverged, no_skill left empty."""
    rows = baselines.assign(loss="", p=np.nan, configurations=0, force_evaluations=0, seeds=0, models=1, diverged=0,
                            rollout_error_mean=baselines["rollout_error"], rollout_error_std=0.0)
    rows[name] = baselines["model"]
    marked = mark_skill(table, baselines, keys)
    joined = pd.concat([marked, rows[rows.columns.intersection(marked.columns)]], ignore_index=True)
    return joined.sort_values(keys, kind="stable", ignore_index=True)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rollout error over trained models (seeds x ensemble members), beside the force cost,
    per (system, model, loss, p, configurations).

    Mean and std are over the models whose rollout stayed near the truth; `diverged` counts
    the models with an error above DIVERGED_ERROR (or non-finite), so one blown-up rollout is
    reported as such instead of swamping the mean.
    """
    diverged = ~(metrics["rollout_error"] <= DIVERGED_ERROR)
    metrics = metrics.assign(finite_error=metrics["rollout_error"].where(~diverged), diverged=diverged)
    summary = metrics.groupby(GROUP, sort=True).agg(
        seeds=("seed", "nunique"),
        models=("seed", "count"),
        diverged=("diverged", "sum"),
        never_annealed=("never_annealed", "sum"),
        force_evaluations=("force_evaluations", "mean"),
        force_unit=("force_unit", "first"),
        rollout_error_mean=("finite_error", "mean"),
        rollout_error_std=("finite_error", "std"),
        force_wall_seconds=("force_wall_seconds", "mean"),
        train_wall_seconds=("train_wall_seconds", "mean"),
    ).reset_index()
    summary["rollout_error_std"] = summary["rollout_error_std"].fillna(0.0)
    return summary.astype({"force_evaluations": int, "diverged": int, "never_annealed": int, "models": int})


def equal_budget(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (system, model, partial-force row: L_x,p or L_z,p): it beside L_z on the same force
    budget, full forces on `planning.fraction_count(p, configurations)` configurations (columns of
    L_z end in `_z`), and `equal_budget_winner`: the loss of lower mean error (a diverged one
    loses), or `neither`."""
    partial = summary[summary["loss"].isin(PARTIAL_FORCE_LOSSES)]
    partial = partial.assign(budget=[fraction_count(p, count) for p, count in zip(partial["p"], partial["configurations"])])
    full = summary[(summary["loss"] == BUDGET_LOSS) & (summary["p"] == 1)]
    pairs = partial.merge(full[["system", "model", "configurations", "force_evaluations", "rollout_error_mean"]],
                          left_on=["system", "model", "budget"], right_on=["system", "model", "configurations"],
                          suffixes=("", "_z"))
    partial_error, full_error = (pairs[column].fillna(np.inf) for column in ("rollout_error_mean", "rollout_error_mean_z"))
    winner = np.where(partial_error < full_error, pairs["loss"], np.where(full_error < partial_error, BUDGET_LOSS, "neither"))
    return pairs.assign(equal_budget_winner=winner)


def budget_sentences(summary: pd.DataFrame) -> str:
    """One Markdown line per `equal_budget` pair: which loss wins on the same force evaluations."""
    lines = [
        f"- {row.system}, {row.model}: at {row.force_evaluations:.3g} {row.force_unit}s, {row.equal_budget_winner} wins "
        f"({row.loss} at p = {row.p:g} on {row.configurations} configurations: {row.rollout_error_mean:.2e}; "
        f"L_z on {row.configurations_z} configurations, {row.force_evaluations_z:.3g} {row.force_unit}s: "
        f"{row.rollout_error_mean_z:.2e})"
        for row in equal_budget(summary).itertuples()
    ]
    if not lines:
        return ""
    return "\nEqual force budget (mean rollout error; L_z with full forces on round(p × configurations)):\n\n" + "\n".join(lines) + "\n"


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary (models and baselines, `with_baselines`) as a GitHub-flavoured Markdown table."""
    header = ("| system | model | loss | p | configurations | force evaluations "
              "| rollout error (mean ± std over models) | seeds | models | diverged | skill |")
    lines = [header, "|" + "---|" * 11]
    for row in summary.itertuples():
        if row.model in BASELINES:
            lines.append(f"| {row.system} | {row.model} | | | | | {row.rollout_error_mean:.2e} | | | | baseline |")
            continue
        error = (f"{row.rollout_error_mean:.2e} ± {row.rollout_error_std:.1e}" if row.diverged < row.models
                 else f"every model diverged (error > {DIVERGED_ERROR:g})")
        lines.append(
            f"| {row.system} | {row.model} | {row.loss} | {row.p:g} | {row.configurations} | "
            f"{row.force_evaluations:.3g} {row.force_unit}s | {error} "
            f"| {row.seeds} | {row.models} | {row.diverged} | {'no skill' if row.no_skill else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_error_against_cost(metrics: pd.DataFrame, baselines: pd.DataFrame, path: Path,
                            tolerance: float = ERROR_TOLERANCE) -> None:
    """Rollout error against force evaluations, one panel per system.

    One colour per (model, loss, p, training-set size n): small markers are trained models, large
    ones the mean ± std over those that did not diverge; a diverged rollout is drawn as a triangle
    on the top edge. The dashed line is e_tol, the black
    lines the system's baselines.
    """
    systems = sorted(metrics["system"].unique())
    figure, axes = plt.subplots(1, len(systems), figsize=(6 * len(systems), 4.5), squeeze=False)
    for axis, system in zip(axes[0], systems):
        rows = metrics[metrics["system"] == system]
        kept = rows["rollout_error"][rows["rollout_error"] <= DIVERGED_ERROR]
        top = 3 * kept.max() if len(kept) else DIVERGED_ERROR
        for number, ((model, loss, p, count), group) in enumerate(rows.groupby(["model", "loss", "p", "configurations"])):
            colour, marker = f"C{number}", latent_model(model).marker
            errors = group["rollout_error"]
            good = errors <= DIVERGED_ERROR
            axis.scatter(group["force_evaluations"][good], errors[good], marker=marker, color=colour, s=14, alpha=0.5)
            axis.scatter(group["force_evaluations"][~good], np.full((~good).sum(), top), marker="^", color=colour, s=40)
            if good.any():
                axis.errorbar(group["force_evaluations"].mean(), errors[good].mean(), yerr=errors[good].std(ddof=0),
                              marker=marker, color=colour, ms=8, capsize=3, label=f"{model} {loss} p={p:g} n={count}")
        draw_baselines(axis, baselines[baselines["system"] == system])
        finish_error_axis(axis, tolerance, f"{system} (▲ = diverged rollout)", rows["force_unit"].iloc[0])
    save_figure(figure, path)


def plot_loss_curves(model_dirs: list[str], path: Path) -> None:
    """Loss per epoch of every trained model in a grid: one row per system, one column per loss;
    solid lines the training loss, dashed the validation loss, one colour per latent model."""
    runs = [(json.loads((Path(d) / "hparams.json").read_text()), read_history(Path(d) / "history.csv")) for d in model_dirs]
    systems, losses = (sorted({hp[key] for hp, _ in runs}) for key in ("system", "loss"))
    width, height = PANEL_INCHES
    figure, axes = plt.subplots(len(systems), len(losses), figsize=(width * len(losses), height * len(systems)),
                                squeeze=False)
    for (row, system), (column, loss) in ((r, c) for r in enumerate(systems) for c in enumerate(losses)):
        axis = axes[row][column]
        chosen = [(hp, history) for hp, history in runs if (hp["system"], hp["loss"]) == (system, loss)]
        if not chosen:
            axis.set_axis_off()
            axis.text(0.5, 0.5, f"{system}: no {loss} runs", ha="center", va="center", transform=axis.transAxes)
            continue
        for hp, history in chosen:
            colour = latent_model(hp["model"]).colour
            axis.plot(history["epoch"], history["loss"], lw=1, color=colour, alpha=0.7)
            axis.plot(history["epoch"], history["validation_loss"], lw=1, ls="--", color=colour, alpha=0.7)
        for model in sorted({hp["model"] for hp, _ in chosen}):
            axis.plot([], [], color=latent_model(model).colour, label=model)
        axis.plot([], [], color="grey", label="training")
        axis.plot([], [], color="grey", ls="--", label="validation")
        axis.set(yscale="log", title=f"{system}: {loss}", xlabel="epoch", ylabel="loss")
        axis.yaxis.set_minor_formatter(SparseMinorLabels())
        axis.legend(fontsize=7)
    save_figure(figure, path)


def report(metrics_paths: list[str], model_dirs: list[str], baselines_paths: list[str], out: str, config: dict) -> None:
    """Write summary.csv, summary.md and summary.html, the figures, and config.yaml and
    config.html (the validated configuration, defaults filled in, that produced them) into the
    folder `out`; the baselines of every system (`baselines_paths`, baselines.json) stand beside
    the models in the table and the figure; the loss curves come from the trained models'
    folders `model_dirs`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configuration = yaml.safe_dump(config, sort_keys=False)
    (out / "config.yaml").write_text(configuration)
    write_page(f"<pre>{html.escape(configuration)}</pre>", "Validated configuration", out / "config.html")
    metrics = load_metrics(metrics_paths)
    baselines = load_baselines(baselines_paths)
    summary = with_baselines(summarise(metrics), baselines, ["system"])
    summary.to_csv(out / "summary.csv", index=False)
    write_table(summary, "Summary: rollout error and force cost per trained configuration, then the baselines", out / "summary.html")
    (out / "summary.md").write_text(markdown_table(summary) + closure_note(config) + budget_sentences(summary)
                                    + annealing_note(summary, ["system", "model", "loss", "p", "configurations"]))
    plot_error_against_cost(metrics, baselines, out / "error_vs_force_evaluations.png")
    plot_loss_curves(model_dirs, out / "loss_curves.png")
    log.info("report of %d models written to %s", len(metrics), out)
