#!/usr/bin/env bash
# Creates .venv with the pinned environment and the package; a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(cat envs/requirements.txt envs/constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f .venv/.installed ] && [ "$(cat .venv/.installed)" = "$stamp" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r envs/requirements.txt -c envs/constraints.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "$stamp" > .venv/.installed
echo "environment ready in .venv"
