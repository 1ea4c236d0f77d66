"""Faults, with nothing lost: what the workflow does when a job is killed mid-write, a store
is damaged on disk, the disk fills or a folder is not writable, a simulation diverges, or
the configuration cannot work. Each test provokes the fault where users meet it (through
Snakemake or the stage's command) and checks what is left on disk afterwards."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
import yaml

from macroclosure.cli import main
from macroclosure.simulate import simulate
from macroclosure.store import StoreError, open_store, streamed_store, write_store

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STORES = "results/predator_prey/trajectories"
FAST = {
    "device": "cpu",
    "systems": {
        "predator_prey": {
            "seeds": [0],
            "simulate": {"cells": 10, "steps": 100, "save_every": 10, "trajectories": {"train": 4, "test": 2}},
            "sample": {"fractions": [1.0], "configurations": 20},
            "closure": {"epochs": 1, "hidden": [8]},
            "train": {"models": ["mlp"], "losses": ["L_z"], "epochs": 1, "mlp": {"hidden": [8]}},
        }
    },
}


def configured(**simulate) -> dict:
    """FAST with the predator-prey simulate settings updated by `simulate`."""
    config = copy.deepcopy(FAST)
    config["systems"]["predator_prey"]["simulate"].update(simulate)
    return config


def snakemake(workdir: Path, config: dict, *targets: str, background: bool = False):
    """Run (or start, with `background`) Snakemake on `config` in `workdir` for `targets`
    (paths inside `workdir`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [str(BIN / "snakemake"), "--snakefile", str(REPOSITORY / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "1",
               *(str(Path(target).relative_to(workdir)) for target in targets)]
    if background:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=workdir)
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir)


