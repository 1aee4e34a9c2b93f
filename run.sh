#!/usr/bin/env bash
# The project's two entry points, on a machine with Python 3.11 and pip:
#   ./run.sh figures   set up a fresh virtual environment and draw every figure
#   ./run.sh test      set up a fresh virtual environment and pass every test
# Each prints how long every stage took.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}

stage() {  # stage NAME COMMAND...: run a command and report its duration
    local name=$1 start=$SECONDS
    shift
    echo "==> $name"
    "$@"
    echo "<== $name: $((SECONDS - start)) s"
}

setup() {  # setup EXTRAS
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e ".[$1]"
}

figures() {
    stage "set up a fresh environment" setup figures
    stage "draw every figure" env JAX_PLATFORMS=cpu "$VENV/bin/python" -m attn_lib figures
}

test_all() {
    stage "set up a fresh environment" setup test
    stage "lint" "$VENV/bin/ruff" check .
    stage "unit tests" env JAX_PLATFORMS=cpu "$VENV/bin/python" -m pytest -n 2 tests
}

case "${1:-}" in
    figures) figures ;;
    test) test_all ;;
    *) echo "usage: $0 figures|test" >&2; exit 2 ;;
esac
