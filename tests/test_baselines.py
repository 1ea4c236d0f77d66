"""Baselines (persistence, mean course) on hand-made observables, the metric they share with
evaluate, the `macroclosure baselines` stage on a tiny store, and their place in the summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from macroclosure.baselines import baseline_errors, mean_course, relative_components
from macroclosure.cli import main
from macroclosure.metric import relative_rollout_error
from macroclosure.report import annealing_note, load_metrics, markdown_table, summarise, with_baselines

T = np.arange(3.0)  # t = 0, 1, 2


def course(*columns) -> np.ndarray:
    """Observables [1, time, m] with the given time series as components."""
    return np.stack(columns, axis=-1)[None]


def test_metric_is_the_one_evaluate_scores_with():
    from macroclosure import evaluate

    assert evaluate.relative_rollout_error is relative_rollout_error
    truth = np.array([[[3.0, 4.0], [6.0, 8.0]]])  # norms 5 and 10
    predicted = truth + np.array([[3.0, 4.0], [0.0, 0.0]])  # off by 5 at t = 0
    assert relative_rollout_error(predicted, truth) == pytest.approx([5 / 15])
    assert relative_rollout_error(np.full_like(truth, np.nan), truth) == [np.inf]


def test_persistence_of_a_constant_trajectory_is_exact_and_of_a_linear_one_is_hand_computed():
    train = np.concatenate([course(1 + T), course(2 + 0 * T)])
    test = np.concatenate([course(4 + 0 * T), course(2 * (1 + T))])
    # 2(1 + t) held at 2: sum 2t / sum 2(1 + t) = 6 / 12
    assert baseline_errors(train, test)["persistence"] == pytest.approx([0.0, 0.5])


def test_mean_course_is_exact_for_proportional_courses():
    train = np.concatenate([course(1 + T), course(3 * (1 + T))])  # z(t) / z(0) = 1 + t for both
    test = course(0.5 * (1 + T))
    assert baseline_errors(train, test)["mean course"] == pytest.approx([0.0])


def test_mean_course_is_the_mean_relative_course_times_the_start():
    train = np.concatenate([course(1 + T), course(2 + 0 * T)])  # m(t) = (1 + t + 1) / 2 = 1 + t / 2
    test = course(4 + 0 * T)
    np.testing.assert_allclose(mean_course(train, test[:, 0]), course(4 * (1 + T / 2)))
    # predicted 4 (1 + t / 2) against 4: sum 2t / sum 4 = 6 / 12
    assert baseline_errors(train, test)["mean course"] == pytest.approx([0.5])


def test_a_component_starting_at_zero_follows_the_mean_absolute_course():
    train = np.concatenate([course(T, 1 + T), course(2 * T, 2 * (1 + T))])  # first starts at 0: shift 1.5 t
    np.testing.assert_array_equal(relative_components(train), [False, True])
    start = np.array([[1.0, 5.0]])
    np.testing.assert_allclose(mean_course(train, start), course(1 + 1.5 * T, 5 * (1 + T)))


def test_different_time_grids_are_refused():
    with pytest.raises(ValueError, match="same settings"):
        baseline_errors(course(T), course(np.arange(4.0)))


def test_stage_writes_the_errors_of_each_baseline(train_store, tmp_path):
    """On a tiny store used as both splits, persistence scores what the mean-u, mean-v courses
    computed by hand from the stored states give."""
    from macroclosure.store import open_store

    out = tmp_path / "baselines.json"
    assert main(["baselines", "--train", str(train_store), "--test", str(train_store), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    states = open_store(train_store, "trajectories")["state"].values
    cells = states.shape[-1] // 2
    z = np.stack([states[..., :cells].mean(-1), states[..., cells:].mean(-1)], axis=-1)
    hand = np.linalg.norm(z - z[:, :1], axis=-1).sum(-1) / np.linalg.norm(z, axis=-1).sum(-1)
    assert record["baselines"]["persistence"]["rollout_error_per_trajectory"] == pytest.approx(hand)
    assert record["baselines"]["mean course"]["rollout_error"] < record["baselines"]["persistence"]["rollout_error"]
    assert (record["system"], record["units"], record["test_trajectories"], record["absolute_course"]) == \
        ("predator_prey", 2 * cells, len(z), [])


def test_summary_has_the_baseline_rows_and_marks_models_without_skill():
    summary = pd.DataFrame({
        "system": ["pp", "pp"], "model": ["mlp", "onsager"], "loss": ["L_z", "L_z"], "p": [1.0, 1.0],
        "seeds": [1, 1], "models": [1, 1], "diverged": [0, 0], "configurations": [10, 10],
        "force_evaluations": [100, 100], "force_unit": ["coordinate"] * 2, "rollout_error_mean": [1e-3, 2e-2],
        "rollout_error_std": [0.0, 0.0], "force_wall_seconds": [1.0, 1.0], "train_wall_seconds": [1.0, 1.0],
    })
    baselines = pd.DataFrame({"system": ["pp", "pp"], "units": [20, 20], "force_unit": ["coordinate"] * 2,
                              "model": ["persistence", "mean course"], "rollout_error": [5e-2, 1e-2]})
    table = with_baselines(summary, baselines, ["system"])
    assert list(table["model"]) == ["mlp", "onsager", "persistence", "mean course"]
    assert list(table["no_skill"][:2]) == [False, True] and table["no_skill"][2:].isna().all()
    assert list(table["rollout_error_mean"][2:]) == [5e-2, 1e-2]
    text = markdown_table(table)
    assert "| pp | mean course | | | | | 1.00e-02 | | | | baseline |" in text
    assert "| 1 | 1 | 0 | no skill |" in text and text.count("no skill") == 1


def test_a_row_whose_every_model_diverged_says_so_instead_of_nan():
    summary = pd.DataFrame({
        "system": ["lj"] * 2, "model": ["mlp"] * 2, "loss": ["L_z", "L_xp"], "p": [1.0, 0.0625],
        "seeds": [3, 3], "models": [3, 3], "diverged": [3, 1], "configurations": [400, 400],
        "force_evaluations": [320000, 20000], "force_unit": ["atom"] * 2, "rollout_error_mean": [np.nan, 0.15],
        "rollout_error_std": [0.0, 0.01], "force_wall_seconds": [1.0, 1.0], "train_wall_seconds": [1.0, 1.0],
    })
    baselines = pd.DataFrame({"system": ["lj"], "units": [800], "force_unit": ["atom"], "model": ["mean course"],
                              "rollout_error": [2e-2]})
    text = markdown_table(with_baselines(summary, baselines, ["system"]))
    assert "| 3.2e+05 atoms | every model diverged (error > 1) | 3 | 3 | 3 | no skill |" in text
    assert "| 2e+04 atoms | 1.50e-01 ± 1.0e-02 | 3 | 3 | 1 | no skill |" in text and "nan" not in text


def test_models_whose_learning_rate_never_dropped_are_named_below_the_summary(tmp_path):
    record = {"system": "lj", "model": "onsager", "loss": "L_xp", "p": 0.0625, "seed": 0, "configurations": 400,
              "force_evaluations": 20000, "force_unit": "atom", "force_wall_seconds": 1.0, "train_wall_seconds": 1.0,
              "rollout_error": 2e-3}
    paths = []
    for seed, dropped in enumerate(([True, False], None)):  # None: metrics of a model trained before it was recorded
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(record | {"seed": seed, "member_rollout_errors": [1e-3, 3e-3]}
                                   | ({} if dropped is None else {"member_lr_dropped": dropped})))
        paths.append(str(path))
    metrics = load_metrics(paths)
    assert metrics["never_annealed"].tolist() == [False, True, False, False]
    summary = summarise(metrics)
    assert summary["never_annealed"].tolist() == [1] and summary["models"].tolist() == [4]
    note = annealing_note(summary, ["system", "model", "loss", "p", "configurations"])
    assert "- system lj, model onsager, loss L_xp, p 0.0625, configurations 400: 1 of 4 models" in note
    assert "train.plateau_patience" in note
    assert annealing_note(summarise(load_metrics(paths[1:])), ["system"]) == ""
