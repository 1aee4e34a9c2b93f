"""Specs from others, corrupt caches and interrupted runs: nothing outside ``--out`` and
``build/`` is written or deleted, nothing bad is trusted, and every refusal says why."""

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from attn_lib import __main__ as cli
from attn_lib.figures import execute, jobs, runner
from attn_lib.figures.spec import load_spec, panel_grid


def _spec(tmp_path, rows=None, columns=None, **entry):
    spec = {
        "tiny": {
            "caption": "tiny",
            "panel": {"kind": "scale", "seq_len": 4},
            "rows": rows or [{"name": "query", "component": "query"}],
            "columns": columns or [{"name": "a", "epsilon": 0.5}],
            **entry,
        }
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BUILD", tmp_path / "build")
    return tmp_path / "build"


@pytest.fixture(scope="session")
def drawn_once(tmp_path_factory):
    """A tiny figure of two panels drawn once: its spec, its ``out`` folder, its files'
    bytes and their permission bits as the runner left them."""
    folder = tmp_path_factory.mktemp("drawn")
    columns = [{"name": "a", "epsilon": 0.5}, {"name": "b", "epsilon": 0.1}]
    spec, out = _spec(folder, columns=columns), folder / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "BUILD", folder / "build")
        assert runner.run(spec, out=out, jobs=2) == 0
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    return spec, out, _files(out), modes


@pytest.fixture
def drawn(drawn_once, build):
    """:func:`drawn_once`'s ``out`` folder as the runner left it (restored byte for byte
    before each test: the records name that folder, so it cannot move), its spec and
    its files' bytes."""
    spec, out, files, _ = drawn_once
    shutil.rmtree(out)
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    return spec, out, files


# 1. Names reach the filesystem only as plain stems inside --out.


@pytest.mark.parametrize(
    "name", ["/tmp/v/v", "../../victim", "a/b", "..", ".hidden", "x\n", "a.png", "", 7]
)
def test_a_name_that_is_not_a_plain_stem_is_refused_before_anything_runs(tmp_path, build, name):
    victim = tmp_path / "victim_a.npz"
    victim.write_text("precious")
    spec = _spec(tmp_path, rows=[{"name": name, "component": "query"}])
    with pytest.raises(ValueError, match="a name in 'rows' must be letters, digits"):
        runner.run(spec, out=tmp_path / "out")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out").exists() and not build.exists()


def test_a_figure_folder_linked_outside_out_is_refused(tmp_path, build):
    outside, out = tmp_path / "elsewhere", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / "tiny").symlink_to(outside)
    with pytest.raises(ValueError, match="is not inside"):
        runner.run(_spec(tmp_path), out=out)
    assert not any(outside.iterdir())


def test_check_inside():
    from pathlib import Path

    assert jobs.check_inside(Path("/a/b/c"), Path("/a/b")) == Path("/a/b/c")
    with pytest.raises(ValueError, match="is not inside /a/b"):
        jobs.check_inside(Path("/a/b/../x"), Path("/a/b"))


# 3. Corrupt outputs are re-made; a failed or killed re-run keeps the good ones.


@pytest.mark.parametrize(
    ("damaged", "damage"),
    [
        ("tiny/query_a.npz", lambda p: p.write_bytes(p.read_bytes()[:100])),  # truncated
        ("tiny/query_a.png", lambda p: p.write_bytes(b"")),  # emptied
        ("tiny/query_a.json", lambda p: p.write_text("{not json")),  # a corrupt record
        ("tiny.png", lambda p: p.write_bytes(p.read_bytes()[:-1] + b"!")),  # one byte
    ],
)
def test_a_corrupt_output_or_record_is_made_again(drawn, damaged, damage, capsys):
    spec, out, before = drawn
    damage(out / damaged)
    assert runner.run(spec, out=out, jobs=2) == 0
    assert _files(out) == before
    stdout = capsys.readouterr().out
    assert "1 ran" in stdout, stdout  # the grid's inputs are the same bytes again


def test_a_failed_rerun_keeps_the_previous_outputs(drawn, monkeypatch, capsys):
    spec, out, before = drawn
    run_notebook = execute.execute

    def half_then_fail(job, build):
        run_notebook(job, build)  # every file written to the stage ...
        raise RuntimeError("the kernel died")  # ... and then the notebook failed

    monkeypatch.setattr(execute, "execute", half_then_fail)
    assert runner.run(spec, out=out, jobs=2, force=True) == 1
    assert "FAILED tiny/query_a: RuntimeError: the kernel died" in capsys.readouterr().err
    assert _files(out) == before


def _runner_command(spec, out, *extra):
    return [sys.executable, "-m", "attn_lib", "figures", "--spec", str(spec), "--out", str(out)]


