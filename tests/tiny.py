"""Tiny random-weight models and tiny real tokenizers of every family tmix runs, built locally (no downloads)."""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen3Config)

from tmixcli import modelcheck

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
           "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
CORPUS = ["The harbour report lists revenue, ships and crews. Question: what was the revenue in 2023?",
          "Documents, tables and numbers: 48.7 million euros; Stavanger; Ingrid Vassdal.\n\nNew paragraph here.",
          "A quick brown fox jumps over the lazy dog while the weather changes every hour."] * 20

FAMILIES = modelcheck.FAMILIES  # every family tmix runs: tiny_config makes each (tests/test_families.py checks)


def tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A BPE tokenizer trained on a few sentences with the family's pre-tokenizer and chat template."""
    if family == "mistral":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        specials, template, bos, eos = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], MISTRAL, "<s>", "</s>"
    else:
        tok = Tokenizer(models.BPE())
        split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                      use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        if family == "llama":
            specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
            template, bos, eos = LLAMA3, "<|begin_of_text|>", "<|eot_id|>"
        else:
            specials, template, bos, eos = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, None, "<|im_end|>"
    alphabet = pre_tokenizers.ByteLevel.alphabet() if family != "mistral" else []
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   unk_token="<unk>" if family == "mistral" else None)
    fast.chat_template = template
    return fast


def tiny_config(family: str, layers: int = 4, vocab: int = 320, **kw):
    """A 4-layer GQA config (4 q heads, 2 kv heads, head_dim 16) of the family (one for each of FAMILIES: the
    attention, prompt and tokenizer tests run them all)."""
    base = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, head_dim=16)
    base.update(kw)
    if family == "llama":
        return LlamaConfig(**base)
    if family == "qwen2":
        return Qwen2Config(use_sliding_window=False, **base)
    if family == "qwen3":
        return Qwen3Config(use_sliding_window=False, **base)
    if family == "mistral":
        return MistralConfig(sliding_window=None, **base)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **kw):
    """Random weights (scaled up so attention is far from uniform and pattern bugs show in the logits)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw), dtype=dtype, attn_implementation="sdpa")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)
    return model.eval()
