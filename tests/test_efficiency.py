"""The efficiency target: planning of the grid, config checks, aggregation on hand-made metrics,
a dry run that plans one job per size / loss / subset / training-set size / seed, and a tiny
end-to-end `snakemake efficiency`."""

from __future__ import annotations

import copy
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import TINY, planned_jobs, snakemake, write_config

from macroclosure.config import ConfigError, validate
from macroclosure.efficiency import (efficiency, load_runs, load_size_baselines, markdown, ratios, size_tolerances, summarise,
                                     to_tolerance)
from macroclosure.planning import Run, forces_fraction, plan, run_of, stage_spec, subsets

GRID = {"configurations": [100, 400], "fractions": [0.2], "seeds": [0, 1]}
LJ_TOLERANCES = {("lennard_jones", 800): 3e-3, ("lennard_jones", 2700): 3e-3}
LJ_GRID = {"sizes": [256, 800], "configurations": [20, 40], "losses": ["L_z", "L_xp"], "fractions": [], "sampled_units": [50],
           "seeds": [0], "simulate": {"trajectories": {"train": 2, "test": 1}, "steps": 100, "save_every": 5}}


def config_with(**grids) -> dict:
    """A validated config whose efficiency section measures `grids` (system -> grid)."""
    return validate(copy.deepcopy(TINY) | {"efficiency": {"systems": copy.deepcopy(grids)}})


# ---------------------------------------------------------------------------------------
# Planning and configuration
# ---------------------------------------------------------------------------------------
def test_plan_has_one_run_per_size_loss_subset_training_set_and_seed():
    config = config_with(predator_prey=GRID, lennard_jones=LJ_GRID)
    runs = plan(config)
    assert len(runs) == 3 * 2 * 2 + 2 * 2 * 2 * 1  # PP (L_z, L_x, L_xp) x 2 sets x 2 seeds; LJ 2 sizes x 2 losses x 2 sets
    assert Run("predator_prey", 50, "mlp", "L_xp", "p0.2", 400, 1) in runs
    assert Run("lennard_jones", 800, "mlp", "L_xp", "k50", 20, 0) in runs
    assert len(set(runs)) == len(runs)


def test_run_is_read_back_from_its_path():
    run = Run("lennard_jones", 2700, "onsager", "L_xp", "k50", 400, 3)
    assert run_of(f"results/efficiency/{run.folder}/evaluation/{run.name}/metrics.json") == run
    with pytest.raises(ValueError, match="not the metrics.json of an efficiency run"):
        run_of("results/predator_prey/evaluation/mlp_L_z_p1_seed0/metrics.json")


def test_subsets_are_full_forces_for_lz_and_lx_and_each_fraction_or_count_for_lxp():
    grid = {"losses": ["L_z", "L_x", "L_xp"], "fractions": [0.2, 0.25], "sampled_units": [50]}
    assert subsets(grid) == [("L_z", "p1"), ("L_x", "p1"), ("L_xp", "p0.2"), ("L_xp", "p0.25"), ("L_xp", "k50")]


@pytest.mark.parametrize("atoms", [256, 800, 2700, 6400, 21600, 51200])
def test_a_fixed_count_of_atoms_is_a_fraction_that_gives_the_count_back(atoms):
    p = float(forces_fraction("lennard_jones", {"simulate": {"atoms": 800}}, atoms, "k50"))
    assert round(p * atoms) == 50


def test_schema_fills_defaults_and_tolerance():
    section = config_with(predator_prey={"configurations": [10]})["efficiency"]
    assert section["tolerance"] == 3e-3
    grid = section["systems"]["predator_prey"]
    assert grid["losses"] == ["L_z", "L_x", "L_xp"] and grid["fractions"] == [0.2] and grid["seeds"] == [0, 1, 2]
    assert grid["simulate"]["cells"] == 50 and "sizes" not in grid