def _wait_for(predicate, what, limit=120):
    deadline = time.monotonic() + limit  # a guard against hanging, not a timing check
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_a_killed_forced_run_keeps_every_previous_file(drawn):
    spec, out, before = drawn
    command = [*_runner_command(spec, out), "--force", "--jobs", "1"]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    stage = out / jobs.STAGING / "tiny"
    _wait_for(lambda: any(stage.glob("*/*.npz")), "a staged panel")
    os.killpg(process.pid, signal.SIGKILL)  # the runner and its kernels, mid-write
    process.wait()

    def kept(files):  # the lock and the killed run's stage aside
        return {name: data for name, data in files.items() if not name.startswith(".")}

    assert kept(_files(out)) == kept(before)


# 4, 5. The spec is strict YAML with unique names.


def test_an_alias_bomb_is_refused_at_once_without_expanding_it(tmp_path):
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 11)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bomb.yaml: not a valid spec: an alias \(\*a0\)") as info:
        load_spec(path)
    assert len(str(info.value)) < 500


def test_a_huge_spec_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = _spec(tmp_path)
    monkeypatch.setattr("attn_lib.figures.spec.MAX_SPEC_BYTES", 100)
    with pytest.raises(ValueError, match="bytes; a spec may have at most 100"):
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("x:\n  caption: c\n  caption: d\n", "duplicate key 'caption'"),
        ("x: !!python/object/apply:os.system [true]\n", "could not determine a constructor"),
        ("x: [1\n", "expected ',' or ']'"),
    ],
)
def test_yaml_that_is_not_strict_is_refused(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        ([{"name": "q"}, {"name": "q"}], None, r"rows named \['q'\] more than once"),
        (None, [{"name": "a"}, {"name": "a"}], r"columns named \['a'\] more than once"),
        (
            [{"name": "a_b"}, {"name": "a"}],
            [{"name": "c"}, {"name": "b_c"}],
            r"panels named \['a_b_c'\] more than once",
        ),
    ],
)
def test_duplicate_names_are_refused_naming_the_duplicate(tmp_path, rows, columns, message):
    with pytest.raises(ValueError, match=message):
        load_spec(_spec(tmp_path, rows=rows, columns=columns))


def test_a_brace_in_a_title_or_label_is_refused_before_any_kernel(tmp_path, build, monkeypatch):
    monkeypatch.setattr(execute, "execute", lambda job, build: pytest.fail("a kernel started"))
    with pytest.raises(ValueError, match=r"tiny/query_a: title .* is not a valid template"):
        runner.run(_spec(tmp_path, title="Modifying {Component} {"), out=tmp_path / "out")
    with pytest.raises(ValueError, match=r"title .*\{nope\}.* is not a valid template"):
        runner.run(_spec(tmp_path, title="{nope}"), out=tmp_path / "out")
    # A label is text: its braces are shown, never formatted.
    rows = [{"name": "query", "component": "query", "label": "{x}"}]
    spec = load_spec(_spec(tmp_path, rows=rows, title="In ({label})"))
    [[(_, params)]] = panel_grid(spec, "tiny")
    assert params["title"].format() == "In ({x})"


# 6, 7. Ctrl-C stops a run; two runners never share a folder.


def test_ctrl_c_cancels_the_queue_and_prints_the_summary(tmp_path):
    columns = [{"name": f"e{i}", "epsilon": 10.0**-i} for i in range(6)]
    spec, out = _spec(tmp_path, columns=columns), tmp_path / "out"
    # As at a terminal: a shell without job control starts background commands with
    # SIGINT ignored, and the runner would inherit that (CI may start us so). A handled
    # signal is reset to the default in a child, where Python makes it KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [*_runner_command(spec, out), "--jobs", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    _wait_for(lambda: any(out.glob("tiny/*.json")), "the first panel")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    done = len(list(out.glob("tiny/*.json")))
    assert 1 <= done < 6, "the queued panels were cancelled"
    assert f"7 notebooks: {done} ran, 0 up to date, 0 failed, {7 - done} not run" in stdout
    assert not (out / jobs.STAGING).exists()


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path, build):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / runner.LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running runner holds it
        with pytest.raises(ValueError, match="another runner is drawing into"):
            runner.run(_spec(tmp_path), out=out)
    assert runner.run(_spec(tmp_path), out=out) == 0  # released: the next one runs


# 10. The command line says "error:" and why, never a traceback.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["figures", "--spec", "missing.yaml"], "error: spec .*missing.yaml: No such file"),
        (["figures", "--jobs", "0"], "error: --jobs must be an integer >= 1, got 0"),
        (["compare", "x", "--spec", "missing.yaml"], "error: spec .*missing.yaml: No such"),
    ],
)
def test_the_command_line_refuses_with_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.match(message, err), err


def test_outputs_get_the_permissions_of_the_umask(drawn_once):
    *_, modes = drawn_once
    umask = os.umask(0)
    os.umask(umask)
    for name in ["tiny.png", "tiny/query_a.npz", "tiny/grid.json"]:
        assert modes[name] == 0o666 & ~umask, name


