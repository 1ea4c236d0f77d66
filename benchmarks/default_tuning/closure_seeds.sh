#!/usr/bin/env bash
# How much does the closure's draw move L_x,p / L_z on Allen-Cahn? One closure serves every
# latent seed, so the spread over `seeds` leaves the closure out. For each closure seed given,
# runs allen_cahn_mlp.yaml (the default config's Allen-Cahn section, MLP, L_z and L_xp, 3 seeds)
# with `closure.seed` changed and TRAIN laid over its train section, on one core, into
# results/tune/allen_cahn_closure_seed$SEED (NAME base) or ..._seed${SEED}_$NAME (any other NAME:
# it hard-links the base run's trajectories, closure and forces, so only training reruns).
# Usage: bash benchmarks/default_tuning/closure_seeds.sh NAME 'TRAIN' SEED...
#   e.g. NAME base, TRAIN 'losses: [L_z, L_xp]'; base, 'losses: [L_z, L_xp, L_x]' (only L_x trains);
#   batch32, 'batch_size: 32'. Then closure_seeds.py collects.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1 train=$2
shift 2
for seed in "$@"; do
  base=results/tune/allen_cahn_closure_seed$seed
  results=$base
  if [ "$name" != base ]; then
    results=${base}_$name
    mkdir -p "$results/allen_cahn"
    for part in trajectories closure forces; do
      [ -e "$results/allen_cahn/$part" ] || cp -al "$base/allen_cahn/$part" "$results/allen_cahn/$part"
    done
  fi
  overlay=$(mktemp --suffix .yaml)
  printf 'results: %s\nsystems:\n  allen_cahn:\n    closure: {seed: %d}\n    train: {%s}\n' \
    "$results" "$seed" "$train" > "$overlay"
  start=$(date +%s)
  .venv/bin/snakemake --profile workflow/profiles/default --cores 1 \
    --configfile benchmarks/default_tuning/allen_cahn_mlp.yaml "$overlay"
  echo "$results: $(( $(date +%s) - start )) s wall (--cores 1, beside another closure seed; train {$train})" \
    | tee -a benchmarks/default_tuning/wall_times.txt
  rm "$overlay"
done
