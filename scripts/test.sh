#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (Triton kernels run under TRITON_INTERPRET=1 on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
exec .venv/bin/python -m pytest -q "$@"
