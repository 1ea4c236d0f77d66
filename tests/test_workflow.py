"""The whole Snakemake DAG on a tiny configuration: outputs, reruns, report, provenance, bad configs
(killed jobs and other faults: tests/test_faults.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from macroclosure.store import open_store
from macroclosure.systems import system_of

REPOSITORY = Path(__file__).resolve().parents[1]
USER_MODULES = Path(__file__).resolve().parent  # where heat_equation, a user's own system, is importable
SNAKEFILE = REPOSITORY / "Snakefile"
BIN = Path(sys.executable).parent
TINY = {
    "results": "results",
    "device": "cpu",
    "systems": {
        "predator_prey": {
            "seeds": [0],
            "simulate": {"cells": 10, "steps": 200, "save_every": 10, "trajectories": {"train": 4, "test": 2}},
            "sample": {"fractions": [0.2, 1.0], "configurations": 60},
            "closure": {"epochs": 2, "hidden": [8]},
            "train": {"epochs": 3, "ensemble": 2, "mlp": {"hidden": [16]}, "onsager": {"hidden": 8}},
        },
        # A user's own system (tests/heat_equation.py, importable through PYTHONPATH): no file of
        # the package or the workflow names it. One model, one loss, so it adds only 7 jobs.
        "heat": {
            "module": "heat_equation",
            "seeds": [0],
            "simulate": {"cells": 8, "steps": 100, "save_every": 10, "trajectories": {"train": 3, "test": 1}},
            "sample": {"fractions": [0.5], "configurations": 30},
            "closure": {"latent_dim": 3, "epochs": 2, "hidden": [8]},
            "train": {"models": ["mlp"], "losses": ["L_xp"], "epochs": 2, "mlp": {"hidden": [8]}},
            "evaluate": {"plot_trajectories": 1},
        },
    },
}


def snakemake(workdir: Path, *arguments: str, configfile: str | None = "config.yaml") -> subprocess.CompletedProcess:
    """Snakemake on `workdir` with `--configfile workdir/configfile` (none where it is None: the
    workflow then reads config.yaml from `workdir` itself)."""
    configfiles = ["--configfile", str(workdir / configfile)] if configfile else []
    command = [str(BIN / "snakemake"), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *configfiles,
               "--cores", "2", *arguments]
    path = os.pathsep.join(filter(None, [str(USER_MODULES), os.environ.get("PYTHONPATH")]))
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=os.environ | {"PYTHONPATH": path})


def write_config(workdir: Path, config: dict, name: str = "config.yaml") -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(yaml.safe_dump(config))


def planned_jobs(workdir: Path, config: dict, *targets: str) -> dict[str, int]:
    """Rule -> job count that a dry run of `targets` (default: all) with `config` would execute."""
    write_config(workdir, config, "changed.yaml")
    result = snakemake(workdir, *targets, "-n", configfile="changed.yaml")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE) if rule != "job"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    write_config(workdir, TINY)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir


def test_pipeline_produces_every_output(pipeline):
    results = pipeline / "results"
    for split in ("train", "test"):
        assert (results / "predator_prey/trajectories" / f"{split}.zarr" / "zarr.json").is_file()
    assert (results / "predator_prey/forces/p0.2/seed0.zarr").is_dir()
    assert (results / "predator_prey/forces/p1/seed0.zarr").is_dir()
    header, *rows = (results / "report/summary.csv").read_text().splitlines()
    rows = [row for row in rows if row.startswith("predator_prey,")]
    assert len(rows) == 2 * 4 + 2  # (mlp, onsager) x (L_z, L_x, L_xp at p 0.2, L_z at its budget) + 2 baselines
    assert [line.split(",")[1] for line in rows[-2:]] == ["persistence", "mean course"]
    assert header.endswith(",no_skill")
    assert (results / "predator_prey/baselines.json").is_file()
    for figure in ("error_vs_force_evaluations.png", "loss_curves.png"):
        assert (results / "report" / figure).stat().st_size > 1000
    metrics = json.loads((results / "predator_prey/evaluation/onsager_L_xp_p0.2_seed0/metrics.json").read_text())
    assert metrics["force_evaluations"] == 60 * 4  # 60 configurations x 4 of 20 coordinates
    assert len(metrics["member_rollout_errors"]) == 2  # ensemble members
    assert len(metrics["member_lr_dropped"]) == 2  # whether each member's plateau schedule fired
    assert [len(errors) for errors in metrics["rollout_error_per_trajectory"]] == [2, 2]  # test trajectories
    assert (results / "predator_prey/evaluation/onsager_L_xp_p0.2_seed0/rollout.png").is_file()
    markdown = (results / "report/summary.md").read_text()
    assert "| predator_prey | onsager | L_xp | 0.2 |" in markdown
    assert "share one closure (`closure.seed`: heat 0, predator_prey 0)" in markdown  # the ± leaves the closure out
    assert (results / "predator_prey/evaluation/mlp_L_z_p1_c12_seed0/rollout.png").is_file()
    assert (results / "benchmarks/predator_prey/simulate_train.tsv").is_file()
    assert (results / "logs/predator_prey/train_mlp_L_z_p1_seed0.log").is_file()


def test_a_users_own_system_runs_through_every_stage(pipeline):
    """heat_equation plugs in by its `module:` key alone: simulated, sampled, encoded, trained,
    evaluated against its baselines and reported; its stores name the module they came from."""
    results = pipeline / "results/heat"
    trajectories = open_store(results / "trajectories/train.zarr", "trajectories")
    assert trajectories.attrs["system"] == "heat_equation" and trajectories.sizes["dof"] == 8
    forces = open_store(results / "forces/p0.5/seed0.zarr", "forces")
    assert forces.attrs["force_evaluations"] == 30 * 4  # 30 configurations x 4 of 8 cells
    metrics = json.loads((results / "evaluation/mlp_L_xp_p0.5_seed0/metrics.json").read_text())
    assert metrics["force_evaluations"] == 30 * 4
    assert (results / "baselines.json").is_file()
    assert "| heat_equation | mlp | L_xp | 0.5 |" in (pipeline / "results/report/summary.md").read_text()  # as its stores name it


# Every kind of store the tiny run writes: trajectories, partial forces, full forces at equal budget.
STORES = ("trajectories/train.zarr", "trajectories/test.zarr", "forces/p0.2/seed0.zarr", "forces/p1/seed0.zarr",
          "forces/p1/c12_seed0.zarr")


def test_every_store_opens_in_plain_xarray_without_a_warning(pipeline):
    stores = [str(pipeline / "results/predator_prey" / store) for store in STORES]
    opening = "import sys, xarray; [xarray.open_zarr(store, consolidated=False) for store in sys.argv[1:]]"
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", opening, *stores], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [path for store in stores for path in Path(store).rglob(".snakemake_timestamp")]


def test_stores_say_what_each_row_is_in_which_units_with_int64_indices(pipeline):
    results = pipeline / "results/predator_prey"
    trajectories = xr.open_zarr(results / "trajectories/train.zarr", consolidated=False)
    assert trajectories["state"].dims == ("trajectory", "time", "dof")
    assert (trajectories["field"].dims, trajectories["cell"].dims) == (("dof",), ("dof",))
    assert list(trajectories["field"].values) == ["u"] * 10 + ["v"] * 10  # 10 cells of each species
    assert list(trajectories["cell"].values) == list(range(10)) * 2
    assert list(trajectories["trajectory"].values) == [0, 1, 2, 3]
    forces = xr.open_zarr(results / "forces/p0.2/seed0.zarr", consolidated=False)
    assert list(forces["sample"].values) == list(range(60))
    for ds, names in ((trajectories, ("state", "time")), (forces, ("force",))):
        for name in names:
            assert ds[name].attrs["units"] == "1" and ds[name].attrs["long_name"], name  # nondimensional equations
    for name in ("trajectory", "time_index", "index", "sample"):
        assert forces[name].attrs["long_name"], name
    indices = [trajectories["trajectory"], trajectories["cell"], *(forces[name] for name in ("sample", "trajectory", "time_index", "index"))]
    assert {index.dtype for index in indices} == {np.dtype(np.int64)}


def test_complete_run_leaves_nothing_to_do(pipeline):
    assert planned_jobs(pipeline, TINY) == {}


def test_training_change_reruns_training_evaluation_and_report_only(pipeline):
    changed = json.loads(json.dumps(TINY))
    changed["systems"]["predator_prey"]["train"]["epochs"] = 4
    assert planned_jobs(pipeline, changed) == {"train": 6, "train_budget": 2, "evaluate": 6, "evaluate_budget": 2,
                                               "report": 1, "all": 1}


def test_simulation_change_reruns_everything_downstream(pipeline):
    changed = json.loads(json.dumps(TINY))
    changed["systems"]["predator_prey"]["simulate"]["dt"] = 0.005
    jobs = planned_jobs(pipeline, changed)
    assert jobs == {"simulate": 2, "sample": 2, "sample_budget": 1, "closure": 1, "train": 6, "train_budget": 2,
                    "evaluate": 6, "evaluate_budget": 2, "baselines": 1, "report": 1, "all": 1}


def changed_tiny(change) -> dict:
    """TINY with `change` applied to its predator_prey section."""
    changed = json.loads(json.dumps(TINY))
    change(changed["systems"]["predator_prey"])
    return changed


# Each job receives only the settings it uses, so a change plans only the jobs it concerns.
@pytest.mark.parametrize(
    "change, jobs",
    [
        pytest.param(lambda s: s["train"].update(models=["mlp", "onsager", "gfinn"]),
                     {"train": 3, "train_budget": 1, "evaluate": 3, "evaluate_budget": 1}, id="model"),
        pytest.param(lambda s: s["sample"].update(fractions=[0.2, 0.5, 1.0]),
                     {"sample": 1, "sample_budget": 1, "train": 2, "train_budget": 2, "evaluate": 2, "evaluate_budget": 2},
                     id="fraction"),
        pytest.param(lambda s: s.update(seeds=[0, 1]),
                     {"sample": 2, "sample_budget": 1, "train": 6, "train_budget": 2, "evaluate": 6, "evaluate_budget": 2},
                     id="seed"),
        pytest.param(lambda s: s["train"]["onsager"].update(hidden=12),
                     {"train": 3, "train_budget": 1, "evaluate": 3, "evaluate_budget": 1}, id="model-settings"),
        pytest.param(lambda s: s["sample"].update(equal_budget=False), {}, id="no-budget"),
    ],
)
def test_a_change_plans_only_the_jobs_it_concerns_and_the_report(pipeline, change, jobs):
    assert planned_jobs(pipeline, changed_tiny(change)) == jobs | {"report": 1, "all": 1}


def test_a_new_fraction_samples_its_own_store_and_full_forces_on_its_budget(pipeline):
    changed = changed_tiny(lambda s: s["sample"].update(fractions=[0.2, 0.5, 1.0]))
    write_config(pipeline, changed, "changed.yaml")
    planned = snakemake(pipeline, "-n", configfile="changed.yaml").stdout
    for path in ("forces/p0.5/seed0.zarr", "forces/p1/c30_seed0.zarr", "dynamics/onsager_L_xp_p0.5_seed0",
                 "dynamics/mlp_L_z_p1_c30_seed0"):
        assert f"results/predator_prey/{path}" in planned, path


def test_the_budget_store_holds_full_forces_on_p_times_the_configurations(pipeline):
    forces = open_store(pipeline / "results/predator_prey/forces/p1/c12_seed0.zarr", "forces")
    assert (forces.attrs["p"], forces.attrs["configurations"]) == (1.0, round(0.2 * 60))
    assert forces.attrs["force_evaluations"] == 12 * 20  # as many as L_xp at p = 0.2 on 60 configurations
    summary = pd.read_csv(pipeline / "results/report/summary.csv").set_index(["model", "loss", "configurations"])
    assert summary.loc[("mlp", "L_z", 12), "force_evaluations"] == summary.loc[("mlp", "L_xp", 60), "force_evaluations"]
    markdown = (pipeline / "results/report/summary.md").read_text()
    assert "| predator_prey | mlp | L_z | 1 | 12 | 240 coordinates |" in markdown
    for model in ("mlp", "onsager"):
        assert re.search(rf"- predator_prey, {model}: at 240 coordinates, (L_xp|L_z|neither) wins", markdown), model


def test_train_and_sample_record_only_the_settings_they_used(pipeline):
    records = provenance_records(pipeline / "results")
    assert set(records["dynamics"]["settings"]).isdisjoint({"models", "losses", "onsager", "gfinn"})
    assert records["dynamics"]["settings"]["mlp"]["hidden"] == [16]
    assert set(records["forces"]["settings"]) == {"configurations", "batch_size", "draw"}


def test_lint_reports_nothing(tmp_path):
    """`snakemake --lint` passes: helpers in common.smk, PATH declared in `envvars`, no hard-coded prefixes."""
    write_config(tmp_path, TINY)
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_on_the_command_line_is_laid_over_config_yaml(tmp_path):
    write_config(tmp_path, TINY)
    result = snakemake(tmp_path, "-n", "--config", "results=elsewhere", configfile=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "elsewhere/predator_prey/trajectories/train.zarr" in result.stdout
    assert not re.search(r"(^|[\s,])results/", result.stdout)  # every output moved, the rest of config.yaml kept


def test_a_configfile_replaces_config_yaml(tmp_path):
    write_config(tmp_path, TINY)
    write_config(tmp_path, {"device": "cpu", "systems": {"allen_cahn": {"sample": {"configurations": 1000}}}}, "other.yaml")
    result = snakemake(tmp_path, "-n", configfile="other.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results/allen_cahn/trajectories/train.zarr" in result.stdout
    assert "predator_prey" not in result.stdout  # config.yaml's system is not merged in


@pytest.fixture(scope="module")
def html_report(pipeline) -> str:
    """The HTML report of the tiny run."""
    result = snakemake(pipeline, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    return (pipeline / "report.html").read_text()


def test_html_report_bundles_the_results_and_the_config(pipeline, html_report):
    html = html_report
    assert len(html) > 10_000
    for name in ("summary.csv", "summary.html", "error_vs_force_evaluations.png", "loss_curves.png", "config.yaml",
                 "config.html"):
        assert name in html, name
    recorded = yaml.safe_load((pipeline / "results/report/config.yaml").read_text())
    assert recorded["systems"]["predator_prey"]["train"]["epochs"] == 3  # as given
    assert recorded["systems"]["predator_prey"]["train"]["lr"] == 5.0e-3  # the schema default, filled in


def report_items(html: str) -> dict[str, dict]:
    """The items of a Snakemake HTML report by path: name, caption, mime type, job properties
    and the file itself as a data URI."""
    return json.loads(re.search(r"var results = (\{.*?\});\n", html, re.DOTALL).group(1))


def item_text(item: dict) -> str:
    """The file of a report item, decoded from its base64 data URI."""
    return base64.b64decode(item["data_uri"].split(",", 1)[1]).decode()


def result_numbers(summary: pd.DataFrame) -> set[str]:
    """The results of a run (cost, errors, times) as the report would print them."""
    numbers = set(summary["force_evaluations"][summary["force_evaluations"] > 1].astype(str))
    for column in ("rollout_error_mean", "rollout_error_std", "force_wall_seconds", "train_wall_seconds"):
        for value in summary[column].dropna():
            if value != 0:
                numbers |= {f"{value:.2e}", f"{value:.1e}", f"{value:.3g}", f"{value:.2g}"}
    return numbers


def test_html_report_shows_the_summary_as_a_table_and_a_description(pipeline, html_report):
    assert "learns macroscopic closure models" in html_report  # the workflow description on the landing page
    items = report_items(html_report)
    table = items["results/report/summary.html"]
    assert table["mime_type"] == "text/html"  # shown inline, where a CSV is only a download
    shown = pd.read_html(io.StringIO(item_text(table)))[0]
    summary = pd.read_csv(pipeline / "results/report/summary.csv")
    assert list(shown.columns) == list(summary.columns) and len(shown) == len(summary)
    assert all(len(item["job_properties"]["params"]) < 500 for item in items.values())  # small info panes


def test_no_report_caption_states_a_result_of_the_run(pipeline, html_report):
    numbers = result_numbers(pd.read_csv(pipeline / "results/report/summary.csv"))
    assert len(numbers) > 20
    for path, item in report_items(html_report).items():
        stated = set(re.findall(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?", re.sub(r"<[^>]+>", " ", item["caption"])))
        assert stated.isdisjoint(numbers), (path, stated & numbers)


def test_caption_texts_hold_no_numbers_but_0_and_1():
    for caption in (REPOSITORY / "workflow/report").glob("*.rst"):
        if caption.name == "workflow.rst":  # the landing page: its numbers count the stages
            continue
        numbers = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])", caption.read_text()))
        assert numbers <= {"0", "1"}, (caption.name, numbers)


def provenance_records(results: Path) -> dict[str, dict]:
    """The provenance of each kind of output the pipeline writes."""
    system = results / "predator_prey"
    return {
        "trajectories": json.loads(open_store(system / "trajectories/train.zarr", "trajectories").attrs["provenance"]),
        "forces": json.loads(open_store(system / "forces/p0.2/seed0.zarr", "forces").attrs["provenance"]),
        "closure": json.loads((system / "closure/hparams.json").read_text())["provenance"],
        "dynamics": json.loads((system / "dynamics/mlp_L_xp_p0.2_seed0/hparams.json").read_text())["provenance"],
    }


def test_every_store_and_checkpoint_records_digest_seed_versions_and_device(pipeline):
    for output, record in provenance_records(pipeline / "results").items():
        assert re.fullmatch(r"[0-9a-f]{64}", record["config_digest"]), output
        assert isinstance(record["seed"], int), output
        assert {"macroclosure", "jax", "torch", "numpy", "zarr"} <= set(record["versions"]), output
        assert "cpu" in record["device"], output


def test_training_again_gives_a_bit_identical_checkpoint(pipeline, tmp_path):
    """`macroclosure train` with the rule's arguments and thread count reproduces its checkpoint."""
    import torch

    results = pipeline / "results/predator_prey"
    settings = json.dumps(TINY["systems"]["predator_prey"]["train"])
    subprocess.run([str(BIN / "macroclosure"), "train", "--trajectories", str(results / "trajectories/train.zarr"),
                    "--forces", str(results / "forces/p0.2/seed0.zarr"), "--closure", str(results / "closure"),
                    "--model", "mlp", "--loss", "L_xp", "--seed", "0", "--settings", settings, "--device", "cpu",
                    "--out", str(tmp_path / "model"), "--no-progress"],
                   check=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True)
    ours = torch.load(tmp_path / "model/model.pt", weights_only=True)["members"]
    rules = torch.load(results / "dynamics/mlp_L_xp_p0.2_seed0/model.pt", weights_only=True)["members"]
    for mine, theirs in zip(ours, rules, strict=True):
        assert all(torch.equal(mine[name], theirs[name]) for name in theirs)