def test_a_record_holds_each_outputs_hash(drawn_once):
    _, _, files, _ = drawn_once
    record = json.loads(files["tiny/query_a.json"])
    assert set(record["outputs"]) == {"query_a.npz", "query_a.png", "query_a.pdf"}
    assert record["outputs"]["query_a.png"]["size"] == len(files["tiny/query_a.png"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"notebook": "../report", "outputs": ["a"]}, "notebook must be letters"),
        ({"notebook": "nowhere", "outputs": ["a"]}, r"there is no notebooks/nowhere\.ipynb"),
        ({"notebook": "report", "outputs": ["/tmp/x"]}, "an output must be letters"),
        ({"notebook": "report", "outputs": ["a", "a"]}, r"outputs named \['a'\] more than once"),
        ({"notebook": "report", "outputs": []}, "needs 'outputs'"),
        ({"notebook": "report", "outputs": ["a"], "rows": []}, r"not \['rows'\]"),
        ({"notebook": "report", "outputs": ["a"], "data": "a"}, "'data' must be a list"),
        ({"notebook": "report", "outputs": ["a"], "data": ["../a"]}, "a data file must be"),
        ({"notebook": "report", "outputs": ["a"], "data": ["b", "b"]}, r"data named \['b'\]"),
    ],
)
def test_a_bad_notebook_figure_is_refused(tmp_path, entry, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"nb": {"caption": "c", **entry}}))
    with pytest.raises(ValueError, match=message):
        load_spec(path)


# 8. A title template is plain field names with at most a precision and a type.


@pytest.mark.parametrize(
    ("title", "why"),
    [
        ("{eps:>2000000000}", r"the format '>2000000000'"),
        ("{eps:>1000000}", r"the format '>1000000'"),
        ("{seed.__class__.__init__}", r"unknown field 'seed.__class__.__init__'"),
        ("{eps!r}", r"the format '!r'"),
        ("{eps:{seed}}", r"the format '\{seed\}'"),
        ("x" * 201, r"201 characters, at most 200"),
    ],
)
def test_a_title_beyond_plain_fields_is_refused_before_any_kernel(
    tmp_path, build, monkeypatch, title, why
):
    monkeypatch.setattr(execute, "execute", lambda job, build: pytest.fail("a kernel started"))
    with pytest.raises(ValueError, match=r"title .* is not a valid template \(" + why):
        runner.run(_spec(tmp_path, title=title), out=tmp_path / "out")


def test_a_title_must_render_short_and_fit_its_values():
    from attn_lib.figures.panels import PANEL_DEFAULTS, validate_panel_parameters

    assert validate_panel_parameters({**PANEL_DEFAULTS, "title": "{epsilon:.1e} {seed:d}"})
    with pytest.raises(ValueError, match=r"title '\{eps:d\}' cannot be drawn: Unknown format"):
        validate_panel_parameters({**PANEL_DEFAULTS, "title": "{eps:d}"})
    with pytest.raises(ValueError, match=r"title renders to 2\d\d characters; at most 200"):
        validate_panel_parameters(
            {**PANEL_DEFAULTS, "title": "{output_dir}" * 3, "output_dir": "d" * 90}
        )


# 10. A seed is what jax.random.key keeps: 32 bits.


@pytest.mark.parametrize("seed", [2**32, 2**64, -1])
def test_a_seed_beyond_32_bits_is_refused_by_name(seed):
    from attn_lib import Modification
    from attn_lib.figures.panels import PANEL_DEFAULTS, validate_panel_parameters

    message = rf"seed must be an integer in \[0, 4294967295\], got {seed}"
    with pytest.raises(ValueError, match=message):
        validate_panel_parameters({**PANEL_DEFAULTS, "seed": seed})
    with pytest.raises(ValueError, match=message):
        Modification("query", "noise", 0.5, seed=seed)
    assert Modification("query", "noise", 0.5, seed=2**32 - 1).seed == 2**32 - 1


# 13. Tokens and titles are text, never mathtext.


def test_dollar_tokens_and_titles_are_drawn_as_they_are(tmp_path):
    import numpy as np

    from attn_lib.figures import plot

    tokens = ["$$", "a$b", "$x^2$", r"\frac"]
    panel = {"weights": np.eye(4), "tokens": tokens, "title": "cost: $5 $$",
             "masked": np.zeros((4, 4), bool)}  # fmt: skip
    fig = plot.panel_figure(panel)
    plot.save(fig, tmp_path / "panel", ("png", "pdf", "svg"))
    fig.draw_without_rendering()  # a mathtext parse error would raise here
    ax = fig.axes[0]
    shown = [label._preprocess_math(label.get_text()) for label in ax.get_xticklabels()]
    assert shown == [(token, False) for token in tokens]  # literal, not mathtext
    assert ax.title._preprocess_math(ax.get_title()) == ("cost: $5 $$", False)
