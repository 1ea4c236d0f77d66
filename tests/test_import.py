"""Users' own trajectories in: LAMMPS dumps and extended-XYZ files written from a short simulated
Lennard-Jones run come back as the store it was, refusals name the file and the reason, and a
config's `simulate.source` runs sample -> evaluate on imported stores without simulating."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import xarray as xr
from ase import Atoms
from ase.io import write

from macroclosure.config import ConfigError, complete_section, validate
from macroclosure.importing import TrajectoryFileError, adopt, import_trajectories
from macroclosure.simulate import simulate
from macroclosure.store import StoreError, open_store
from macroclosure.systems.lennard_jones import box_length
from test_workflow import planned_jobs, snakemake, write_config

ATOMS = 256  # the smallest box (6.84) that holds twice r_cutoff + skin at density 0.8
SETTINGS = {"atoms": ATOMS, "steps": 20, "save_every": 5, "minimise_steps": 50, "dtype": "float64",
            "trajectories": {"train": 2, "test": 1}}
BOX = box_length(complete_section("lennard_jones", "simulate", SETTINGS))
UNWRAPPED = ("id", "type", "xu", "yu", "zu", "vx", "vy", "vz")
WITH_IMAGES = ("id", "type", "x", "y", "z", "ix", "iy", "iz", "vx", "vy", "vz")


@pytest.fixture(scope="module")
def simulated_folder(tmp_path_factory):
    """The stores of a short simulated run: 2 train and 1 test trajectories of 5 frames."""
    folder = tmp_path_factory.mktemp("simulated")
    for split in ("train", "test"):
        simulate("lennard_jones", SETTINGS, split, str(folder / f"{split}.zarr"), device="cpu", progress=False)
    return folder


@pytest.fixture(scope="module")
def simulated(simulated_folder) -> dict[str, xr.Dataset]:
    """{split: store} of the short simulated run, loaded."""
    return {split: open_store(simulated_folder / f"{split}.zarr", "trajectories").load() for split in ("train", "test")}


def split_state(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, velocities), each [frames, atoms, 3], of states [frames, 6 atoms]."""
    return states[:, : 3 * ATOMS].reshape(-1, ATOMS, 3), states[:, 3 * ATOMS :].reshape(-1, ATOMS, 3)


def write_dump(path, states, columns=UNWRAPPED, box=BOX, first_step=0, every=5, positions=None):
    """A LAMMPS text dump of states [frames, 6 atoms], rows in a scrambled order, full precision."""
    unwrapped, velocities = split_state(states)
    unwrapped = unwrapped if positions is None else positions
    order = np.random.default_rng(0).permutation(ATOMS)
    lines = []
    for frame, (position, velocity) in enumerate(zip(unwrapped, velocities)):
        values = {"id": np.arange(1, ATOMS + 1), "type": np.ones(ATOMS)}
        values |= dict(zip(("xu", "yu", "zu"), position.T)) | dict(zip(("vx", "vy", "vz"), velocity.T))
        values |= dict(zip(("x", "y", "z"), np.mod(position, box).T)) | dict(zip(("ix", "iy", "iz"), np.floor(position / box).T))
        lines += ["ITEM: TIMESTEP", str(first_step + frame * every), "ITEM: NUMBER OF ATOMS", str(ATOMS),
                  "ITEM: BOX BOUNDS pp pp pp", *[f"0.0 {box:.17g}"] * 3, "ITEM: ATOMS " + " ".join(columns)]
        lines += [" ".join(f"{values[name][atom]:.17g}" for name in columns) for atom in order]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_extxyz(path, states, times):
    """An extended-XYZ file of states [frames, 6 atoms] by ASE's writer (velocities as momenta)."""
    images = []
    for position, velocity, time in zip(*split_state(states), times):
        atoms = Atoms(f"Ar{ATOMS}", positions=position, cell=[BOX] * 3, pbc=True)
        atoms.set_velocities(velocity)
        atoms.info["time"] = time
        images.append(atoms)
    write(path, images, format="extxyz")
    return path


def imported(files, out, split="train", **changes):
    import_trajectories([str(path) for path in files], str(out), split, SETTINGS | changes)
    return open_store(out, "trajectories")


def test_imported_lammps_dumps_are_the_states_they_were_written_from(simulated, tmp_path):
    states = simulated["train"]["state"].values
    files = [write_dump(tmp_path / f"run{number}.dump", states[number]) for number in range(2)]
    ds = imported(files, tmp_path / "train.zarr")
    np.testing.assert_array_equal(ds["state"].values, states)  # atoms sorted by id, unwrapped, full precision
    np.testing.assert_allclose(ds["time"].values, simulated["train"]["time"].values, rtol=1e-12)
    np.testing.assert_allclose(ds["initial_temperature"].values, simulated["train"]["initial_temperature"].values, rtol=1e-9)
    assert list(ds["component"].values[:3]) == ["x", "y", "z"] and ds.attrs["integrator"] == "imported"
    record = json.loads(ds.attrs["provenance"])
    assert record["source"]["files"] == [str(path) for path in files] and len(record["source"]["sha256"]) == 64
    assert (record["settings"]["steps"], record["settings"]["trajectories"]["train"]) == (20, 2)


