#!/usr/bin/env bash
# Installs the real data the tests and the -cpu presets use offline (only PyPI and Debian needed).
#   scripts/get_offline_data.sh          everything: Fashion-MNIST, the 20 CIFAR-10 test images,
#                                        music21's corpus + fluidsynth and its soundfont (~250 MB)
#   scripts/get_offline_data.sh --lean   only the small ones (Fashion-MNIST 31 MB, foolbox 1.7 MB)
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
if [ $LEAN = 0 ]; then
  $PIP "music21==10.5.1" soundfile
fi
echo "offline data ready ($([ $LEAN = 1 ] && echo lean || echo full))"
