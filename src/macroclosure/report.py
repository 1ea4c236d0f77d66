"""Aggregation of every evaluated model into the summary table and the report figures."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from macroclosure.history import read_history  # noqa: E402
from macroclosure.runtime import log  # noqa: E402

GROUP = ["system", "model", "loss", "p"]
ERROR_TOLERANCE = 3e-3  # METHOD.md's reference tolerance e_tol
MODEL_STYLE = {"mlp": ("C0", "o"), "onsager": ("C1", "s"), "gfinn": ("C2", "D")}  # colour, marker
DIVERGED_ERROR = 1.0  # a relative error above 1 is worse than predicting zero: the rollout left


def finish_error_axis(axis, tolerance: float, title: str, force_unit: str) -> None:
    """Log-log axes of rollout error against force evaluations, with e_tol drawn."""
    axis.axhline(tolerance, color="grey", ls="--", lw=1, label=f"e_tol = {tolerance:g}")
    axis.set(xscale="log", yscale="log", title=title,
             xlabel=f"force evaluations ({force_unit}s)", ylabel="relative rollout error")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)


def save_figure(figure, path: Path) -> None:
    """Write a figure as PNG and free it (figures pile up in long reports otherwise)."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load_metrics(paths: list[str]) -> pd.DataFrame:
    """One row per trained model: (system, model, loss, p, seed, ensemble member)."""
    rows = []
    for path in paths:
        metrics = json.loads(Path(path).read_text())
        for member, error in enumerate(metrics.pop("member_rollout_errors")):
            rows.append(metrics | {"member": member, "rollout_error": error})
    return pd.DataFrame(rows)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rollout error over trained models (seeds x ensemble members), beside the force cost,
    per (system, model, loss, p).

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
        configurations=("configurations", "mean"),
        force_evaluations=("force_evaluations", "mean"),
        force_unit=("force_unit", "first"),
        rollout_error_mean=("finite_error", "mean"),
        rollout_error_std=("finite_error", "std"),
        force_wall_seconds=("force_wall_seconds", "mean"),
        train_wall_seconds=("train_wall_seconds", "mean"),
    ).reset_index()
    summary["rollout_error_std"] = summary["rollout_error_std"].fillna(0.0)
    return summary.astype({"configurations": int, "force_evaluations": int, "diverged": int, "models": int})


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    header = ("| system | model | loss | p | configurations | force evaluations "
              "| rollout error (mean ± std over models) | seeds | models | diverged |")
    lines = [header, "|" + "---|" * 10]
    for row in summary.itertuples():
        lines.append(
            f"| {row.system} | {row.model} | {row.loss} | {row.p:g} | {row.configurations} | "
            f"{row.force_evaluations:.3g} {row.force_unit}s | {row.rollout_error_mean:.2e} ± {row.rollout_error_std:.1e} "
            f"| {row.seeds} | {row.models} | {row.diverged} |"
        )
    return "\n".join(lines) + "\n"


def plot_error_against_cost(metrics: pd.DataFrame, path: Path, tolerance: float = ERROR_TOLERANCE) -> None:
    """Rollout error against force evaluations, one panel per system.

    Small markers are trained models, large ones the mean ± std over those that did not diverge; a
    diverged rollout is drawn as a triangle on the top edge. The dashed line is e_tol.
    """
    systems = sorted(metrics["system"].unique())
    figure, axes = plt.subplots(1, len(systems), figsize=(6 * len(systems), 4.5), squeeze=False)
    for axis, system in zip(axes[0], systems):
        rows = metrics[metrics["system"] == system]
        kept = rows["rollout_error"][rows["rollout_error"] <= DIVERGED_ERROR]
        top = 3 * kept.max() if len(kept) else DIVERGED_ERROR
        for number, ((model, loss, p), group) in enumerate(rows.groupby(["model", "loss", "p"])):
            colour, marker = f"C{number}", MODEL_STYLE[model][1]
            errors = group["rollout_error"]
            good = errors <= DIVERGED_ERROR
            axis.scatter(group["force_evaluations"][good], errors[good], marker=marker, color=colour, s=14, alpha=0.5)
            axis.scatter(group["force_evaluations"][~good], np.full((~good).sum(), top), marker="^", color=colour, s=40)
            if good.any():
                axis.errorbar(group["force_evaluations"].mean(), errors[good].mean(), yerr=errors[good].std(ddof=0),
                              marker=marker, color=colour, ms=8, capsize=3, label=f"{model} {loss} p={p:g}")
        finish_error_axis(axis, tolerance, f"{system} (▲ = diverged rollout)", rows["force_unit"].iloc[0])
    save_figure(figure, path)


def plot_loss_curves(histories: list[str], path: Path) -> None:
    """Training loss against epoch for every trained model, one panel per (system, loss)."""
    runs = [(json.loads((Path(h).parent / "hparams.json").read_text()), read_history(h)) for h in histories]
    panels = sorted({(hp["system"], hp["loss"]) for hp, _ in runs})
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (system, loss) in zip(axes[0], panels):
        for hp, history in runs:
            if (hp["system"], hp["loss"]) == (system, loss):
                axis.plot(history["epoch"], history["loss"], lw=1, color=MODEL_STYLE[hp["model"]][0], alpha=0.7)
        for model in sorted({hp["model"] for hp, _ in runs}):
            axis.plot([], [], color=MODEL_STYLE[model][0], label=model)
        axis.set(yscale="log", title=f"{system} {loss}", xlabel="epoch", ylabel="training loss")
        axis.legend(fontsize=8)
    save_figure(figure, path)


def report(metrics_paths: list[str], history_paths: list[str], out: str, config: dict) -> None:
    """Write summary.csv, summary.md, the figures and config.yaml (the validated configuration,
    defaults filled in, that produced them) into the folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = load_metrics(metrics_paths)
    summary = summarise(metrics)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown_table(summary))
    plot_error_against_cost(metrics, out / "error_vs_force_evaluations.png")
    plot_loss_curves(history_paths, out / "loss_curves.png")
    log.info("report of %d models written to %s", len(metrics), out)
