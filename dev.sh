#!/usr/bin/env bash
# One entry point for people and CI.
#   ./dev.sh demo   set up .venv, then open JupyterLab on demo_notebooks/quickstart.ipynb
#   ./dev.sh test   set up .venv, run the static checks, then the whole test suite (pytest)
#   ./dev.sh check  set up .venv, then only the static checks
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  python -m pip install -q --upgrade pip
  if ! python -c "import torch" 2>/dev/null; then
    # Keep a CUDA torch the user already has; without a GPU take the CPU build, never a
    # multi-GB CUDA wheel (torch==2.13.0 is the CPU build available on this kind of machine).
    if command -v nvidia-smi >/dev/null 2>&1; then
      python -m pip install -q torch
    else
      python -m pip install -q "torch==2.13.0"
    fi
  fi
  python -m pip install -q -e ".[test]"
}

checks() {
  # What reviewers check by hand: lint, format and types on both sides, and the generated protocol.
  ruff check .
  ruff format --check .
  mypy
  python labextension/scripts/generate_protocol.py --check
  (cd labextension && { [ -d node_modules ] || jlpm install; } && jlpm run check)
}

browser() {
  # The browser tests drive Debian's Chromium; install it where we may.
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}

case "${1:-}" in
  demo)
    setup
    exec jupyter lab --ip=127.0.0.1 demo_notebooks/quickstart.ipynb
    ;;
  check)
    setup
    checks
    ;;
  test)
    setup
    checks
    browser
    shift
    exec python -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | check | test [pytest args]" >&2
    exit 2
    ;;
esac
