"""The conda env files build as `snakemake --sdm conda` builds them: from a copy of the file
(`.snakemake/conda/<hash>.yaml`), so every pin sits inside it and nothing is reached by a
relative path; the CPU env holds no CUDA package and the CUDA env holds one CUDA stack."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPOSITORY = Path(__file__).resolve().parents[1]
ENV_FILES = ["macroclosure.yaml", "macroclosure-cuda.yaml"]


def load_conda_envs():
    """envs/conda_envs.py, the script that writes the env files, as a module."""
    spec = importlib.util.spec_from_file_location("conda_envs", REPOSITORY / "envs/conda_envs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conda_envs = load_conda_envs()


def copied_as_snakemake_does(name: str, tmp_path: Path) -> Path:
    """The env file copied where Snakemake builds it from, with its pip section written beside
    it as conda does (`pip install -r` runs on that file, next to the copy)."""
    copy = tmp_path / ".snakemake/conda/0123456789abcdef.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy(REPOSITORY / "envs" / name, copy)
    environment = yaml.safe_load(copy.read_text())
    pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    requirements = copy.parent / "condaenv.0123.requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    return requirements


def pins(requirements: Path) -> dict[str, str]:
    """{normalized name: version} of the pinned lines of a pip requirements file."""
    found = {}
    for line in requirements.read_text().splitlines():
        if not line.startswith("-"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            found[conda_envs.normalized(requirement.name)] = specifier.version
    return found


def test_env_files_are_the_ones_written_from_the_pin_files():
    for path, text in conda_envs.env_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run `python envs/conda_envs.py`"


def test_cuda_stack_was_resolved_under_the_pins_of_today():
    assert conda_envs.recorded_digest() == conda_envs.pins_digest(), (
        "envs/constraints-cuda.txt was resolved under other pins: run `python envs/conda_envs.py --resolve`"
    )


@pytest.mark.parametrize("name", ENV_FILES)
def test_pip_section_pins_every_package_and_reaches_nothing_by_a_relative_path(name, tmp_path):
    requirements = copied_as_snakemake_does(name, tmp_path)
    options = [line for line in requirements.read_text().splitlines() if line.startswith("-")]
    assert set(options) <= {conda_envs.PACKAGE, f"--extra-index-url {conda_envs.CPU_TORCH_INDEX}"}
    assert conda_envs.PACKAGE in options
    found = pins(requirements)
    assert {"torch", "jax", "jaxlib", "snakemake", "setuptools"} <= set(found)
    assert set(conda_envs.read_pins(REPOSITORY / "envs/constraints.txt")) <= set(found)


def test_cpu_env_resolves_from_its_copy_to_the_pinned_environment(tmp_path):
    """pip resolves the copied pip section offline (no index) against the environment that
    envs/setup.sh built from the same pins: only the package itself is left to install."""
    requirements = copied_as_snakemake_does("macroclosure.yaml", tmp_path)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
               "--quiet", "--report", "-", "-r", requirements.name]
    result = subprocess.run(command, cwd=requirements.parent, capture_output=True, text=True,
                            env=os.environ | {"MACROCLOSURE_SOURCE": str(REPOSITORY)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [item["metadata"]["name"] for item in report["install"]] == ["macroclosure"]


def test_cpu_env_holds_no_cuda_package(tmp_path):
    found = pins(copied_as_snakemake_does("macroclosure.yaml", tmp_path))
    assert conda_envs.cuda_majors({name: f"{name}=={v}" for name, v in found.items()}) == set()
    assert not [name for name in found if name.startswith(("nvidia-", "cuda-", "jax-cuda", "triton"))]


def test_cuda_env_holds_one_cuda_stack_with_pypi_torch(tmp_path):
    """The pins pip resolved from PyPI (envs/constraints-cuda.txt, `conda_envs.py --resolve`)
    are all of CUDA 13, which PyPI's torch is built on; no index option swaps torch's build."""
    requirements = copied_as_snakemake_does("macroclosure-cuda.yaml", tmp_path)
    found = pins(requirements)
    assert conda_envs.cuda_majors({name: f"{name}=={v}" for name, v in found.items()}) == {13}
    assert found["torch"] == "2.13.0" and found["cuda-toolkit"].startswith("13.")
    assert found["jax-cuda13-plugin"] == found["jax-cuda13-pjrt"] == found["jax"] == found["jaxlib"]
    assert "--extra-index-url" not in requirements.read_text()


def test_cuda_majors_tells_a_mixed_stack_apart():
    mixed = {"nvidia-cublas-cu12": "nvidia-cublas-cu12==12.8.4.1", "cuda-toolkit": "cuda-toolkit==13.0.3.0",
             "jax-cuda12-plugin": "jax-cuda12-plugin==0.10.2"}
    assert conda_envs.cuda_majors(mixed) == {12, 13}
