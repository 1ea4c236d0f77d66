"""Project hygiene: licence, citation, changelog, one version everywhere, Snakemake's minimum."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import snakemake
import yaml

from conftest import REPOSITORY
from macroclosure import __version__


def latest_changelog_version() -> str:
    """The version of the newest `## [x.y.z]` entry of CHANGELOG.md."""
    return re.search(r"^## \[([^\]]+)\]", (REPOSITORY / "CHANGELOG.md").read_text(), re.MULTILINE).group(1)


def test_one_version_in_the_changelog_the_package_the_metadata_and_the_citation():
    metadata = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((REPOSITORY / "CITATION.cff").read_text())
    assert latest_changelog_version() == __version__ == metadata["version"] == citation["version"]


def test_the_command_line_reports_the_changelog_version():
    shown = subprocess.run([sys.executable, "-m", "macroclosure.cli", "--version"], capture_output=True, text=True)
    assert shown.stdout.strip() == f"macroclosure {latest_changelog_version()}"


def test_the_licence_is_mit_and_the_citation_names_it_and_the_paper():
    assert (REPOSITORY / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((REPOSITORY / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    paper = citation["preferred-citation"]
    assert paper["title"] == "Learning macroscopic dynamics from partial microscopic observations"
    assert [author["family-names"] for author in paper["authors"]] == ["Chen", "Li"]


def test_the_snakefile_asks_for_the_installed_snakemake_minor_version():
    wanted = re.search(r'^min_version\("([^"]+)"\)', (REPOSITORY / "Snakefile").read_text(), re.MULTILINE).group(1)
    assert wanted == ".".join(snakemake.__version__.split(".")[:2])