def test_wrapped_positions_with_image_flags_are_unwrapped(simulated, tmp_path):
    states = simulated["train"]["state"].values[0]
    crossing = split_state(states)[0] + np.array([BOX - 1e-3, 0.0, 0.0]) - split_state(states)[0][0, 0]  # atom 1 at the face
    dump = write_dump(tmp_path / "images.dump", states, WITH_IMAGES, positions=crossing)
    imported_positions = split_state(imported([dump], tmp_path / "train.zarr")["state"].values[0])[0]
    assert (np.floor(crossing / BOX) != 0).any()  # image flags are needed
    np.testing.assert_allclose(imported_positions, crossing, rtol=1e-12, atol=1e-12)


def test_one_file_of_several_runs_splits_into_trajectories(simulated, tmp_path):
    states = simulated["train"]["state"].values
    dump = tmp_path / "both.dump"
    dump.write_text(write_dump(tmp_path / "a", states[0]).read_text() + write_dump(tmp_path / "b", states[1]).read_text())
    import_trajectories([str(dump)], str(tmp_path / "train.zarr"), "train", SETTINGS, frames_per_trajectory=5)
    np.testing.assert_array_equal(open_store(tmp_path / "train.zarr", "trajectories")["state"].values, states)


def test_an_imported_extxyz_file_is_the_states_it_was_written_from(simulated, tmp_path):
    test = simulated["test"]
    xyz = write_extxyz(tmp_path / "test.extxyz", test["state"].values[0], test["time"].values)
    ds = imported([xyz], tmp_path / "test.zarr", "test")
    np.testing.assert_allclose(ds["state"].values, test["state"].values, atol=1e-7)  # ASE prints 8 decimals
    assert ds.attrs["split"] == "test" and json.loads(ds.attrs["provenance"])["source"]["formats"] == ["extxyz"]


@pytest.mark.parametrize(
    "dump, changes, reason",
    [
        pytest.param({"box": 7.5}, {}, r"box of side 7\.5, but atoms / density = 256 / 0\.8 .* side of 6\.8399", id="box"),
        pytest.param({"columns": ("id", "type", "xu", "yu", "zu", "vx", "vy")}, {}, r"lacks the velocity column\(s\) vz",
                     id="velocity"),
        pytest.param({"columns": ("id", "type", "x", "y", "z", "vx", "vy", "vz")}, {},
                     r"wrapped positions \(x y z\) without image flags \(ix iy iz\)", id="wrapped"),
        pytest.param({}, {"atoms": 300}, r"256 atoms, but simulate\.atoms is 300", id="atoms"),
        pytest.param({"every": 10}, {}, r"frames every 10 steps, but simulate\.save_every is 5", id="save-every"),
    ],
)
def test_a_dump_that_does_not_fit_is_refused_naming_file_and_reason(simulated, tmp_path, dump, changes, reason):
    path = write_dump(tmp_path / "bad.dump", simulated["train"]["state"].values[0], **dump)
    with pytest.raises(TrajectoryFileError, match=rf"bad\.dump: .*{reason}"):
        imported([path], tmp_path / "train.zarr", **changes)
    assert not (tmp_path / "train.zarr").exists()


def test_positions_folded_back_into_the_box_are_refused(simulated, tmp_path):
    states = simulated["train"]["state"].values[0]
    folded = split_state(states)[0].copy()
    folded[2:, 0, 0] -= BOX  # atom 1 wrapped from frame 2 on, but written as unwrapped xu
    path = write_dump(tmp_path / "folded.dump", states, positions=folded)
    with pytest.raises(TrajectoryFileError, match=r"folded\.dump: .*atom 1 moves 6\.84 between frames 1 and 2.*wrapped"):
        imported([path], tmp_path / "train.zarr")


def test_an_extxyz_file_at_another_frame_time_is_refused(simulated, tmp_path):
    test = simulated["test"]
    xyz = write_extxyz(tmp_path / "slow.extxyz", test["state"].values[0], 2 * test["time"].values)
    with pytest.raises(TrajectoryFileError, match=r"slow\.extxyz: .*frames every 0\.01 in time, but dt x save_every"):
        imported([xyz], tmp_path / "test.zarr", "test")


