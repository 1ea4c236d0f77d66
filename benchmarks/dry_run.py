"""Benchmark: wall and CPU time of `snakemake -n` on the default config.

    .venv/bin/python benchmarks/dry_run.py [--workflow DIR] [--pythonpath DIR] [--repeats 3]

Two cases, each timed `--repeats` times on a results folder of its own under a temporary
folder: a fresh one (the dry run plans all 161 jobs), and one where every job is done
(nothing to do, what #14 asks to be at most 5 s). A complete default run takes half an hour
on this 2-core CPU, so the "done" folder is made the way Snakemake itself marks finished
outputs: every output the fresh dry run lists is created empty (a folder for a store) and
`snakemake --touch` dates them in job order. `--workflow` and `--pythonpath` time another
checkout (for the before/after comparison: an exported older commit and its `src`). The
machine is shared, so each line records the load average at its start. Prints a Markdown
table (benchmarks/dry_run.md records the results).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
OUTPUT = re.compile(r"^    output: (.+)$", re.MULTILINE)


def snakemake(workflow: Path, results: Path, pythonpath: str | None, *arguments: str) -> subprocess.CompletedProcess:
    """Snakemake on `workflow`'s Snakefile and config.yaml, its outputs under `results`."""
    environment = os.environ | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    command = [str(SNAKEMAKE), "--snakefile", str(workflow / "Snakefile"), "--directory", str(workflow),
               "--cores", "2", *arguments, "--config", f"results={results}"]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=environment)


def timed(workflow: Path, results: Path, pythonpath: str | None) -> dict:
    """Wall and CPU seconds (user + system, of Snakemake and its children) of one dry run,
    the 1-minute load average before it and the jobs it planned."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = snakemake(workflow, results, pythonpath, "-n")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    planned = re.search(r"^total\s+(\d+)", result.stdout, re.MULTILINE)
    return {"wall": wall, "cpu": cpu, "load": load, "jobs": int(planned[1]) if planned else 0}


def mark_done(workflow: Path, results: Path, pythonpath: str | None) -> None:
    """Every output of the default target created empty and dated in job order, so that a
    dry run finds nothing to do."""
    listing = snakemake(workflow, results, pythonpath, "-n").stdout
    for line in OUTPUT.findall(listing):
        for output in line.split(", "):
            path = Path(output)
            if path.suffix == ".zarr" or path.parent.name == "dynamics" or path.name == "closure":
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    snakemake(workflow, results, pythonpath, "--touch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", type=Path, default=REPOSITORY, help="folder of the Snakefile and config.yaml")
    parser.add_argument("--pythonpath", help="PYTHONPATH of the runs (another checkout's src)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fresh, done = Path(folder) / "fresh", Path(folder) / "done"
        mark_done(args.workflow, done, args.pythonpath)
        print("| case | jobs planned | wall s | CPU s | load average (1 min) |\n|---|---|---|---|---|")
        for case, results in (("fresh results folder", fresh), ("every job done", done)):
            for _ in range(args.repeats):
                run = timed(args.workflow, results, args.pythonpath)
                print(f"| {case} | {run['jobs']} | {run['wall']:.2f} | {run['cpu']:.2f} | {run['load']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
