"""The README is code: every fenced block of README.md and docs/*.md runs as shown, in
a fresh copy of the checkout (no build/ folder, no .venv; the weights' and compiled
programs' caches are the environment's). Python blocks run in order in one
fresh interpreter, as a reader pastes them; each shell command runs in order, from the
copy's root. A block in a language this test does not know fails it, and so does a
command it cannot run unless :data:`EXCEPTIONS` names it, with the reason."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_copy

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
LANGUAGES = ("python", "bash", "text")  # text: shown, not run (the layout tree)
QUICK_START_WITHIN = 40  # lines: where a newcomer finds the commands
TIMEOUT = 900  # seconds a step may take (the slowest, long context: about 2 minutes)
EXCEPTIONS = {  # a command that cannot run in a test: why, and what covers it
    "./run.sh figures": "a fresh .venv and every figure: CI's figure stage draws them",
    "./run.sh test": "CI itself (.ci/run)",
    "./run.sh lab": "a server waiting for a browser: tests/test_browser.py drives one",
    "./run.sh site": "sets up .venv's site extra; tests/test_site.py builds the site the "
    "same way (site/build.py)",
    "python -m http.server -d build/site --bind 127.0.0.1": "a server that waits for a browser: "
    "tests/test_site.py serves the site it builds so, at a port the system chooses",
    "python -m attn_lib figures": "the whole build: CI's figure stage runs it",
    "python -m attn_lib notebooks": "about 5 minutes: tests/test_notebooks.py re-makes "
    "explore.ipynb so, and nbval re-executes every notebook",
    "python -m attn_lib atlas --source minilm --out /shared/minilm.zarr --coordinator "
    "HOST:PORT --num-processes N --process-id i": "several hosts and a shared file system",
}


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block, in order."""
    return FENCE.findall(text)


def commands(code: str) -> list[str]:
    """The shell commands of a block: continued lines joined, comments and blank lines
    dropped."""
    joined = re.sub(r"\\\n\s*", "", code)
    found = (re.sub(r"\s+#.*$|^#.*$", "", line).strip() for line in joined.splitlines())
    return [command for command in found if command]


def steps(text: str, parts=("python", "bash")) -> tuple[list[str], list[tuple[str, str]]]:
    """What is wrong with ``text``'s fences (a sentence each), and what of ``parts`` it
    runs: ``("python", all its Python blocks)`` and ``("bash", a command)``, in order."""
    found = blocks(text)
    problems = [f"a block in {language or 'no language'!r}: {code[:60]!r}"
                for language, code in found if language not in LANGUAGES]  # fmt: skip
    if (fences := len(re.findall(r"^\s*(```|~~~)", text, re.M))) != 2 * len(found):
        problems.append(f"{fences} fence lines for {len(found)} blocks: a fence this test misses")
    script = "\n".join(code for language, code in found if language == "python")
    todo = [("python", script)] if script and "python" in parts else []
    if "bash" in parts:
        todo += [("bash", command) for language, code in found if language == "bash"
                 for command in commands(code) if command not in EXCEPTIONS]  # fmt: skip
    return problems, todo


def run_steps(todo: list[tuple[str, str]], folder: Path) -> list[str]:
    """What fails when ``todo`` (from :func:`steps`) runs in ``folder``, as a reader's
    shell runs it (the environment's commands first, the copy's library, XLA as users
    have it): a sentence for each."""
    env = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"} | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(folder),
    }
    problems = []
    for part, code in todo:
        if part == "python":
            (folder / "readme_blocks.py").write_text(code)
            run = {"args": [sys.executable, "readme_blocks.py"]}
        else:
            run = {"args": code, "shell": True, "executable": "/bin/bash"}
        name = "the Python blocks" if part == "python" else repr(code)
        try:
            done = subprocess.run(**run, cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT)  # fmt: skip
        except subprocess.TimeoutExpired:
            problems.append(f"{name} did not finish in {TIMEOUT} s")
            continue
        if done.returncode:
            problems.append(f"{name} exit {done.returncode}:\n{done.stderr[-3000:]}")
    return problems


@pytest.mark.parametrize("part", ["python", "bash"])  # apart: two workers can share them
@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_block_runs_as_shown(document, part, tmp_path):
    problems, todo = steps(document.read_text(), (part,))
    assert problems == []
    if todo:  # a copy only where there is something to run
        assert run_steps(todo, fresh_copy(tmp_path)) == []


def test_a_broken_block_fails_and_an_unknown_one_is_refused(tmp_path):
    broken = (
        "```python\nimport flax\nattend = flax.linen.Dense(2)\nprint(nn)\n```\n"
        "```bash\nmkdir -p build\npython -m attn_lib compare build --only no_such_figure\n```\n"
        "```ruby\nputs 1\n```\n"
        "~~~python\nprint('a fence of another kind')\n~~~\n"
    )
    problems, todo = steps(broken)
    assert problems[0].startswith("a block in 'ruby'")
    assert problems[1] == "8 fence lines for 3 blocks: a fence this test misses"
    found = run_steps(todo, fresh_copy(tmp_path))
    assert len(found) == 2 and "NameError: name 'nn' is not defined" in found[0]
    assert found[1].startswith("'python -m attn_lib compare build --only no_such_figure' exit 2")
    # an exception is a whole command: with other arguments, the command runs, and fails
    assert steps("```bash\n./run.sh test   # CI\n```\n") == ([], [])
    wrong = steps("```bash\npython -m attn_lib figures --no-such-flag\n```\n")[1]
    assert run_steps(wrong, tmp_path) != []


def test_commands_are_read_as_a_shell_reads_them():
    code = "# a comment\npapermill a.ipynb b.ipynb \\\n    -p x 1   # trailing\n\nls\n"
    assert commands(code) == ["papermill a.ipynb b.ipynb -p x 1", "ls"]


def test_the_quick_start_comes_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("## Quick start")
    assert start < QUICK_START_WITHIN
    assert "./run.sh figures" in "\n".join(lines[start:QUICK_START_WITHIN])


def tree_modules(text: str) -> set[str]:
    """The modules a layout tree names: ``<folder>/<name>.py`` under each folder line
    (``  models/  …``), top-level ones under ``attn_lib/``."""
    folder, found = "", set()
    for line in text.splitlines():
        if match := re.match(r"  (\w+)/\s", line):
            folder = match[1] + "/"
        elif re.match(r"  \S", line):
            folder = ""
        found |= {folder + name for name in re.findall(r"\b(\w+\.py)\b", line)}
    return found


def test_the_layout_tree_names_every_module_and_only_those():
    tree = next(code for language, code in blocks((ROOT / "docs" / "layout.md").read_text())
                if language == "text")  # fmt: skip
    package = ROOT / "attn_lib"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py")}
    assert tree_modules(tree) == modules
    # the counter-example: a module the tree does not name, and a name that is no module
    assert tree_modules(tree + "  figures/  gone.py\n") - modules == {"figures/gone.py"}
