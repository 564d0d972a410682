#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite. Without CUDA the Triton kernels run under Triton's
# interpreter on the CPU (tests/conftest.py sets TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
