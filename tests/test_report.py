"""Report figures a reader can read: the loss-curve grid and log axes whose labels do not collide."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
from matplotlib.image import imread

from macroclosure.history import write_history
from macroclosure.report import PANEL_INCHES, SparseMinorLabels, plot_loss_curves


def test_a_short_log_axis_labels_only_2_and_5_of_each_decade():
    figure, axis = plt.subplots()
    low, high = 1.7e4, 3.5e5  # the Lennard-Jones force evaluations of the default run
    axis.set(xscale="log", xlim=(low, high))
    formatter = SparseMinorLabels()
    axis.xaxis.set_minor_formatter(formatter)
    shown = [formatter(value) for value in axis.xaxis.get_minorticklocs() if low <= value <= high]
    axis.set(xlim=(1e2, 1e6))  # four decades: the decades are labels enough
    wide = [formatter(value) for value in axis.xaxis.get_minorticklocs()]
    plt.close(figure)
    assert [label for label in shown if label] == ["$2\\times10^{4}$", "$5\\times10^{4}$", "$2\\times10^{5}$"]
    assert not any(wide)


def trained_model(folder, system: str, loss: str, model: str) -> str:
    """A dynamics folder as train writes it, with a three-epoch history."""
    folder.mkdir(parents=True)
    (folder / "hparams.json").write_text(json.dumps({"system": system, "loss": loss, "model": model}))
    write_history([{"epoch": e, "loss": 1.0 / e, "validation_loss": 2.0 / e, "lr": 1e-3} for e in (1, 2, 3)],
                  folder / "history.csv")
    return str(folder)


def test_loss_curves_are_a_grid_of_systems_by_losses(tmp_path):
    runs = [("allen_cahn", "L_z"), ("allen_cahn", "L_xp"), ("predator_prey", "L_z"), ("predator_prey", "L_x"),
            ("predator_prey", "L_xp")]
    folders = [trained_model(tmp_path / f"{system}_{loss}_{model}", system, loss, model)
               for system, loss in runs for model in ("mlp", "onsager")]
    plot_loss_curves(folders, tmp_path / "loss_curves.png")
    height, width, _ = imread(tmp_path / "loss_curves.png").shape
    assert abs(width / height - (3 * PANEL_INCHES[0]) / (2 * PANEL_INCHES[1])) < 0.1  # 2 systems x 3 losses
