"""The checkpoint contract: what a config or a GGUF's metadata may say (the allow-lists of
``attn_lib.models.allowlists``), and the files and tensors a checkpoint may hold. Every
refusal names the file, the key or tensor and what is allowed, before any weight is read,
and a hostile declared size costs neither time nor memory."""

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_load import write_llama_gguf

from attn_lib import all_weights, models
from attn_lib.models import contract, families, hf_config, hf_files, hf_folder

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
    "a RoPE entry that is no object": ("gemma3", {"rope_parameters": {"full_attention": "x"}},
                                       r'rope_parameters: full_attention="x": full_attention '
                                       "must be an object"),
    "Qwen2-VL's RoPE sections": ("qwen2", {"use_mrope": True}, r"use_mrope=true is not supported"),
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


# config.json of real checkpoints (as published on the hub, values shortened where they
# do not matter): every key is read or harmless, so they pass the allow-lists.
REAL = {
    "TinyLlama-1.1B-Chat-v1.0": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 2048,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
        "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.35.0", "use_cache": True,
        "vocab_size": 32000},
    "SmolLM2-135M-Instruct": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "head_dim": 64,
        "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
        "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 9,
        "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False,
        "rope_scaling": None, "rope_theta": 100000, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "transformers.js_config": {"kv_cache_dtype": {}},
        "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152},
    "Qwen2.5-0.5B": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
        "max_position_embeddings": 32768, "max_window_layers": 24, "model_type": "qwen2",
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1", "use_cache": True, "use_mrope": False,
        "use_sliding_window": False, "vocab_size": 151936},
    "gemma-2-9b": {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False,
        "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
        "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
        "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584,
        "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16,
        "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0,
        "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
        "sliding_window": 4096, "sliding_window_size": 4096, "torch_dtype": "float32",
        "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 256000},
    "gemma-3-4b-it (its text_config)": {
        "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024},
    "gpt2-medium": {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
        "n_ctx": 1024, "n_embd": 1024, "n_head": 16, "n_layer": 24, "n_positions": 1024,
        "n_special": 0, "predict_special_tokens": True, "resid_pdrop": 0.1,
        "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257},
    "Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 14336, "max_position_embeddings": 32768,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000},
}  # fmt: skip


@pytest.mark.parametrize("name", REAL)
def test_the_configs_of_real_checkpoints_pass_their_allow_lists(name):
    from attn_lib.models import allowlists, gpt2

    config = REAL[name]
    if config["model_type"] == "gpt2":
        read = contract.read(config, allowlists.HF["gpt2"], name)
        assert gpt2.Config.from_hf(read, name).intermediate == 4 * 1024  # n_inner: 4·n_embd
        return
    found, _ = hf_config.decoder_config(families.by_model_type(config["model_type"]), config, name)
    if name.startswith("gemma-3"):  # transformers' defaults fill the rest, as it builds it
        assert (found.heads, found.kv_heads, found.head_dim, found.vocab) == (8, 4, 256, 262208)
        assert found.rope[5] == ("linear", 1e6, 8.0) and found.rope[0] == ("default", 1e4)
    if name.startswith("Qwen2.5"):
        assert found.window == (0,) * 24, "use_sliding_window is false"
    if name.startswith("Mistral"):
        assert set(found.window) == {4096}


def test_a_single_file_is_read_before_an_index_as_transformers_does(tmp_path):
    folder = folder_with(tmp_path, "qwen2")
    index = {"weight_map": {"model.embed_tokens.weight": "gone.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert models.load(folder, text="the cat").layers == 2  # a stale index is not read


def test_a_llama_ggufs_query_and_key_biases_are_unpermuted_with_their_weights(tmp_path):
    """llama.cpp's converter permutes a Llama's Q and K bias rows as it does their weight
    rows: read back, the GGUF computes what the folder computes."""
    from gguf import GGUFReader, GGUFWriter
    from safetensors.numpy import load_file, save_file

    folder = folder_with(tmp_path, "llama", attention_bias=True)
    rng = np.random.default_rng(0)
    heads = {"q": 4, "k": 2}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, weight in list(tensors.items()):
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight",
                              "o_proj.weight")):  # fmt: skip
                bias = rng.normal(0, 0.5, weight.shape[0]).astype(np.float32)
                tensors[name.replace(".weight", ".bias")] = bias
        save_file(tensors, shard)
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        for name in tensors:
            index["weight_map"][name] = shard.name
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    every = {}
    for shard in folder.glob("*.safetensors"):
        every.update(load_file(shard))
    reader = GGUFReader(FAMILIES / "llama.gguf")
    path = tmp_path / "biased.gguf"
    writer = GGUFWriter(str(path), "llama")
    for key, field in reader.fields.items():
        if key.startswith("llama."):
            writer.add_key_value(key, field.contents(), field.types[0])
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.asarray(tensor.data))
    for i in range(2):
        for ours, hf in (("attn_q", "q"), ("attn_k", "k"), ("attn_v", "v"), ("attn_output", "o")):
            bias = every[f"model.layers.{i}.self_attn.{hf}_proj.bias"]
            if hf in heads:  # llama.cpp's permute of one row vector
                bias = bias.reshape(heads[hf], 2, -1).swapaxes(1, 2).reshape(-1)
            writer.add_tensor(f"blk.{i}.{ours}.bias", np.ascontiguousarray(bias))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ids = [1, 5, 7, 9, 11, 3]
    expected = all_weights(models.load(folder, ids=ids), None, modify_layer=0)
    read = all_weights(models.load(path, ids=ids), None, modify_layer=0)
    np.testing.assert_allclose(read, expected, rtol=0, atol=1e-5)


def test_llama_cpps_gguf_conventions(tmp_path, monkeypatch):
    """What llama.cpp assumes where a GGUF is silent: a RoPE factor without a type is
    linear; a SentencePiece vocabulary begins a text with BOS; Gemma-3 27B's query is
    scaled by 1/√(hidden/heads)."""
    from attn_lib.models import gguf_file

    monkeypatch.setenv("ATTN_LIB_CACHE", str(tmp_path / "cache"))
    scaled = write_llama_gguf(tmp_path / "scaled.gguf", metadata={"rope.scaling.factor": 4.0})
    assert gguf_file.config_of(scaled).rope[0] == ("linear", 1e4, 4.0)
    for model, bos in (("llama", True), ("gpt2", False)):
        path = write_llama_gguf(tmp_path / f"{model}.gguf",
                                metadata={"tokenizer.ggml.model": model})  # fmt: skip
        assert gguf_file.load(str(path), None).add_bos is bos
    c = {"attention.sliding_window_pattern": 6, "rope.freq_base": 1e6,
         "rope.freq_base_swa": 1e4, "rope.scaling.type": "none", "rope.scaling.factor": 1.0,
         "attention.sliding_window": 1024}  # fmt: skip
    for layers, scale in ((62, (128 * 32 / 5376) ** 0.5), (34, 1.0)):
        shape = {"layers": layers, "heads": 32, "head_dim": 128, "hidden": 5376}
        assert families.gemma3_layers(c, shape)["query_scale"] == pytest.approx(scale)
