#!/usr/bin/env bash
# Predator-prey, L_x,p at p = 1/5 on 3 000 configurations: the published protocol
# (benchmarks/paper/predator_prey.yaml) with ONE of our earlier settings put back per run,
# to find which difference moves L_x,p most. Each run reuses the protocol run's trajectories
# and closure (identical settings, so identical files) and retrains only what differs.
# Needs the protocol run first; writes benchmarks/paper/ablation/{name}_points.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=results/paper/predator_prey/efficiency/predator_prey/size50
for name in "$@"; do
  folder=results/paper/ablation_$name/efficiency/predator_prey/size50
  mkdir -p "$folder"
  for part in trajectories closure; do
    [ -e "$folder/$part" ] || cp -r "$base/$part" "$folder/$part"
  done
  start=$(date +%s)
  .venv/bin/snakemake --profile workflow/profiles/default --configfile "benchmarks/paper/ablation/$name.yaml" -- efficiency
  echo "$name: $(( $(date +%s) - start )) s wall" | tee -a benchmarks/paper/ablation/wall_times.txt
  cp "results/paper/ablation_$name/efficiency/points.csv" "benchmarks/paper/ablation/${name}_points.csv"
done
