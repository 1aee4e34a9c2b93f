import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return run.stdout.strip()


def test_the_core_imports_no_plotting_or_papermill():
    loaded = _run(
        "import sys, attn_lib; [getattr(attn_lib, name) for name in attn_lib.__all__]; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'matplotlib', 'papermill'}))"
    )
    assert loaded == "[]"


def test_the_package_loads_jax_only_when_a_name_is_used():
    assert _run("import sys, attn_lib; print('jax' in sys.modules)") == "False"
    assert _run("import sys, attn_lib; attn_lib.sweep; print('jax' in sys.modules)") == "True"


def test_names_are_the_functions_whatever_was_imported_first():
    # Importing a submodule binds its name on the package; an exported function with
    # a submodule's name would then be shadowed by the module.
    shadowed = _run(
        "import importlib, pkgutil, attn_lib; "
        "[importlib.import_module(m.name) for m in "
        " pkgutil.walk_packages(attn_lib.__path__, 'attn_lib.') if m.name != 'attn_lib.__main__']; "
        "print(sorted(n for n in attn_lib.__all__ if n not in ('metrics', 'flax') "
        "             and type(getattr(attn_lib, n)).__name__ == 'module'))"
    )
    assert shadowed == "[]"
    assert "Synthetic" in dir(__import__("attn_lib"))


def test_the_explorer_opens_without_papermill():
    """explore.ipynb's first cell: its defaults come from panels.PANEL_DEFAULTS, not by
    reading the panel notebook through papermill (3.9 s → 2.3 s measured)."""
    loaded = "print(sorted({m.split('.')[0] for m in sys.modules} & {'papermill', 'nbformat'}))"
    explorer = "import sys; from attn_lib.explore import Explorer; Explorer(); "
    assert _run(explorer + loaded) == "[]"
    assert _run("import sys, attn_lib.figures.execute; " + loaded) == "['nbformat', 'papermill']"


def test_the_atlas_contract_refuses_the_figure_build_in_the_atlas(tmp_path):
    # pyproject's import-linter contracts on a copy of the library, as it is and with
    # matplotlib imported by the atlas's store (the counter-example).
    shutil.copytree(REPO / "attn_lib", tmp_path / "attn_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "pyproject.toml", tmp_path)

    def lint():
        command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    assert lint().returncode == 0
    store = tmp_path / "attn_lib" / "analysis" / "atlas_store.py"
    store.write_text("import matplotlib\n" + store.read_text())
    linted = lint()
    assert linted.returncode == 1
    assert "attn_lib.analysis.atlas is not allowed to import matplotlib" in linted.stdout


def test_the_models_load_without_the_output_path():
    # models.base names attn_lib.outputs' Outputs in a signature only (a type, imported
    # when type checking): a model runs without it, and without compute, which it imports.
    loaded = _run(
        "import sys, attn_lib.models; "
        "print(sorted({'attn_lib.outputs', 'attn_lib.compute'} & set(sys.modules)))"
    )
    assert loaded == "[]"
