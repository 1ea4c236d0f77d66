"""Aggregation of every evaluated model into the summary table and the report figures."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from macroclosure.history import read_history  # noqa: E402
from macroclosure.runtime import log  # noqa: E402

GROUP = ["system", "model", "loss", "p"]


def load_metrics(paths: list[str]) -> pd.DataFrame:
    """One row per trained model (system, model, loss, p, seed)."""
    return pd.DataFrame([json.loads(Path(path).read_text()) for path in paths])


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the rollout error, beside the force cost, per (system, model, loss, p)."""
    grouped = metrics.groupby(GROUP, sort=True)
    summary = grouped.agg(
        seeds=("seed", "count"),
        configurations=("configurations", "mean"),
        force_evaluations=("force_evaluations", "mean"),
        force_unit=("force_unit", "first"),
        rollout_error_mean=("rollout_error", "mean"),
        rollout_error_std=("rollout_error", "std"),
        force_wall_seconds=("force_wall_seconds", "mean"),
        train_wall_seconds=("train_wall_seconds", "mean"),
    ).reset_index()
    summary["rollout_error_std"] = summary["rollout_error_std"].fillna(0.0)
    return summary.astype({"configurations": int, "force_evaluations": int})


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    header = "| system | model | loss | p | configurations | force evaluations | rollout error (mean ± std over seeds) | seeds |"
    lines = [header, "|" + "---|" * 8]
    for row in summary.itertuples():
        lines.append(
            f"| {row.system} | {row.model} | {row.loss} | {row.p:g} | {row.configurations} | "
            f"{row.force_evaluations:.3g} {row.force_unit}s | {row.rollout_error_mean:.3e} ± {row.rollout_error_std:.1e} | {row.seeds} |"
        )
    return "\n".join(lines) + "\n"


def plot_error_against_cost(metrics: pd.DataFrame, path: Path) -> None:
    """Rollout error against force evaluations: one panel per system, one marker per seed."""
    systems = sorted(metrics["system"].unique())
    figure, axes = plt.subplots(1, len(systems), figsize=(5.5 * len(systems), 4.2), squeeze=False)
    for axis, system in zip(axes[0], systems):
        rows = metrics[metrics["system"] == system]
        for number, ((model, loss, p), group) in enumerate(rows.groupby(["model", "loss", "p"])):
            marker = "o" if model == "mlp" else "s"
            axis.scatter(group["force_evaluations"], group["rollout_error"], marker=marker,
                         color=f"C{number}", label=f"{model} {loss} p={p:g}", alpha=0.8)
        axis.set(xscale="log", yscale="log", title=system,
                 xlabel=f"force evaluations ({rows['force_unit'].iloc[0]}s)", ylabel="relative rollout error")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_loss_curves(histories: list[str], path: Path) -> None:
    """Training loss against epoch for every trained model, one panel per (system, loss)."""
    runs = [(json.loads((Path(h).parent / "hparams.json").read_text()), read_history(h)) for h in histories]
    panels = sorted({(hp["system"], hp["loss"]) for hp, _ in runs})
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (system, loss) in zip(axes[0], panels):
        for hp, history in runs:
            if (hp["system"], hp["loss"]) == (system, loss):
                axis.plot(history["epoch"], history["loss"], lw=1,
                          color="C0" if hp["model"] == "mlp" else "C1", alpha=0.7)
        axis.plot([], [], color="C0", label="mlp")
        axis.plot([], [], color="C1", label="onsager")
        axis.set(yscale="log", title=f"{system} {loss}", xlabel="epoch", ylabel="training loss")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(metrics_paths: list[str], history_paths: list[str], out: str) -> None:
    """Write summary.csv, summary.md and the figures into the folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = load_metrics(metrics_paths)
    summary = summarise(metrics)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown_table(summary))
    plot_error_against_cost(metrics, out / "error_vs_force_evaluations.png")
    plot_loss_curves(history_paths, out / "loss_curves.png")
    log.info("report of %d models written to %s", len(metrics), out)
