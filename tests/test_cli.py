"""The command line, ``python -m attn_lib``, called from Python: ``main(argv)``."""

from attn_lib.__main__ import main
from attn_lib.analysis import atlas


def test_the_atlas_command_reads_its_source_options_from_a_tuple_argv(tmp_path, monkeypatch):
    """A tuple is an argv as a list is: the atlas's options for its source's parameters
    (added for the atlas command only) are read from it."""
    given = []  # what the command gives the atlas (its work is tested elsewhere)
    summary = dict.fromkeys(("settings", "chunks_now", "chunks_before", "seconds", "bytes"), 0)
    summary |= {"maps_per_second": 0, "store": "a.zarr"}
    monkeypatch.setattr(atlas, "build", lambda *a, **k: given.append(k["parameters"]) or summary)
    out = str(tmp_path / "a.zarr")
    for argv in (
        ["atlas", "--source", "synthetic", "--seq-len", "5", "--causal", "--out", out],
        ("atlas", "--source", "synthetic", "--seq-len", "5", "--causal", "--out", out),
    ):
        assert main(argv) == 0
    assert given[0] == given[1]
    assert given[1]["seq_len"] == 5 and given[1]["causal"] is True
