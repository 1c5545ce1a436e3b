"""KV files of tiny random models for the KV file tests: saved under their content key, or faked by size and age."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tmixcli import kvfolder, kvstore, kvwrite
from tmixcli.config import AttentionConfig
from tmixcli.kvcache import cache_kw

VOCAB = 128
T = 12


def tiny_config(kind: str = "llama", **extra):
    common = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": VOCAB, "max_position_embeddings": 256}
    if kind == "qwen2":
        return Qwen2Config(**common, **extra)
    return LlamaConfig(**common, **extra)


def tiny_model(kind: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **extra):
    torch.manual_seed(seed)
    cls = Qwen2ForCausalLM if kind == "qwen2" else LlamaForCausalLM
    config = tiny_config(kind, **extra)
    config._attn_implementation = "sdpa"
    return cls(config).to(dtype).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return fast


def prefill(model, ids: list[int]) -> DynamicCache:
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(torch.tensor([ids]), **cache_kw(model, cache), use_cache=True)
        return cache


def prefix_ids(n: int = T, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [1] + torch.randint(3, VOCAB, (n - 1,), generator=g).tolist()


def make_meta(model, tokenizer, attn: AttentionConfig | None = None, n: int = T, **over) -> dict[str, str]:
    fields = {"model_id": "tiny", "fingerprint": kvstore.model_fingerprint(model, tokenizer),
              "dtype": next(model.parameters()).dtype, "attn": attn or AttentionConfig(start_layer=1),
              "doc_name": "doc.txt", "doc_sha256": "ab" * 32, "template_hash": "t1", "n_tokens": n}
    fields.update(over)
    return kvstore.build_meta(**fields)


def saved(model, tokenizer, ids: list[int] | None = None, **over) -> tuple[Path, DynamicCache, list[int]]:
    """Prefill `ids`, save under its content key; returns (path, original cache, ids)."""
    ids = ids or prefix_ids()
    cache = prefill(model, ids)
    attn = AttentionConfig(start_layer=1)
    key = kvstore.cache_key(kvstore.model_fingerprint(model, tokenizer), attn, ids)
    path = kvfolder.kv_path_for(key)
    kvwrite.save_kv(path, cache, ids, make_meta(model, tokenizer, attn, len(ids), **over))
    return path, cache, ids


def _aged(sizes: dict[str, int]) -> dict[str, Path]:
    """Fake KV files with the given sizes, each used one minute after the one before."""
    paths = {}
    for age, (name, size) in enumerate(sizes.items()):
        p = kvfolder.kv_dir() / f"{name}.safetensors"
        p.write_bytes(b"\0" * size)
        os.utime(p, (1_700_000_000 + 60 * age,) * 2)
        paths[name] = p
    return paths
