"""KV cache files: one safetensors file per prefilled prefix. Here: what names a file (model fingerprint, cache
key), its metadata and the settings it fixes, and the checks that it fits a run; the file format is read and its
header planned in kvheader, the tensors read in kvread, written in kvwrite; the cache folder is kvfolder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import tmixcli
from tmixcli.config import AttentionConfig, Settings
from tmixcli.errors import TmixError
from tmixcli.kvheader import FORMAT_VERSION, dtype_name

if TYPE_CHECKING:
    import torch

ATTN_FIELDS = ("method", "n_init", "n_local", "last_n", "start_layer")
# Fields check_kv compares against the current run, in the order they are reported.
CHECKED_FIELDS = ("tmix_format", "dtype", "model_fingerprint",
                  *(f"attn_{f}" for f in ATTN_FIELDS), "template_hash", "doc_sha256")
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "tmix_attention", "dtype", "torch_dtype",
                        "_commit_hash", "attn_implementation", "use_cache", "output_attentions",
                        "output_hidden_states", "return_dict"}
SLIDING_MSG = "sliding-window attention is not supported by the KV cache yet"


# ---------------------------------------------------------------- identity


def model_fingerprint(model: Any, tokenizer: Any) -> str:
    """sha256 over the stable config, the tokenizer and a cheap weight digest; cached on the model."""
    cached = getattr(model, "_tmix_fingerprint", None)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(_json(_stable_config(model.config)).encode())
    h.update(_tokenizer_digest(tokenizer))
    h.update(_weight_digest(model))
    fp = h.hexdigest()
    with contextlib.suppress(AttributeError, TypeError):
        object.__setattr__(model, "_tmix_fingerprint", fp)
    return fp


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _stable_config(config: Any) -> dict:
    """config.to_dict() without keys that change with how (not what) the model was loaded."""
    def strip(d: Any) -> Any:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items()
                    if k not in VOLATILE_CONFIG_KEYS and not str(k).startswith("_attn_implementation")}
        return d
    return strip(config.to_dict())


def _tokenizer_digest(tokenizer: Any) -> bytes:
    """Vocab, special tokens and chat template (tolerates tokenizer=None)."""
    if tokenizer is None:
        return b"no-tokenizer"
    parts = {
        "vocab": sorted(tokenizer.get_vocab().items()) if hasattr(tokenizer, "get_vocab") else None,
        "special": sorted(map(str, getattr(tokenizer, "all_special_tokens", []) or [])),
        "bos": str(getattr(tokenizer, "bos_token", None)),
        "eos": str(getattr(tokenizer, "eos_token", None)),
        "chat_template": getattr(tokenizer, "chat_template", None),
    }
    return hashlib.sha256(_json(parts).encode()).digest()


def _weight_digest(model: Any) -> bytes:
    """First/last 4096 and 4096 strided elements of the embeddings and the first and last q_proj."""
    tensors = []
    with contextlib.suppress(AttributeError, NotImplementedError):
        tensors.append(model.get_input_embeddings().weight)
    q_projs = [p for n, p in model.named_parameters() if n.endswith("q_proj.weight")]
    tensors += q_projs[:1] + q_projs[-1:] if len(q_projs) > 1 else q_projs
    h = hashlib.sha256()
    for t in tensors:
        h.update(_sample_bytes(t))
    return h.digest()


def _sample_bytes(t: torch.Tensor, n: int = 4096) -> bytes:
    import torch

    if t.device.type == "meta":
        return f"meta{tuple(t.shape)}".encode()
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // n)
    parts = [flat[:n], flat[-n:], flat[::step][:n]]
    sample = torch.cat([p.to(torch.float32) for p in parts]).cpu()
    return str(tuple(t.shape)).encode() + sample.numpy().tobytes()


def cache_key(fingerprint: str, attn: AttentionConfig, prefix_ids: list[int]) -> str:
    """Content address of a prefilled prefix: 24 hex chars of sha256(model, attention, token ids)."""
    h = hashlib.sha256()
    h.update(fingerprint.encode() + b"\n")
    h.update(_json(attn.to_dict()).encode() + b"\n")
    h.update(",".join(str(int(i)) for i in prefix_ids).encode())
    return h.hexdigest()[:24]


def build_meta(*, model_id: str, fingerprint: str, dtype: torch.dtype | str, attn: AttentionConfig,
               doc_name: str, doc_sha256: str, template_hash: str, n_tokens: int,
               system: str | None = None) -> dict[str, str]:
    """The metadata of a KV file; kvwrite.save_kv adds num_layers, kv_heads and head_dim from the tensors. `system`: the
    system prompt of the prefix ("" for none), recorded so that a run from the file alone can take it."""
    meta = {
        "tmix_format": FORMAT_VERSION, "tmix_version": tmixcli.__version__, "format": "pt",
        "model_id": str(model_id), "model_fingerprint": fingerprint, "dtype": dtype_name(dtype),
        "doc_name": str(doc_name), "doc_sha256": doc_sha256, "template_hash": template_hash,
        "n_tokens": str(int(n_tokens)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update({f"attn_{k}": str(v) for k, v in attn.to_dict().items() if k in ATTN_FIELDS})
    if system is not None:
        meta["system"] = system
    return meta


ATTN_FLAGS = {"method": "--attention", "n_init": "--n-init", "n_local": "--n-local", "last_n": "--last-n",
              "start_layer": "--start-layer"}


def settings_for(meta: dict[str, str], s: Settings) -> Settings:
    """`s` for answering from a KV file alone: the attention settings and system prompt left unset take the file's
    values; one set otherwise is refused, since the file's prefix was computed under it."""
    fixed: dict[str, Any] = {}
    dense = meta.get("attn_method") == "dense"
    for name, flag in ATTN_FLAGS.items():
        stored, given = meta.get(f"attn_{name}"), getattr(s, name)
        if dense and name != "method" and given is not None and s.method != "dense":
            raise TmixError(f"{flag} {given} cannot apply to this KV file: it was made with --attention dense, "
                            f"which has no triangle layers; leave {flag} out, or prefill the document again with "
                            f"--attention trimix")
        if stored is None or (name != "method" and (dense or not stored.isdigit())):
            continue  # the triangle's settings mean nothing to a dense file; a damaged value is refused on load
        if given is None:
            fixed[name] = stored if name == "method" else int(stored)
        elif str(given) != stored:
            raise TmixError(f"{flag} {given} cannot apply to this KV file: it was made with {flag} {stored}, and "
                            f"attention settings are fixed when a document is prefilled; leave {flag} out, or "
                            f"prefill the document again with {flag} {given}")
    stored = meta.get("system")
    if stored is not None and s.system is None:
        fixed["system"] = stored or None
    elif stored is not None and s.system != stored:
        made = f"with the system prompt {_short(stored)}" if stored else "without a system prompt"
        raise TmixError(f"this KV file was made {made}, which is part of its cached prefix, so --system "
                        f"{_short(s.system)} cannot apply to it; leave --system out to use the file's, or prefill "
                        f"the document again with the new --system")
    return replace(s, **fixed)


