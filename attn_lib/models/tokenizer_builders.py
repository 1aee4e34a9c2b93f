"""Tokenizers built from a GGUF's ``tokenizer.ggml.*`` metadata with ``tokenizers``.

A GGUF carries its vocabulary but not the ``tokenizer.json`` it came from, so each
kind is rebuilt as its model's own tokenizer is made. The kinds built for a family's files
are its record's (:attr:`attn_lib.models.families.Gguf.tokenizers`), keyed by
``(tokenizer.ggml.model, tokenizer.ggml.pre or the architecture)``; for any other,
:func:`from_gguf` gives None and the checkpoint reads token ids only. Each kind is
checked against transformers' tokenizer on real text (``tests/reference/``). The
tokenizers add no special token: a checkpoint says whether a text begins with BOS
(:class:`attn_lib.models.checkpoint.Checkpoint`).
"""

CONTROL = 3  # llama.cpp's token type of <bos>, <|im_start|> and the like: never split


def _specials(fields: dict) -> list:
    from tokenizers import AddedToken

    tokens, kinds = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    return [
        AddedToken(t, special=True, normalized=False)
        for t, kind in zip(tokens, kinds, strict=True)
        if kind == CONTROL
    ]


def byte_level_smollm(fields: dict):
    """GPT-2's byte-level BPE, with the file's merges, after SmolLM's split of digits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in fields["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(_specials(fields))
    return tokenizer


def sentencepiece_gemma(fields: dict):
    """Gemma's SentencePiece BPE with byte fallback: spaces become ``▁``, no prefix
    space. The file has no merges: every split of a token into two tokens is one,
    ranked by the token's place in the file (Gemma's scores do not follow its merge
    order), as transformers rebuilds it. A token of spaces is stored as spaces; it is
    looked up as ``▁``s."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = [
        "▁" * len(t) if " " in t and not t.strip() else t for t in fields["tokenizer.ggml.tokens"]
    ]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = sorted(
        (
            (token[:cut], token[cut:])
            for token in vocab
            for cut in range(1, len(token))
            if token[:cut] in vocab and token[cut:] in vocab
        ),
        key=lambda pair: (vocab[pair[0] + pair[1]], -len(pair[0])),
    )
    unknown = tokens[int(fields.get("tokenizer.ggml.unknown_token_id", 3))]
    model = models.BPE(vocab, merges, unk_token=unknown, fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens(_specials(fields))
    return tokenizer


def from_gguf(fields: dict, builders: dict):
    """The tokenizer the GGUF's metadata ``fields`` describe, built by ``builders`` (see
    :attr:`attn_lib.models.families.Gguf.tokenizers`), or None where none builds its kind
    or the metadata lacks a part."""
    model = fields.get("tokenizer.ggml.model")
    builder = builders.get((model, fields.get("tokenizer.ggml.pre"))) or builders.get(
        (model, fields.get("general.architecture"))
    )
    try:
        return None if builder is None else builder(fields)
    except KeyError:
        return None
