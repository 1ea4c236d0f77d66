"""Training histories (one row per epoch) as CSV, read back for the loss-curve figures."""

from __future__ import annotations

import csv
from pathlib import Path


def write_history(history: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Columns of a history file as lists of floats."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [float(row[name]) for row in rows] for name in rows[0]}