def fingerprint(folder: Path) -> dict[str, tuple]:
    """Inode of the folder, and modification time and SHA-256 of every file in it: an equal
    fingerprint means the folder was neither rewritten nor replaced."""
    files = {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    return {".": (folder.stat().st_ino,)} | files


def leftovers(folder: Path) -> list[str]:
    """Temporaries of unfinished writes in `folder`."""
    return sorted(path.name for path in folder.glob(".*.partial-*"))


def kill_job_when(process: subprocess.Popen, started) -> None:
    """SIGKILL the `macroclosure` job under the Snakemake `process` once `started()` holds
    (as the OOM killer or a SLURM time limit would)."""
    deadline = time.monotonic() + 120
    while not started():
        assert time.monotonic() < deadline and process.poll() is None, "the write never started"
        time.sleep(0.02)
    jobs = [child for child in psutil.Process(process.pid).children(recursive=True)
            if "macroclosure" in " ".join(child.cmdline())]
    assert jobs, "no macroclosure job is running"
    for job in jobs:
        job.kill()


def test_job_killed_mid_write_is_redone_and_finished_stores_are_untouched(tmp_path):
    config = configured(steps=20000, batch_size=1, trajectories={"train": 16, "test": 1})
    test_store, train_store = tmp_path / STORES / "test.zarr", tmp_path / STORES / "train.zarr"
    assert snakemake(tmp_path, config, str(test_store / "zarr.json")).returncode == 0
    finished = fingerprint(test_store)

    running = snakemake(tmp_path, config, str(train_store / "zarr.json"), background=True)
    kill_job_when(running, lambda: list(train_store.parent.glob(".train.zarr.partial-*/state")))
    _, stderr = running.communicate()
    assert running.returncode != 0 and "Error in rule simulate" in stderr
    assert not (train_store / "zarr.json").exists()  # the half-written store never took the output's name
    assert leftovers(train_store.parent)  # ... it is still under its temporary name

    rerun = snakemake(tmp_path, config, str(train_store / "zarr.json"), str(test_store / "zarr.json"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(r"^simulate\s+1$", rerun.stdout + rerun.stderr, re.MULTILINE)  # only the killed job
    assert open_store(train_store, "trajectories").sizes["trajectory"] == 16
    assert leftovers(train_store.parent) == []
    assert fingerprint(test_store) == finished


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """A workflow folder whose trajectory stores are finished."""
    workdir = tmp_path_factory.mktemp("simulated")
    result = snakemake(workdir, FAST, *(str(workdir / STORES / f"{split}.zarr/zarr.json") for split in ("train", "test")))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def truncate_chunks(store: Path, variable: str) -> Path:
    """Cut every chunk file of `variable` to half its length (a disk or copy that gave up)."""
    chunks = [path for path in (store / variable).rglob("*") if path.is_file() and path.name != "zarr.json"]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return store


def test_truncated_store_stops_the_stages_that_read_it(simulated, tmp_path):
    workdir = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(simulated), str(workdir)], check=True)  # keeps mtimes: nothing is stale
    train_store = truncate_chunks(workdir / STORES / "train.zarr", "state")
    forces = workdir / "results/predator_prey/forces/p1/seed0.zarr"
    model = workdir / "results/predator_prey/dynamics/mlp_L_z_p1_seed0"

    result = snakemake(workdir, FAST, str(forces / "zarr.json"), str(model))
    assert result.returncode != 0
    failed = [path for path in (workdir / "results/logs/predator_prey").glob("*.log") if "failed: store" in path.read_text()]
    assert failed and failed[0].stem in ("closure", "sample_p1_seed0")  # the first reader of the store
    assert f"store {train_store}: variable 'state' cannot be read" in failed[0].read_text()
    assert not (forces / "zarr.json").exists() and not model.exists()
    assert not (workdir / "results/logs/predator_prey/train_mlp_L_z_p1_seed0.log").exists()  # never started


def disk_fills(monkeypatch, after: int = 0) -> None:
    """Make zarr's file writes fail with ENOSPC once `after` chunk files have been written."""
    import zarr.storage._local as local

    original, written = local._put, []

    def put(path, value, exclusive=False):
        if "/c/" in str(path) and len(written) >= after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return original(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)


def forces_dataset() -> xr.Dataset:
    return xr.Dataset({
        "trajectory": (("sample",), np.arange(4)),
        "time_index": (("sample",), np.arange(4)),
        "index": (("sample", "row"), np.ones((4, 2), dtype=np.int64)),
        "force": (("sample", "row"), np.ones((4, 2))),
    })


def test_full_disk_names_the_store_and_leaves_nothing(tmp_path, monkeypatch):
    disk_fills(monkeypatch)
    path = tmp_path / "seed0.zarr"
    with pytest.raises(StoreError, match=re.escape(f"store {path}: cannot be written: [Errno 28] No space left on device")):
        write_store(forces_dataset(), path, "forces")
    assert list(tmp_path.iterdir()) == []


def test_disk_filling_midway_through_a_stream_keeps_the_previous_store(tmp_path, monkeypatch):
    path = tmp_path / "train.zarr"
    write_store(forces_dataset(), path, "forces")
    before = fingerprint(path)
    disk_fills(monkeypatch, after=2)
    block = xr.Dataset({"state": (("trajectory", "time", "dof"), np.ones((1, 2, 3)))}, coords={"time": [0.0, 1.0]})
    with pytest.raises(StoreError, match=re.escape(f"store {path}: cannot be written: [Errno 28]")):
        with streamed_store(path, "trajectories", {}, "trajectory") as append:
            for _ in range(4):
                append(block)
    assert fingerprint(path) == before and leftovers(tmp_path) == []


def test_a_write_failing_in_the_writer_thread_stops_simulate_and_leaves_nothing(tmp_path, monkeypatch):
    """Batches are written by a writer thread while the next integrates: its failure must
    still stop the stage, with the store's error, and leave no store."""
    disk_fills(monkeypatch)
    out = tmp_path / "train.zarr"
    settings = {"cells": 5, "steps": 20, "save_every": 10, "trajectories": {"train": 3, "test": 1}, "batch_size": 1}
    with pytest.raises(StoreError, match=re.escape(f"store {out}: cannot be written: [Errno 28]")):
        simulate("predator_prey", settings, "train", str(out), device="cpu", progress=False)
    assert leftovers(tmp_path) == [] and not out.exists()


def test_stage_on_a_full_disk_exits_with_the_path(tmp_path, monkeypatch, caplog):
    disk_fills(monkeypatch)
    out = tmp_path / "train.zarr"
    settings = json.dumps({"cells": 5, "steps": 20, "save_every": 10, "trajectories": {"train": 2, "test": 1}})
    code = main(["simulate", "--system", "predator_prey", "--split", "train", "--settings", settings,
                 "--device", "cpu", "--out", str(out), "--no-progress"])
    assert code == 1
    assert f"simulate failed: store {out}: cannot be written: [Errno 28] No space left on device" in caplog.text
    assert list(tmp_path.iterdir()) == []


def without_write_permission_override() -> list[str]:
    """A command prefix under which a read-only folder is read-only even for root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def test_stage_writing_into_a_read_only_folder_exits_with_the_path(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    out = folder / "train.zarr"
    settings = json.dumps({"cells": 5, "steps": 20, "save_every": 10, "trajectories": {"train": 2, "test": 1}})
    command = [*without_write_permission_override(), str(BIN / "macroclosure"), "simulate", "--system", "predator_prey",
               "--split", "train", "--settings", settings, "--device", "cpu", "--out", str(out), "--no-progress"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        folder.chmod(0o755)
    assert result.returncode == 1
    assert f"simulate failed: store {out}: cannot be written: [Errno 13] Permission denied" in result.stderr
    assert list(folder.iterdir()) == []


def test_diverging_simulation_fails_naming_trajectory_and_step_and_writes_no_store(tmp_path):
    config = configured(dt=5.0, steps=20, save_every=5, trajectories={"train": 4, "test": 1})
    train_store = tmp_path / STORES / "train.zarr"
    result = snakemake(tmp_path, config, str(tmp_path / "results/predator_prey/forces/p1/seed0.zarr/zarr.json"))
    assert result.returncode != 0
    log = (tmp_path / "results/logs/predator_prey/simulate_train.log").read_text()
    assert re.search(r"train trajectory \d+ became non-finite at step \d+", log), log[-2000:]
    assert not (train_store / "zarr.json").exists() and leftovers(train_store.parent) == []
    assert not (tmp_path / "results/predator_prey/forces").exists()


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda c: c["systems"].update(navier_stokes={}), "navier_stokes"),
        (lambda c: c["systems"]["predator_prey"]["train"].update(models=["transformer"]), "train.models"),
        (lambda c: c["systems"]["predator_prey"]["train"].update(losses=["L_q"]), "train.losses"),
        (lambda c: c["systems"]["predator_prey"]["sample"].update(fractions=[0.01]), "sample.fractions"),
        (lambda c: c["systems"]["predator_prey"]["simulate"].update(trajectories={"train": 4, "test": 0}),
         "simulate.trajectories.test"),
    ],
    ids=["unknown system", "unknown model", "unknown loss", "p times N below 1", "empty test split"],
)
def test_configuration_that_cannot_work_stops_before_any_job(tmp_path, change, named):
    config = copy.deepcopy(FAST)
    change(config)
    result = snakemake(tmp_path, config)
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr and named in result.stderr
    assert not (tmp_path / "results").exists()