def assert_trains_from_the_partial_store(results: Path, loss: str, tmp_path: Path, **settings) -> dict:
    """`macroclosure train` with this loss (and these train settings over the tiny ones) on the tiny
    pipeline's p = 0.2 store runs and records the loss and p; returns its hparams."""
    settings = json.dumps(TINY["systems"]["predator_prey"]["train"] | settings)
    subprocess.run([str(BIN / "macroclosure"), "train", "--trajectories", str(results / "trajectories/train.zarr"),
                    "--forces", str(results / "forces/p0.2/seed0.zarr"), "--closure", str(results / "closure"),
                    "--model", "mlp", "--loss", loss, "--seed", "0", "--settings", settings, "--device", "cpu",
                    "--out", str(tmp_path / "model"), "--no-progress"], check=True, capture_output=True)
    hparams = json.loads((tmp_path / "model/hparams.json").read_text())
    assert (hparams["loss"], hparams["p"]) == (loss, 0.2)
    return hparams


def test_lxpc_learns_the_quadratic_force_law_from_the_partial_store_and_records_its_error(pipeline, tmp_path):
    """Predator-prey's force is quadratic in its stencil (D = 0), so L_x,p,c's degree-2 surrogate fitted
    on 4 of 20 rows of 60 configurations predicts the held-out rows to rounding; the error is recorded."""
    hparams = assert_trains_from_the_partial_store(pipeline / "results/predator_prey", "L_xpc", tmp_path, surrogate_degree=2)
    assert hparams["surrogate_degree"] == 2
    assert hparams["surrogate_held_out_error"] < 1e-8


