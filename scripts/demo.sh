#!/usr/bin/env bash
# Sets up .venv and runs the Quickstart job: a small Sparse Transformer trained for about three
# minutes on the embedded Shakespeare corpus on the CPU, then evaluated, sampled and drawn.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${DEMO_OUT:-runs/demo-$(date +%Y%m%d-%H%M%S)}
exec .venv/bin/sparse-transformer train --preset demo --out "$out" "$@"