def _short(text: str, n: int = 60) -> str:
    """A quoted, shortened piece of text for a message line."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= n else flat[:n] + "...")


# ---------------------------------------------------------------- sliding window


def uses_sliding_window(config: Any) -> bool:
    """True for configs with sliding-window layers (layer_types, or an active sliding_window)."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return True
    if getattr(config, "use_sliding_window", None) is False:
        return False
    window = getattr(config, "sliding_window", None)
    max_pos = getattr(config, "max_position_embeddings", None)
    return isinstance(window, int) and window > 0 and (max_pos is None or window < max_pos)


def refuse_sliding(config: Any) -> None:
    """Raise TmixError for models whose KV cache would be a sliding window."""
    if uses_sliding_window(config):
        name = getattr(config, "model_type", "this model")
        raise TmixError(f"{name}: {SLIDING_MSG}")


# ---------------------------------------------------------------- check


def check_kv(meta: dict[str, str], cache: Any, expected: dict[str, str], model_config: Any,
             model_id: str | None = None) -> None:
    """Refuse a loaded KV file that does not fit this run: names the first field that differs (`model_id`: the model
    in use, named where the file was made with another)."""
    refuse_sliding(model_config)
    check_fields(meta, expected, model_id)
    _check_shapes(meta, cache, model_config)


def check_fields(meta: dict[str, str], expected: dict[str, str], model_id: str | None = None) -> None:
    """The metadata part of check_kv (model, dtype, attention, template, document), before any tensor is read."""
    for field in CHECKED_FIELDS:
        if field in expected and meta.get(field) != expected[field]:
            if field == "model_fingerprint":
                raise TmixError(_other_model(meta, expected[field], model_id))
            raise TmixError(_mismatch(field, meta.get(field), expected[field]))