@pytest.mark.parametrize("grid, key", [
    (dict(GRID, bogus=1), "efficiency.systems.predator_prey"),
    ({"fractions": [0.2]}, "efficiency.systems.predator_prey"),  # configurations are required
    (dict(GRID, configurations=[100, 20000]), "efficiency.systems.predator_prey.configurations"),
    (dict(GRID, fractions=[]), "efficiency.systems.predator_prey.losses"),
    (dict(GRID, fractions=[0.001]), "efficiency.systems.predator_prey.fractions"),
    (dict(GRID, sampled_units=[500]), "efficiency.systems.predator_prey.sampled_units"),
    (dict(GRID, fractions=[1.0]), r"efficiency.systems.predator_prey.fractions\[0\]"),
])
def test_impossible_predator_prey_grids_name_the_key(grid, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        config_with(predator_prey=grid)


def test_lennard_jones_sizes_must_hold_the_cutoff_sphere():
    with pytest.raises(ConfigError, match=r"config key 'efficiency.systems.lennard_jones.sizes': 64 atoms .* periodic image"):
        config_with(lennard_jones=dict(LJ_GRID, sizes=[64, 800]))


PUBLISHED_LAMBDA = [{"sizes": [800], "closure": {"condition_weight": 1e-3}, "train": {"onsager": {"hidden": 256}}}]


def test_settings_named_for_some_sizes_are_laid_over_the_grid_at_those_sizes_only():
    grid = config_with(lennard_jones=dict(LJ_GRID, at_sizes=PUBLISHED_LAMBDA))["efficiency"]["systems"]["lennard_jones"]
    small, large = (stage_spec("lennard_jones", grid, size) for size in (256, 800))
    assert small["closure"]["condition_weight"] == 1e-6 and large["closure"]["condition_weight"] == 1e-3
    assert small["train"]["onsager"]["hidden"] == 32 and large["train"]["onsager"]["hidden"] == 256
    assert large["train"]["onsager"]["alpha"] == small["train"]["onsager"]["alpha"]  # nested keys not named are kept
    assert {key: value for key, value in large["closure"].items() if key != "condition_weight"} == \
        {key: value for key, value in small["closure"].items() if key != "condition_weight"}


@pytest.mark.parametrize("override, key", [
    ({"sizes": [2700], "closure": {"condition_weight": 1e-3}}, r"at_sizes\[0\].sizes': 2700 is not one of the grid's sizes"),
    ({"sizes": [800], "closure": {"condition_weight": -1.0}}, r"at_sizes\[0\].closure.condition_weight': -1.0 is less"),
    ({"sizes": [800], "train": {"lerning_rate": 1.0}}, r"at_sizes\[0\].train': .*'lerning_rate' was unexpected"),
    ({"sizes": [800], "simulate": {"atoms": 900}}, r"at_sizes\[0\]': .*'simulate' was unexpected"),
])
def test_a_bad_setting_for_some_sizes_names_its_key(override, key):
    with pytest.raises(ConfigError, match=f"config key 'efficiency.systems.lennard_jones.{key}"):
        config_with(lennard_jones=dict(LJ_GRID, at_sizes=[override]))


# ---------------------------------------------------------------------------------------
# Aggregation on hand-made metrics
# ---------------------------------------------------------------------------------------
def write_metrics(root: Path, run: Run, errors: list[float], units: int, wall: float = 1.0, record_units: bool = False) -> str:
    """A metrics.json as `evaluate` writes it, at the path the efficiency rules give the run
    (with `units` as evaluate now records it, or without, as metrics written before)."""
    k = units if run.subset == "p1" else int(run.subset[1:]) if run.subset[0] == "k" else round(float(run.subset[1:]) * units)
    path = root / "efficiency" / run.folder / "evaluation" / run.name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "system": run.system, "model": run.model, "loss": run.loss, "p": k / units, "seed": run.seed,
        "configurations": run.configurations, "force_evaluations": run.configurations * k, "force_unit": "atom",
        "force_wall_seconds": wall * run.configurations * k, "train_wall_seconds": 1.0,
        "rollout_error": float(np.mean(errors)), "member_rollout_errors": errors,
    } | ({"units": units} if record_units else {})))
    return str(path)


