#!/usr/bin/env bash
# Peak resident memory of every stage for Allen-Cahn at 200 x 200 (benchmarks/allen_cahn_200.yaml).
# Writes benchmarks/results/allen_cahn_200_memory.tsv: job, wall seconds, max RSS in MB.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/snakemake --profile workflow/profiles/default --configfile benchmarks/allen_cahn_200.yaml
out=benchmarks/results/allen_cahn_200_memory.tsv
{
  printf 'job\twall_s\tmax_rss_mb\n'
  for file in benchmarks/results/allen_cahn_200/benchmarks/allen_cahn/*.tsv; do
    printf '%s\t%s\n' "$(basename "$file" .tsv)" "$(tail -n 1 "$file" | cut -f1,3)"
  done
} > "$out"
cat "$out"
