"""The checkpoint contract: what a config or a GGUF's metadata may say (the allow-lists of
``attn_lib.models.allowlists``), and the files and tensors a checkpoint may hold. Every
refusal names the file, the key or tensor and what is allowed, before any weight is read,
and a hostile declared size costs neither time nor memory."""

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest
from test_load import write_llama_gguf

from attn_lib import models
from attn_lib.models import contract, hf_files, hf_folder

FAMILIES = Path(__file__).parent / "reference" / "families"


@pytest.fixture
def no_weights(monkeypatch):
    """Fail a test that reads a tensor: every refusal here comes before the weights."""

    def read_tensors(*args):
        pytest.fail("a tensor was read before the refusal")

    monkeypatch.setattr(hf_files, "read_tensors", read_tensors)
    monkeypatch.setattr(hf_folder, "read_tensors", read_tensors)


def folder_with(tmp_path, case: str, **changes):
    """A copy of the reference checkpoint ``case`` whose config.json has ``changes``
    (None: the key removed)."""
    folder = shutil.copytree(FAMILIES / case, tmp_path / case)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    config = {key: value for key, value in config.items() if value is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# (reference checkpoint, config.json changes, what the refusal says)
REFUSED = {
    "a key no list has": ("llama", {"quantization_config": {"bits": 4}},
                          r"'quantization_config' is not a key this library reads"),
    "partial rotation": ("llama", {"partial_rotary_factor": 0.5},
                         r"partial_rotary_factor=0\.5 is not supported \(supported: 1\.0\)"),
    "a partial rotation in the RoPE dict": (
        "llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                      "partial_rotary_factor": 0.25}},
        r"rope_parameters: partial_rotary_factor=0\.25 is not supported"),
    **{f"rope_type {kind}": ("llama", {"rope_parameters": {"rope_type": kind, "factor": 2.0}},
                             rf'rope_parameters\.rope_type="{kind}" is not supported')
       for kind in ("yarn", "dynamic", "longrope")},
    "transformers 4's rope type": ("llama", {"rope_parameters": None, "rope_theta": 1e4,
                                             "rope_scaling": {"type": "dynamic", "factor": 2.0}},
                                   r'rope_scaling\.rope_type="dynamic" is not supported'),
    "a linear RoPE without its factor": ("llama", {"rope_parameters": {"rope_type": "linear"}},
                                         r"rope_parameters lacks 'factor'"),
    "an activation not computed": ("llama", {"hidden_act": "relu"},
                                   r'hidden_act="relu" is not supported \(supported: "silu"'),
    "an interleaved rotation": ("llama", {"rope_interleaved": True},
                                r"rope_interleaved=true is not supported \(supported: false\)"),
    "an encoder-decoder": ("qwen2", {"is_encoder_decoder": True}, r"is_encoder_decoder=true"),
    "a bidirectional Gemma": ("gemma3", {"use_bidirectional_attention": True},
                              r"use_bidirectional_attention=true is not supported"),
    "GPT-2 scaled by layer": ("gpt2", {"scale_attn_by_inverse_layer_idx": True},
                              r"scale_attn_by_inverse_layer_idx=true is not supported"),
    "GPT-2 unscaled": ("gpt2", {"scale_attn_weights": False}, r"scale_attn_weights=false"),
    "a layer count as a string": ("llama", {"num_hidden_layers": "2"},
                                  r'num_hidden_layers="2": num_hidden_layers must be an integer '
                                  r"in \[1, 1024\]"),
    "a layer count as a float": ("llama", {"num_hidden_layers": 2.0}, r"num_hidden_layers=2\.0"),
    "a layer count as a bool": ("llama", {"num_hidden_layers": True}, r"num_hidden_layers=true"),
    "no layers": ("llama", {"num_hidden_layers": 0}, r"num_hidden_layers=0"),
    "negative layers": ("llama", {"num_hidden_layers": -3}, r"num_hidden_layers=-3"),
    "1e8 layers": ("llama", {"num_hidden_layers": 100_000_000}, r"num_hidden_layers=100000000"),
    "no heads": ("llama", {"num_attention_heads": 0}, r"num_attention_heads=0"),
    "GPT-2's n_embd of 1e6": ("gpt2", {"n_embd": 1_000_000},
                              r"n_embd=1000000: n_embd must be an integer in \[1, 131072\]"),
    "heads not a multiple of KV heads": ("llama", {"num_key_value_heads": 3},
                                         r"num_attention_heads=4 is not a multiple of "
                                         r"num_key_value_heads=3"),
    "a NaN epsilon": ("llama", {"rms_norm_eps": float("nan")},
                      r"rms_norm_eps=NaN: rms_norm_eps must be a finite number > 0"),
    "a negative RoPE base": ("llama", {"rope_parameters": {"rope_theta": -1e4}},
                             r"rope_theta=-10000\.0: rope_theta must be a finite number > 0"),
    "an infinite soft-cap": ("gemma2", {"attn_logit_softcapping": float("inf")},
                             r"attn_logit_softcapping=Infinity"),
    "layer types of another length": ("gemma3", {"layer_types": ["full_attention"]},
                                      r"layer_types has 1 entries, not num_hidden_layers=2"),
    "a list model_type": ("llama", {"model_type": ["llama"]},
                          r"model_type \['llama'\] is not supported"),
}  # fmt: skip


@pytest.mark.parametrize("what", REFUSED)
def test_a_config_the_library_cannot_compute_is_refused_by_name(tmp_path, no_weights, what):
    case, changes, message = REFUSED[what]
    folder = folder_with(tmp_path, case, **changes)
    with pytest.raises(ValueError, match=message) as refused:
        models.entry(str(folder))  # the shape, read first, refuses it
    assert str(refused.value).startswith(str(folder))
    with pytest.raises(ValueError, match=message):
        models.load(folder, text="the cat")


@pytest.mark.parametrize(
    ("case", "changes", "tensor"),
    [
        ("llama_bias", {"attention_bias": False}, r"self_attn\.[a-z_]+\.bias"),
        ("llama_bias", {"mlp_bias": False}, r"mlp\.[a-z_]+\.bias"),
        ("llama", {"num_hidden_layers": 1}, r"model\.layers\.1\."),
    ],
)
def test_a_tensor_the_config_does_not_account_for_is_refused(tmp_path, no_weights, case, changes,
                                                           tensor):  # fmt: skip
    """The checkpoint of transformers' own Llama with biases, read with attention_bias
    (or mlp_bias) left out, was computed anyway: maps 0.8 off. Now the biases it does
    not read are named."""
    folder = folder_with(tmp_path, case, **changes)
    with pytest.raises(ValueError, match=rf"tensor \S*{tensor}\S* is not read by this library"):
        models.load(folder, text="the cat")


def test_a_declared_size_is_refused_before_memory_grows_with_it(tmp_path):
    """1e8 layers once took 3.6 GB and 45 s before a MemoryError; a 1e9-block GGUF
    raised MemoryError in models.entry. Both are refused at the bound, allocating little."""
    folder = folder_with(tmp_path, "llama", num_hidden_layers=100_000_000)
    gguf = write_llama_gguf(tmp_path / "huge.gguf", metadata={"block_count": 1_000_000_000})
    for path, key in ((folder, "num_hidden_layers"), (gguf, r"llama\.block_count")):
        tracemalloc.start()
        try:
            with pytest.raises(
                ValueError, match=rf"{key}=\d+: .* must be an integer in \[1, 1024\]"
            ):
                models.entry(str(path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 << 20, f"{path.name}: {peak >> 20} MiB traced"


def _index(folder, weight_map):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = weight_map
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def _shard_files(tmp_path):
    folder = shutil.copytree(FAMILIES / "llama", tmp_path / "llama")
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    first = next(iter(weight_map))
    return folder, weight_map, first


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("absolute", r"'/etc/passwd' \(named by model\.safetensors\.index\.json\) is not a file "
                     "name inside the folder"),
        ("dot-dot existing", r"leads outside the folder"),
        ("dot-dot missing", r"leads outside the folder"),
        ("link out", r"leads outside the folder"),
        ("integer", r"3 \(named by model\.safetensors\.index\.json\) is not a file name"),
        ("in two shards", r"is in two shards"),
        ("another shard", r"model\.safetensors\.index\.json: lists tensor"),
        ("fifo", r"is not a regular file"),
    ],
)  # fmt: skip
def test_every_file_is_a_regular_file_inside_the_folder(tmp_path, no_weights, damage, message):
    """A shard outside the folder gets the same answer whether or not it exists."""
    folder, weight_map, first = _shard_files(tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.copy(folder / weight_map[first], outside)
    shards = sorted(set(weight_map.values()))
    if damage == "absolute":
        _index(folder, {**weight_map, first: "/etc/passwd"})
    elif damage == "dot-dot existing":
        _index(folder, {**weight_map, first: "../outside.safetensors"})
    elif damage == "dot-dot missing":
        _index(folder, {**weight_map, first: "../nowhere.safetensors"})
    elif damage == "link out":
        (folder / shards[0]).unlink()
        (folder / shards[0]).symlink_to(outside)
    elif damage == "integer":
        _index(folder, {**weight_map, first: 3})
    elif damage == "in two shards":  # both shards hold every tensor of the first
        shutil.copy(folder / shards[0], folder / shards[1])
    elif damage == "another shard":
        _index(folder, {**weight_map, first: next(s for s in shards if s != weight_map[first])})
    elif damage == "fifo":
        (folder / shards[1]).unlink()
        os.mkfifo(folder / shards[1])
    with pytest.raises(ValueError, match=message):
        models.load(folder, text="the cat")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("fifo", r"config\.json is not a regular file"),
        ("deep", r"config\.json: cannot be read as JSON \(nested too deeply\)"),
        ("list", r"config\.json: not a JSON object"),
    ],
)
def test_a_config_that_is_not_a_json_object_in_a_file_is_refused(tmp_path, config, message):
    folder = tmp_path / "model"
    folder.mkdir()
    if config == "fifo":  # reading it would wait for a writer forever
        os.mkfifo(folder / "config.json")
    else:
        text = "[" * 100_000 + "]" * 100_000 if config == "deep" else "[1]"
        (folder / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        models.load(folder, text="the cat")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metadata": {"context_length": [64, 64]}},
         r"llama\.context_length=\[64, 64\]: llama\.context_length must be an integer"),
        ({"metadata": {"expert_count": 8}}, r"llama\.expert_count=8 is not supported"),
        ({"metadata": {"rope.scaling.type": "yarn"}},
         r'llama\.rope\.scaling\.type="yarn" is not supported \(supported: "none", "linear"\)'),
        ({"metadata": {"rope.dimension_count": 4}},
         r"llama\.rope\.dimension_count=4 is not supported \(supported: 8\)"),
        ({"metadata": {"attention.clamp_kqv": 8.0}},
         r"'llama\.attention\.clamp_kqv' is not a key this library reads"),
        ({"metadata": {"attention.layer_norm_rms_epsilon": -1.0}},
         r"layer_norm_rms_epsilon must be a finite number > 0"),
        ({"metadata": {"attention.head_count": 0}}, r"llama\.attention\.head_count=0"),
        ({"metadata": {"attention.head_count_kv": 3}},
         r"llama\.attention\.head_count=4 is not a multiple of llama\.attention\.head_count_kv=3"),
        ({"extra": {"rope_freqs.weight": (4,)}},
         r"tensor rope_freqs\.weight is not read by this library"),
        ({"metadata": {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
                       "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.token_type": [1],
                       "tokenizer.ggml.merges": ["a b"]}},
         r"tiny\.gguf: its tokenizer metadata cannot be read"),
        ({"metadata": {"tokenizer.ggml.bos_token_id": 40}},
         r"tokenizer\.ggml\.bos_token_id=40 must be a token id in \[0, 39\]"),
    ],
)  # fmt: skip
def test_a_gguf_the_library_cannot_compute_is_refused_by_name(tmp_path, monkeypatch, kwargs,
                                                            message):  # fmt: skip
    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path / "cache"))
    path = write_llama_gguf(tmp_path / "tiny.gguf", **kwargs)
    with pytest.raises(ValueError, match=message):
        models.load(path, ids=[1, 2])


