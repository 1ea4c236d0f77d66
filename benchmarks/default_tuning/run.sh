#!/usr/bin/env bash
# Default-config tuning, one change at a time: each benchmarks/default_tuning/{name}.yaml is the
# default config.yaml's section of one system (2 seeds, L_z and L_xp) with one change. Every
# variant of a system reuses the `base` variant's trajectories and closure (identical settings,
# so identical files) and retrains only what the change touches.
# Usage: bash benchmarks/default_tuning/run.sh NAME...   (base first; writes NAME_summary.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
for name in "$@"; do
  config=benchmarks/default_tuning/$name.yaml
  results=$(.venv/bin/python -c "import yaml,sys; print(yaml.safe_load(open('$config'))['results'])")
  system=$(.venv/bin/python -c "import yaml,sys; print(next(iter(yaml.safe_load(open('$config'))['systems'])))")
  base=results/tune/${system}_base/$system
  if [ "$results" != "results/tune/${system}_base" ]; then
    mkdir -p "$results/$system"
    for part in trajectories closure; do
      [ -e "$results/$system/$part" ] || cp -r "$base/$part" "$results/$system/$part"
    done
  fi
  start=$(date +%s)
  .venv/bin/snakemake --profile workflow/profiles/default --cores "${CORES:-2}" --configfile "$config"
  echo "$name: $(( $(date +%s) - start )) s wall" | tee -a benchmarks/default_tuning/wall_times.txt
  cp "$results/report/summary.md" "benchmarks/default_tuning/${name}_summary.md"
done
