#!/usr/bin/env bash
# Lennard-Jones 800 at equal budget, one latent model after the other: the config
# benchmarks/paper/lennard_jones_800.yaml with `model:` set to each of the given models
# (default: onsager mlp gfinn). All share one results folder, so the trajectories, the closure
# and the force samples are made once; each model adds only its train and evaluate jobs.
# Writes benchmarks/paper/lennard_jones_800_{model}_points.csv and appends wall times.
set -euo pipefail
cd "$(dirname "$0")/../.."
cores=${CORES:-2}
for model in "${@:-onsager mlp gfinn}"; do
  for name in $model; do
    config=results/paper/lennard_jones_800/config_$name.yaml
    mkdir -p "$(dirname "$config")"
    sed "s/^      model: onsager$/      model: $name/" benchmarks/paper/lennard_jones_800.yaml > "$config"
    start=$(date +%s)
    .venv/bin/snakemake --profile workflow/profiles/default --cores "$cores" --configfile "$config" -- efficiency
    echo "$name: $(( $(date +%s) - start )) s wall" | tee -a benchmarks/paper/lennard_jones_800_wall_times.txt
    cp results/paper/lennard_jones_800/efficiency/points.csv "benchmarks/paper/lennard_jones_800_${name}_points.csv"
  done
done