# --- simulate.source: imported stores in a run ---------------------------------------------
PIPELINE = {
    "results": "results",
    "device": "cpu",
    "systems": {"lennard_jones": {
        "seeds": [0],
        "simulate": SETTINGS,
        "sample": {"fractions": [0.0625], "configurations": 8, "batch_size": 4, "equal_budget": False},
        "closure": {"latent_dim": 3, "epochs": 1, "hidden": [8], "condition_rows": "closure"},
        "train": {"models": ["mlp"], "losses": ["L_xp"], "epochs": 2, "mlp": {"hidden": [8]}},
        "evaluate": {"plot_trajectories": 1},
    }},
}


def with_source(train: str, test: str) -> dict:
    config = copy.deepcopy(PIPELINE)
    config["systems"]["lennard_jones"]["simulate"]["source"] = {"train": train, "test": test}
    return config


@pytest.fixture(scope="module")
def imported_run(simulated, tmp_path_factory):
    """A tiny run whose training store came from LAMMPS dumps and whose test store from extxyz."""
    workdir = tmp_path_factory.mktemp("imported_run")
    states = simulated["train"]["state"].values
    files = [write_dump(workdir / f"run{number}.dump", states[number]) for number in range(2)]
    import_trajectories([str(path) for path in files], str(workdir / "mine/train.zarr"), "train", SETTINGS)
    test = simulated["test"]
    xyz = write_extxyz(workdir / "test.extxyz", test["state"].values[0], test["time"].values)
    import_trajectories([str(xyz)], str(workdir / "mine/test.zarr"), "test", SETTINGS)
    config = with_source("mine/train.zarr", "mine/test.zarr")
    planned = planned_jobs(workdir, config)
    write_config(workdir, config)
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config, planned


def test_imported_stores_run_through_sample_to_evaluate_without_simulating(imported_run, simulated):
    workdir, config, planned = imported_run
    assert planned == {"adopt": 2, "sample": 1, "closure": 1, "train": 1, "evaluate": 1, "baselines": 1, "report": 1, "all": 1}
    results = workdir / "results/lennard_jones"
    np.testing.assert_array_equal(open_store(results / "trajectories/train.zarr", "trajectories")["state"].values,
                                  simulated["train"]["state"].values)
    metrics = json.loads((results / "evaluation/mlp_L_xp_p0.0625_seed0/metrics.json").read_text())
    assert metrics["force_evaluations"] == 8 * 16  # 8 configurations x 16 of 256 atoms
    assert np.isfinite(metrics["rollout_error_per_trajectory"]).all()
    assert planned_jobs(workdir, config) == {}


def test_a_changed_imported_store_reruns_what_reads_it(imported_run, simulated):
    workdir, config, _ = imported_run
    states = simulated["train"]["state"].values
    import_trajectories([str(write_dump(workdir / "again.dump", states[number])) for number in (1, 0)],
                        str(workdir / "mine/train.zarr"), "train", SETTINGS)
    assert planned_jobs(workdir, config) == {"adopt": 1, "sample": 1, "closure": 1, "train": 1, "evaluate": 1,
                                             "baselines": 1, "report": 1, "all": 1}


def test_a_missing_source_is_refused_before_any_job_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'systems\.lennard_jones\.simulate\.source\.test': .*nowhere\.zarr is not a "
                                          r"trajectory store"):
        validate(with_source(str(tmp_path), str(tmp_path / "nowhere.zarr")))


def test_a_foreign_or_mismatched_store_is_not_adopted(train_store, simulated_folder, tmp_path):
    with pytest.raises(StoreError, match=r"train\.zarr: holds system 'predator_prey', expected 'lennard_jones'"):
        adopt(str(train_store), str(tmp_path / "out.zarr"), "train", SETTINGS)
    source = simulated_folder / "train.zarr"
    with pytest.raises(StoreError, match=r"train\.zarr: does not match .*steps 20 in the store, 40 in simulate\.steps"):
        adopt(str(source), str(tmp_path / "out.zarr"), "train", SETTINGS | {"steps": 40})
    assert not (tmp_path / "out.zarr").exists()


def test_source_is_refused_for_a_pde_system_and_an_efficiency_grid():
    with pytest.raises(ConfigError, match=r"systems\.predator_prey\.simulate'.*'source' was unexpected"):
        validate({"systems": {"predator_prey": {"simulate": {"source": {"train": "a", "test": "b"}}}}})
    grid = {"lennard_jones": {"configurations": [10], "simulate": SETTINGS | {"source": {"train": "a", "test": "b"}}}}
    with pytest.raises(ConfigError, match=r"efficiency\.systems\.lennard_jones\.simulate\.source': the efficiency grid"):
        validate(copy.deepcopy(PIPELINE) | {"efficiency": {"systems": grid}})
