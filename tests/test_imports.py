"""The package's internal imports form no cycle, counting imports inside functions too,
planning imports none of JAX, jax-md and torch (so `snakemake -n` stays fast), and the stages
that do not integrate MD do not import jax-md (its import alone costs seconds per job)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "macroclosure"


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package's modules that `tree` imports anywhere (`from a import b` counts as a.b where
    a.b is a module, else as a)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported(ast.parse(path.read_text()), modules) - {module_name(path)} for path in paths}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as the list of modules around it, or [] where there is none."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def probe_output(probe: str) -> str:
    """What `probe` prints, run in a fresh interpreter from the repository root (so its imports
    start from nothing)."""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parents[1])
    return result.stdout.strip()


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"macroclosure.config", "macroclosure.planning", "macroclosure.systems"} <= set(graph)
    assert cycle(graph) == []


@pytest.mark.parametrize("module", ["macroclosure.config", "macroclosure.planning", "macroclosure.resources"])
def test_planning_modules_import_no_heavy_package(module):
    """What the Snakefile imports, with the default config validated, loads no JAX or torch."""
    probe = (f"import sys, yaml; import {module}; from macroclosure.config import validate; "
             "validate(yaml.safe_load(open('config.yaml'))); "
             "print(sorted({'jax', 'jax_md', 'torch'} & set(sys.modules)))")
    assert probe_output(probe) == "[]"


def test_building_the_lennard_jones_system_imports_no_jax_md():
    """Closure, train, evaluate and sample jobs build the system for its observables and partial
    forces; importing jax-md runs jitted set-up, so only MD and the reference forces load it."""
    probe = ("import sys; from macroclosure.config import complete_section; "
             "from macroclosure.systems import build_system; "
             "build_system('lennard_jones', complete_section('lennard_jones', 'simulate', {'atoms': 32})); "
             "print('jax_md' in sys.modules)")
    assert probe_output(probe) == "False"