DTYPE_FLAGS = ("bf16", "fp16", "fp32")  # the dtypes --dtype names, as KV files record them
PREFILL_AGAIN = "; re-run tmix prefill"  # ends a refusal (kvheader.check_version's too): advice for --kv users
TEMPLATE_ADVICE = "; use the system prompt it was made with, or re-run tmix prefill"
_OPTION_ADVICE = re.compile(r"; pass --[a-z]+ [^;]*, or prefill the document again with this [a-z]+$")  # ends one too


def refusal_facts(message: str) -> str:
    """A refused KV file's message without the advice for its user, for a run that prefills again by itself."""
    return _OPTION_ADVICE.sub("", message).removesuffix(TEMPLATE_ADVICE).removesuffix(PREFILL_AGAIN)


def _mismatch(field: str, old: str | None, new: str) -> str:
    if field.startswith("attn_"):
        return f"KV file was made with attention {field[5:]}={old}, now {new}{PREFILL_AGAIN}"
    if field == "template_hash":
        return (f"KV file was made with another prompt template (hash {old}, now {new}), such as another "
                f"--system{TEMPLATE_ADVICE}")
    if field == "doc_sha256":
        return f"KV file was made from another document (sha256 {str(old)[:12]}, now {new[:12]})"
    if field == "dtype" and old in DTYPE_FLAGS:
        return f"KV file was made with dtype {old}, now {new}; pass --dtype {old}, or prefill the document again " \
               "with this dtype"
    return f"KV file was made with {field} {old}, now {new}{PREFILL_AGAIN}"


def _other_model(meta: dict[str, str], fingerprint: str, model_id: str | None) -> str:
    """The refusal of a KV file made with another model: the model each was made with, by the id the file's
    metadata and this run give it, and how to use the file (--model) or make one for this model."""
    made, old = meta.get("model_id"), f"fingerprint {str(meta.get('model_fingerprint'))[:12]}"
    now = f"{model_id} (fingerprint {fingerprint[:12]})" if model_id else f"fingerprint {fingerprint[:12]}"
    if made and model_id and made != model_id:
        return (f"KV file was made with model {made} ({old}), not with the model in use, {now}; pass --model {made} "
                "(or that model's path), or prefill the document again with this model")
    which = f"another version of {made}" if made and made == model_id else f"model {made}" if made else "another model"
    return (f"KV file was made with {which} ({old}), not with the model in use, {now}; pass --model with the model it "
            "was made with, or prefill the document again with this model")


def model_kv_dims(config: Any) -> tuple[int, int, int]:
    """(num_layers, kv_heads, head_dim) the model's KV cache has."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def _check_shapes(meta: dict[str, str], cache: Any, config: Any) -> None:
    n_layers, kv_heads, head_dim = model_kv_dims(config)
    layers = list(getattr(cache, "layers", []))
    if len(layers) != n_layers:
        raise TmixError(f"KV file has {len(layers)} layers, the model has {n_layers}")
    tokens = int(meta.get("n_tokens", -1))
    want = meta.get("dtype")
    for i, layer in enumerate(layers):
        shape = list(layer.keys.shape)
        if shape[1] != kv_heads or shape[3] != head_dim:
            raise TmixError(f"KV file layer {i} has kv_heads={shape[1]} head_dim={shape[3]}, "
                            f"the model has kv_heads={kv_heads} head_dim={head_dim}")
        if shape[2] != tokens:
            raise TmixError(f"KV file layer {i} holds {shape[2]} tokens but its n_tokens={tokens}")
        if want and dtype_name(layer.keys.dtype) != want:
            raise TmixError(f"KV file layer {i} has dtype {dtype_name(layer.keys.dtype)}, metadata says {want}")


def check_prefix_ids(stored: list[int], expected: list[int]) -> None:
    """Raise TmixError unless the stored prefix ids are exactly the prompt's prefix."""
    if list(stored) == list(expected):
        return
    first = next((i for i, (a, b) in enumerate(zip(stored, expected)) if a != b), min(len(stored), len(expected)))
    raise TmixError(f"KV file prefix differs from this prompt at token {first} "
                    f"(stored {len(stored)} tokens, prompt prefix {len(expected)}){PREFILL_AGAIN}")