def test_lzp_targets_from_full_forces_are_l_zs_and_it_trains_from_a_partial_store(pipeline, tmp_path):
    """L_z,p's least-squares rate from every force row is J f (L_z's target); from the p = 0.2
    store it trains like any loss and records itself."""
    import torch

    from macroclosure.closure import load_closure
    from macroclosure.train import training_tensors

    results = pipeline / "results/predator_prey"
    autoencoder = load_closure(results / "closure")[0]
    trajectories = open_store(results / "trajectories/train.zarr", "trajectories")
    full = open_store(results / "forces/p1/seed0.zarr", "forces")
    latent, estimated = (training_tensors(autoencoder, trajectories, full, loss)[0] for loss in ("L_z", "L_zp"))
    torch.testing.assert_close(estimated["target"], latent["target"], rtol=1e-5, atol=1e-6)  # both float32
    assert_trains_from_the_partial_store(results, "L_zp", tmp_path)


def test_lzu_targets_average_to_j_f_over_a_partition_of_the_units_and_it_trains_from_a_partial_store(pipeline, tmp_path):
    """L_z,u's estimate (N / k) J[:, I] f_I is unbiased: over 5 disjoint subsets of N / 5 of the N
    coordinates (each drawn with probability 1/5 as any subset is) it averages to J f exactly; from the
    p = 0.2 store it trains and records itself."""
    import torch

    from macroclosure.closure import load_closure
    from macroclosure.train import latent_rate, sampled_rate

    results = pipeline / "results/predator_prey"
    autoencoder = load_closure(results / "closure")[0].double()
    trajectories = open_store(results / "trajectories/train.zarr", "trajectories")
    system = system_of(trajectories)
    x = torch.as_tensor(trajectories["state"].values[:3, 5], dtype=torch.float64)
    force = torch.stack([torch.as_tensor(np.asarray(system.rhs(state.numpy())), dtype=torch.float64) for state in x])
    blocks = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0)).reshape(5, -1)
    estimates = [sampled_rate(autoencoder, x, block.expand(3, -1), force[:, block])[1] for block in blocks]
    exact = latent_rate(autoencoder, x, force)[1]
    torch.testing.assert_close(torch.stack(estimates).mean(0), exact, rtol=1e-10, atol=1e-12)
    assert (estimates[0] - exact).abs().max() > 1e-6  # one subset alone is only an estimate
    assert_trains_from_the_partial_store(results, "L_zu", tmp_path)