def test_the_size_in_units_is_the_recorded_one_where_p_times_units_is_not_whole(tmp_path):
    """41 of 1 024 values (p = 0.04) give evaluations / (configurations p) = 1 025: the recorded
    units keep the partial-force curve at the L_z curve's size, so their ratio can be formed."""
    def as_sampled(path: str) -> str:  # the force store records the fraction asked for, not k / units
        record = json.loads(Path(path).read_text())
        Path(path).write_text(json.dumps(record | {"p": 0.04 if record["p"] < 1 else 1.0}))
        return path

    paths = [as_sampled(write_metrics(tmp_path, Run("allen_cahn", 32, "onsager", loss, subset, 100, 0), [1e-3], 1024, record_units=True))
             for loss, subset in (("L_z", "p1"), ("L_xp", "p0.04"))]
    assert load_runs(paths)["units"].tolist() == [1024, 1024]
    old = as_sampled(write_metrics(tmp_path, Run("allen_cahn", 32, "onsager", "L_xp", "p0.04", 100, 1), [1e-3], 1024))
    assert load_runs([old])["units"].tolist() == [1025]  # the fallback's known limit


# (size, loss, subset) -> error per training-set size 100, 200, 400 (the same for both seeds unless a pair)
CURVES = {
    (800, "L_z", "p1"): [1e-2, 2e-3, 1e-3],
    (800, "L_xp", "k50"): [2e-3, 1e-3, 5e-4],
    (2700, "L_z", "p1"): [1e-2, 8e-3, 5e-3],  # never reaches e_tol
    (2700, "L_xp", "k50"): [(2e-3, 4e-3), 2e-3, 1e-3],  # seeds 2e-3 and 4e-3 at 100: mean 3e-3 reaches
}


@pytest.fixture
def metrics(tmp_path) -> list[str]:
    paths = []
    for (size, loss, subset), errors in CURVES.items():
        for configurations, error in zip([100, 200, 400], errors):
            for seed in (0, 1):
                value = error[seed] if isinstance(error, tuple) else error
                paths.append(write_metrics(tmp_path, Run("lennard_jones", size, "mlp", loss, subset, configurations, seed),
                                           [value], size))
    return paths


def test_points_are_mean_and_std_over_seeds(metrics):
    points = summarise(load_runs(metrics)).set_index(["size", "loss", "configurations"])
    point = points.loc[(2700, "L_xp", 100)]
    assert point["rollout_error_mean"] == pytest.approx(3e-3)
    assert point["rollout_error_std"] == pytest.approx(1e-3)
    assert (point["seeds"], point["models"], point["units"], point["force_evaluations"]) == (2, 2, 2700, 100 * 50)
    assert points.loc[(800, "L_z", 200), "force_evaluations"] == 200 * 800


def test_smallest_training_set_below_tolerance_and_the_ratio(metrics):
    reached = to_tolerance(summarise(load_runs(metrics)), LJ_TOLERANCES).set_index(["size", "loss"])
    assert reached.loc[(800, "L_z"), "configurations"] == 200
    assert reached.loc[(800, "L_z"), "force_evaluations"] == 200 * 800
    assert reached.loc[(800, "L_xp"), "force_evaluations"] == 100 * 50
    assert reached.loc[(800, "L_xp"), "force_wall_seconds"] == pytest.approx(100 * 50)
    assert reached.loc[(2700, "L_xp"), "configurations"] == 100  # mean of 2e-3 and 4e-3 is e_tol itself
    ratio = ratios(reached.reset_index()).set_index("size")
    assert ratio.loc[800, "bound"] == "exact"
    assert ratio.loc[800, "force_evaluation_ratio"] == pytest.approx(200 * 800 / (100 * 50))
    assert ratio.loc[800, "force_wall_ratio"] == pytest.approx(200 * 800 / (100 * 50))


