#!/usr/bin/env bash
# Creates .venv (if missing) and installs the package with what the tests need.
# On a machine without torch it installs the CPU build torch==2.13.0 first, so that pip does not
# pull a multi-GB CUDA build; a machine that already has torch in .venv keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import sparse_transformer, torch; print('sparse_transformer', sparse_transformer.__version__, '| torch', torch.__version__)"
# Small real data for the tests (Fashion-MNIST, 20 CIFAR-10 images); tests skip what is missing.
scripts/get_offline_data.sh --lean || echo "warning: offline test data not installed" >&2