def test_a_name_too_long_for_the_file_system_is_no_path(tmp_path):
    """A 5,000-character hub-style name raised OSError (File name too long)."""
    name = "a" * 2500 + "/" + "b" * 2500
    with pytest.raises(ValueError, match=r"source must be one of 'synthetic'"):
        models.entry(name)
    with pytest.raises(ValueError, match=r"checkpoint 'aaaa.*: no such file or folder"):
        models.load(name, text="the cat")


def test_the_allow_lists_read_every_key_their_references_were_saved_with():
    """Every key transformers 5 wrote into the reference configs is read or harmless,
    and every rule's default passes its own check (a default is what transformers uses)."""
    from attn_lib.models import allowlists

    for folder in sorted(p for p in FAMILIES.iterdir() if p.is_dir()):
        config = json.loads((folder / "config.json").read_text())
        rules = allowlists.HF[config["model_type"]]
        contract.read(config, rules, str(folder))
    for rules in (*allowlists.HF.values(), *allowlists.GGUF.values(), allowlists.ROPE):
        for key, rule in rules.items():
            if rule.default not in (contract.REQUIRED, None):
                assert rule.check(rule.default) == rule.default, key


def test_a_snapshot_of_the_hubs_cache_links_into_its_blobs(tmp_path):
    """What snapshot_download leaves: a folder of links to ../../blobs. They stay inside
    the repository's cache folder, so it loads; a link out of that folder does not."""
    repository = tmp_path / "models--someone--tiny-llama"
    snapshot, blobs = repository / "snapshots" / "0123abc", repository / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for file in (FAMILIES / "llama").iterdir():
        shutil.copy(file, blobs / file.name)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", file.name))
    source = models.load(snapshot, text="the cat")
    assert source.layers == 2
    outside = tmp_path / "elsewhere.json"
    shutil.copy(blobs / "tokenizer.json", outside)
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"'tokenizer\.json' leads outside the folder"):
        models.load(snapshot, text="the cat")


def test_a_bos_outside_the_vocabulary_is_refused_where_it_is_used(tmp_path):
    folder = folder_with(tmp_path, "llama", bos_token_id=999)  # the embedding has 34 rows
    assert models.load(folder, text="the cat", bos=False).ids[0] != 999
    with pytest.raises(ValueError, match="its BOS token id 999 is outside its vocabulary of 34"):
        models.load(folder, text="the cat", bos=True)