def test_a_tolerance_never_reached_is_reported_as_a_bound(metrics):
    reached = to_tolerance(summarise(load_runs(metrics)), LJ_TOLERANCES)
    baseline = reached.set_index(["size", "loss"]).loc[(2700, "L_z")]
    assert not baseline["reached"] and math.isnan(baseline["force_evaluations"])
    assert baseline["largest_force_evaluations"] == 400 * 2700
    ratio = ratios(reached).set_index("size").loc[2700]
    assert ratio["bound"] == "at least"
    assert ratio["force_evaluation_ratio"] == pytest.approx(400 * 2700 / (100 * 50))
    assert math.isnan(ratio["force_wall_ratio"])
    table = markdown(reached, ratios(reached))
    assert "| lennard_jones | 2700 | 2700 | L_z | p1 | 0.003 | | > 1.1e+06 atoms |" in table
    assert "| lennard_jones | 800 | 800 | L_z | p1 | 0.003 | 200 | 1.6e+05 atoms |" in table
    assert "≥ 2.2e+02×" in table and "| 1.2e+06 |" in table  # the published 800-atom L_z figure beside ours


def test_a_tolerance_relative_to_the_mean_course_follows_each_size(metrics, tmp_path):
    baselines = load_size_baselines([write_baselines(tmp_path, 800, 0.4, 2e-2), write_baselines(tmp_path, 2700, 0.4, 5e-3)])
    settings = {"tolerance": 3e-3, "systems": {"lennard_jones": {"sizes": [800, 2700], "tolerance_mean_course": 0.5}}}
    tolerances = size_tolerances(settings, baselines)
    assert tolerances == {("lennard_jones", 800): pytest.approx(1e-2), ("lennard_jones", 2700): pytest.approx(2.5e-3)}
    assert size_tolerances({"tolerance": 3e-3, "systems": {"lennard_jones": {"sizes": [800]}}}, baselines) == {
        ("lennard_jones", 800): 3e-3}
    reached = to_tolerance(summarise(load_runs(metrics)), tolerances).set_index(["size", "loss"])
    assert reached.loc[(800, "L_z"), "configurations"] == 100  # 1e-2 is at most e_tol = 1e-2
    assert reached.loc[(800, "L_z"), "tolerance"] == pytest.approx(1e-2)
    assert reached.loc[(2700, "L_xp"), "configurations"] == 200  # 3e-3 > 2.5e-3 >= 2e-3


def test_a_partial_curve_that_never_reaches_the_tolerance_gives_an_upper_bound(tmp_path):
    """Where only L_z reaches e_tol, its cost over the partial curve's largest training set is
    the most the ratio can be; where neither does, the ratio is unknown."""
    errors = {("L_z", "p1"): [1e-2, 2e-3], ("L_xp", "p0.2"): [8e-3, 4e-3]}  # at 100 and 400 configurations
    paths = [write_metrics(tmp_path, Run("predator_prey", 50, "mlp", loss, subset, configurations, 0), [error], 100)
             for (loss, subset), curve in errors.items() for configurations, error in zip([100, 400], curve)]
    points = summarise(load_runs(paths))
    reached = to_tolerance(points, {("predator_prey", 50): 3e-3})
    ratio = ratios(reached).iloc[0]
    assert ratio["bound"] == "at most"
    assert ratio["force_evaluation_ratio"] == pytest.approx(400 * 100 / (400 * 20))  # L_z's 400 x 100 over 400 x 20
    assert "≤ 5×" in markdown(reached, ratios(reached))
    assert ratios(to_tolerance(points, {("predator_prey", 50): 1e-3})).iloc[0]["bound"] == "unknown"


def test_a_diverged_seed_means_the_training_set_has_not_reached_the_tolerance(tmp_path):
    paths = [write_metrics(tmp_path, Run("predator_prey", 50, "mlp", "L_z", "p1", 100, seed), [error], 100)
             for seed, error in enumerate([1e-4, float("inf")])]
    point = summarise(load_runs(paths)).iloc[0]
    assert point["diverged"] == 1 and point["rollout_error_mean"] == np.inf
    assert not to_tolerance(summarise(load_runs(paths)), {("predator_prey", 50): 3e-3}).iloc[0]["reached"]