def test_cli_stage_alone_reproduces_the_rule_output(pipeline, tmp_path):
    """`macroclosure sample` with the rule's arguments writes the same arrays as the rule."""
    settings = json.dumps({"configurations": 60, "batch_size": 1024})
    out = tmp_path / "forces.zarr"
    trajectories = pipeline / "results/predator_prey/trajectories/train.zarr"
    subprocess.run([str(BIN / "macroclosure"), "sample", "--trajectories", str(trajectories), "--p", "0.2",
                    "--seed", "0", "--settings", settings, "--out", str(out), "--no-progress"], check=True)
    ours = open_store(out, "forces")
    rules = open_store(pipeline / "results/predator_prey/forces/p0.2/seed0.zarr", "forces")
    for name in ("trajectory", "time_index", "index", "force"):
        np.testing.assert_array_equal(ours[name].values, rules[name].values)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["systems"]["predator_prey"]["train"].update(optimiser="sgd"), "optimiser"),
        (lambda c: c["systems"]["predator_prey"]["sample"].update(fractions=[1.5]), "sample.fractions"),
        (lambda c: c["systems"]["predator_prey"]["closure"].update(latent_dim=2), "closure.latent_dim"),
        (lambda c: c["systems"]["predator_prey"]["train"].update(epochs="ten"), "train.epochs"),
    ],
)
def test_invalid_config_stops_before_any_job(tmp_path, change, key):
    config = json.loads(json.dumps(TINY))
    change(config)
    write_config(tmp_path, config)
    result = snakemake(tmp_path)
    assert result.returncode != 0
    assert key in result.stderr
    assert not (tmp_path / "results").exists()
