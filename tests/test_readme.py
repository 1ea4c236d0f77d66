"""The README stands alone: every repository path it names exists, and no link leaves the repository."""

from __future__ import annotations

import re

from conftest import REPOSITORY

README = (REPOSITORY / "README.md").read_text()
OUTPUTS = ("results/", "benchmarks/results/", ".venv/", ".snakemake/")  # made by running, not in a clone
PARENT = re.compile(r"(?<!\.)\.\./")  # a path up and out (an ellipsis ".../" is not one)
TOP_LEVEL = {path.name for path in REPOSITORY.iterdir()} - {".venv", "results", ".snakemake", ".git"}


def link_targets(text: str) -> list[str]:
    """Targets of Markdown links and images: `[text](target)`."""
    return re.findall(r"\]\(([^)\s]+)\)", text)


def named_paths(text: str) -> set[str]:
    """Repository paths in code spans and blocks: words whose first component is a top-level entry of the
    repository (templates with {…}, <…> or * and outputs of a run left out)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL))
    words = {word.strip(",;:()'\"").rstrip(".") for span in blocks + inline for word in span.split()}
    return {word for word in words
            if word.split("/")[0] in TOP_LEVEL and not re.search(r"[{}<>*$]", word) and not word.startswith(OUTPUTS)}


def test_every_path_the_readme_names_exists():
    paths = named_paths(README) | set(link_targets(README))
    assert {"docs/method.md", "docs/design.md", "docs/pipeline.png", "LICENSE"} <= paths
    missing = sorted(path for path in paths if not (REPOSITORY / path.split("#")[0]).exists())
    assert missing == []


def test_no_link_or_path_leaves_the_repository():
    assert not PARENT.search(README)
    for target in link_targets(README):
        assert not re.match(r"[a-z]+:|/", target), target
        assert (REPOSITORY / target).resolve().is_relative_to(REPOSITORY), target


def test_the_docs_the_readme_sends_readers_to_stand_alone_too():
    for page in ("docs/method.md", "docs/design.md"):
        text = (REPOSITORY / page).read_text()
        assert "shared/" not in text and not PARENT.search(text), page
        for target in link_targets(text):
            assert (REPOSITORY / page).parent.joinpath(target).exists(), (page, target)