def write_baselines(root: Path, size: int, persistence: float, mean_course: float) -> str:
    """A baselines.json as `macroclosure baselines` writes it, at the path the efficiency rules give a size."""
    path = root / "efficiency" / "lennard_jones" / f"size{size}" / "baselines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"system": "lennard_jones", "units": size, "force_unit": "atom", "baselines": {
        "persistence": {"rollout_error": persistence}, "mean course": {"rollout_error": mean_course}}}))
    return str(path)


def test_efficiency_writes_tables_and_figures(metrics, tmp_path):
    settings = {"tolerance": 3e-3, "systems": {"lennard_jones": {"sizes": [800, 2700]}}}
    baselines = [write_baselines(tmp_path, 800, 0.4, 1.5e-3), write_baselines(tmp_path, 2700, 0.4, 2e-2)]
    efficiency(metrics, baselines, str(tmp_path / "out"), settings)
    for name in ("points.csv", "to_tolerance.csv", "ratios.csv", "to_tolerance.md"):
        assert (tmp_path / "out" / name).stat().st_size > 100, name
    for name in ("points", "to_tolerance", "ratios"):  # what the HTML report shows inline
        assert pd.read_html(tmp_path / "out" / f"{name}.html")[0].shape == pd.read_csv(tmp_path / "out" / f"{name}.csv").shape
    for name in ("data_efficiency_lennard_jones.png", "scaling_lennard_jones.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000, name
    points = pd.read_csv(tmp_path / "out/points.csv")
    assert len(points) == 4 * 3 + 2 * 2  # the curves' points and two baselines per size
    below = points.set_index(["size", "loss", "configurations"])["no_skill"].sort_index()
    assert list(below.loc[(800, "L_z")]) == [True, True, False]  # 1e-2, 2e-3, 1e-3 against 1.5e-3
    assert not below.loc[(2700, "L_z")].any()  # every point below 2e-2
    baseline = points[points["loss"] == "mean course"].set_index("size")
    assert baseline.loc[2700, "rollout_error_mean"] == 2e-2 and baseline.loc[2700, "units"] == 2700
    assert "| lennard_jones | 800 | 800 | 4.00e-01 | 1.50e-03 |" in (tmp_path / "out/to_tolerance.md").read_text()
    assert "never dropped" not in (tmp_path / "out/to_tolerance.md").read_text()


def test_a_model_whose_learning_rate_never_dropped_is_named_below_the_tables(metrics, tmp_path):
    stuck = json.loads(Path(metrics[0]).read_text())
    Path(metrics[0]).write_text(json.dumps(stuck | {"member_lr_dropped": [False]}))
    settings = {"tolerance": 3e-3, "systems": {"lennard_jones": {"sizes": [800, 2700]}}}
    baselines = [write_baselines(tmp_path, 800, 0.4, 1.5e-3), write_baselines(tmp_path, 2700, 0.4, 2e-2)]
    efficiency(metrics, baselines, str(tmp_path / "out"), settings)
    assert "- system lennard_jones, size 800, loss L_z, subset p1, configurations 100: 1 of 2 models" in \
        (tmp_path / "out/to_tolerance.md").read_text()
    points = pd.read_csv(tmp_path / "out/points.csv").set_index(["size", "loss", "configurations"])
    assert points.loc[(800, "L_z", 100), "never_annealed"] == 1 and points["never_annealed"].sum() == 1


# ---------------------------------------------------------------------------------------
# Through Snakemake
# ---------------------------------------------------------------------------------------
TINY_EFFICIENCY = copy.deepcopy(TINY) | {"efficiency": {"systems": {
    "predator_prey": {"sizes": [5, 10], "configurations": [20], "losses": ["L_z", "L_xp"], "fractions": [0.2],
                      "seeds": [0], "simulate": TINY["systems"]["predator_prey"]["simulate"],
                      "closure": TINY["systems"]["predator_prey"]["closure"],
                      "train": {"epochs": 3, "mlp": {"hidden": [16]}}},
}}}


def test_dry_run_plans_one_job_per_size_loss_subset_training_set_and_seed(tmp_path):
    config = copy.deepcopy(TINY) | {"efficiency": {"systems": {"predator_prey": GRID, "lennard_jones": LJ_GRID}}}
    jobs = planned_jobs(tmp_path, config, "efficiency")
    assert jobs == {
        "efficiency_simulate": 2 * (1 + 2),  # train and test per size
        "efficiency_closure": 1 + 2,
        "efficiency_sample": 2 * 2 * 2 + 2 * 2 * 2,  # (p1, p0.2 | p1, k50) x sets x seeds (x sizes for LJ)
        "efficiency_train": 12 + 8,
        "efficiency_evaluate": 12 + 8,
        "efficiency_baselines": 1 + 2,  # one per system and size
        "efficiency_report": 1,
        "efficiency": 1,
    }
    result = snakemake(tmp_path, "efficiency", "-n", configfile="changed.yaml")
    assert "mlp_L_x_p1_c400_seed1" in result.stdout  # L_x trains on the L_z force sample (p1)


def test_default_target_leaves_the_efficiency_grid_out(tmp_path):
    config = copy.deepcopy(TINY) | {"efficiency": {"systems": {"predator_prey": GRID}}}
    assert not any(rule.startswith("efficiency") for rule in planned_jobs(tmp_path, config))


@pytest.fixture(scope="module")
def efficiency_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("efficiency")
    write_config(workdir, TINY_EFFICIENCY)
    result = snakemake(workdir, "efficiency")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_efficiency_target_writes_tables_and_figures(efficiency_run):
    out = efficiency_run / "results/efficiency"
    points = pd.read_csv(out / "points.csv")
    assert sorted(points["units"].unique()) == [10, 20]  # 2 x cells
    assert set(zip(points["loss"], points["subset"].fillna(""))) == {("L_z", "p1"), ("L_xp", "p0.2"),
                                                                      ("persistence", ""), ("mean course", "")}
    assert (out / "predator_prey/size5/baselines.json").is_file()
    assert set(pd.read_csv(out / "to_tolerance.csv")["size"]) == {5, 10}
    assert len(pd.read_csv(out / "ratios.csv")) == 2
    for name in ("data_efficiency_predator_prey.png", "scaling_predator_prey.png"):
        assert (out / name).stat().st_size > 10_000
    metrics = json.loads((out / "predator_prey/size10/evaluation/mlp_L_xp_p0.2_c20_seed0/metrics.json").read_text())
    assert metrics["force_evaluations"] == 20 * 4  # 20 configurations x 4 of 20 coordinates
    assert not (efficiency_run / "results/predator_prey").exists()  # the pipeline's own runs are not needed


def test_efficiency_rerun_reuses_every_job_and_report_carries_the_figures(efficiency_run):
    result = snakemake(efficiency_run, "efficiency", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr
    result = snakemake(efficiency_run, "efficiency", "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (efficiency_run / "report.html").read_text()
    for name in ("to_tolerance.csv", "data_efficiency_predator_prey.png", "scaling_predator_prey.png"):
        assert name in html, name


def test_the_published_scaling_in_the_readme_validates_and_plans_every_size():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("To run the published scaling on a GPU cluster", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    published = yaml.safe_load(textwrap.dedent(block))
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    config["efficiency"]["systems"]["lennard_jones"] = published
    grid = validate(config)["efficiency"]["systems"]["lennard_jones"]
    runs = [run for run in plan(config) if run.system == "lennard_jones"]
    assert len(runs) == 4 * 2 * 7 * 3 and {run.size for run in runs} == {800, 2700, 6400, 21600}
    assert grid.get("tolerance") is None and config["efficiency"]["tolerance"] == 3e-3
    weights = {size: stage_spec("lennard_jones", grid, size)["closure"]["condition_weight"] for size in grid["sizes"]}
    assert weights == {800: 1e-5, 2700: 1e-3, 6400: 1e-3, 21600: 1e-3}
