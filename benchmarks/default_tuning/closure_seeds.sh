#!/usr/bin/env bash
# How much does the closure's draw move a system's rows? One closure serves every latent seed,
# so the spread over `seeds` leaves the closure out. For each closure seed given, runs CONFIG (a
# one-system config, e.g. allen_cahn_mlp.yaml: the default config's Allen-Cahn section, MLP, 3
# seeds) with `closure.seed` changed and OVERLAY (a YAML flow mapping) laid over the system's
# section, on one core, into results/tune/{system}_closure_seed$SEED (NAME base) or
# ..._seed${SEED}_$NAME (any other NAME: it hard-links the base run's trajectories, closure and
# forces, so only what OVERLAY changes reruns).
# Usage: bash benchmarks/default_tuning/closure_seeds.sh CONFIG NAME OVERLAY SEED...
#   e.g. allen_cahn_mlp.yaml base '{}'; then base '{train: {losses: [L_z, L_xp, L_x]}}' (only L_x trains);
#   batch32 '{train: {batch_size: 32}}'. Then closure_seeds.py collects.
set -euo pipefail
cd "$(dirname "$0")/../.."
config=benchmarks/default_tuning/$1 name=$2 overlay_section=$3
shift 3
system=$(.venv/bin/python -c "import yaml; print(next(iter(yaml.safe_load(open('$config'))['systems'])))")
for seed in "$@"; do
  base=results/tune/${system}_closure_seed$seed
  results=$base
  if [ "$name" != base ]; then
    results=${base}_$name
    mkdir -p "$results/$system"
    for part in trajectories closure forces; do
      [ -e "$results/$system/$part" ] || cp -al "$base/$system/$part" "$results/$system/$part"
    done
  fi
  closure=$(mktemp --suffix .yaml) overlay=$(mktemp --suffix .yaml)
  printf 'results: %s\nsystems:\n  %s:\n    closure: {seed: %d}\n' "$results" "$system" "$seed" > "$closure"
  printf 'systems:\n  %s: %s\n' "$system" "$overlay_section" > "$overlay"
  start=$(date +%s)
  .venv/bin/snakemake --profile workflow/profiles/default --cores 1 --configfile "$config" "$closure" "$overlay"
  echo "$results: $(( $(date +%s) - start )) s wall (--cores 1, beside another closure seed; $overlay_section)" \
    | tee -a benchmarks/default_tuning/wall_times.txt
  rm "$closure" "$overlay"
done
