"""Per-layer dispatch through AttentionInterface, on tiny random Llama/Qwen2/Qwen3/Mistral models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tiny import FAMILIES, tiny_model
from transformers import AttentionInterface, DynamicCache

from tmix_kernels.reference import triangle_reference
from tmixcli import attention, generate
from tmixcli.config import AttentionConfig
from tmixcli.kvcache import cache_kw

N_LAYERS = 4
SMALL = dict(n_init=2, n_local=8, last_n=5)


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 300, (1, n), generator=torch.Generator().manual_seed(seed))


def _reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                         tmix_ref_total=None, **kw):
    """float64 dense-masked triangle (or causal) attention for layers per the attached config."""
    cfg = attention.layer_config(module)
    s, lq = key.shape[2], query.shape[2]
    if cfg.is_triangle(module.layer_idx):
        out = triangle_reference(query, key, value, cfg.n_init, cfg.n_local, cfg.last_n, tmix_ref_total, scaling)
    else:
        out = triangle_reference(query, key, value, 0, s + 1, 0, None, scaling)  # plain causal
    assert lq == s
    return out.to(query.dtype), None


AttentionInterface.register("tmix-ref", _reference_attention)


def _one_pass_reference(model, ids: torch.Tensor, attn: AttentionConfig, prefill_len: int) -> torch.Tensor:
    """Logits of a single pass whose triangle rows are defined by a prefill of `prefill_len` tokens."""
    attention.attach(model, attn)
    model.set_attn_implementation("tmix-ref")
    with torch.no_grad():
        out = model(input_ids=ids, tmix_ref_total=prefill_len).logits[0]
    model.set_attn_implementation("sdpa")
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_matches_transformers_sdpa(family):
    model = tiny_model(family)
    ids = _ids(40)
    with torch.no_grad():
        want = model(input_ids=ids).logits
        attention.attach(model, AttentionConfig(method="dense"))
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["dense", "trimix"])
def test_suffix_on_cache_matches_one_pass(family, method):
    """The question suffix on a cached prefix = one pass over the whole prompt (catches the top-left mask trap)."""
    model = tiny_model(family)
    ids = _ids(60)
    t = 49
    attn = AttentionConfig(method=method, start_layer=2, **SMALL)
    want = _one_pass_reference(model, ids, attn, prefill_len=t)[t:]
    attention.attach(model, attn)
    cache, last = generate.prefill(model, ids[0, :t].tolist())
    torch.testing.assert_close(last, _one_pass_reference(model, ids[:, :t], attn, t)[-1], atol=1e-4, rtol=1e-4,
                               msg=lambda m: f"{family} {method}: the prefill's last logits differ from the "
                                             f"reference's: {m}")
    attention.attach(model, attn)
    with torch.no_grad():
        got = model(input_ids=ids[:, t:], **cache_kw(model, cache), use_cache=True).logits[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4,
                               msg=lambda m: f"{family} {method}: the suffix on the cached prefix differs from one "
                                             f"pass: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_trimix_differs_from_dense(family):
    """With a window far smaller than the prompt, the triangle pattern must change the prefill's state (a family
    whose forward drops `tmix_total_len` on its way to the attention would prefill dense)."""
    model = tiny_model(family)
    ids = _ids(80)[0].tolist()
    attention.attach(model, AttentionConfig(method="dense"))
    _, dense = generate.prefill(model, ids)
    attention.attach(model, AttentionConfig(method="trimix", start_layer=0, n_init=1, n_local=2, last_n=0))
    _, tri = generate.prefill(model, ids)
    assert (dense - tri).abs().max() > 1e-3


def test_start_layer_past_last_equals_dense():
    model = tiny_model("llama")
    ids = _ids(70)[0].tolist()
    attention.attach(model, AttentionConfig(method="dense"))
    cache_d, logits_d = generate.prefill(model, ids)
    attention.attach(model, AttentionConfig(method="trimix", start_layer=N_LAYERS, **SMALL))
    cache_t, logits_t = generate.prefill(model, ids)
    same = torch.equal(logits_d, logits_t)  # a bool, so that a failure prints no tensors
    assert same, f"start_layer {N_LAYERS} (no triangle layer): the logits differ from dense"
    for i, (a, b) in enumerate(zip(cache_d.layers, cache_t.layers)):
        same = torch.equal(a.keys, b.keys)
        assert same, f"start_layer {N_LAYERS} (no triangle layer): layer {i}'s keys differ from dense"


def test_layers_below_start_bit_identical():
    model = tiny_model("qwen2")
    ids = _ids(70)[0].tolist()
    attention.attach(model, AttentionConfig(method="dense"))
    dense, _ = generate.prefill(model, ids)
    start = 2
    attention.attach(model, AttentionConfig(method="trimix", start_layer=start, **SMALL))
    tri, _ = generate.prefill(model, ids)
    for i in range(start + 1):  # K/V of layer i depend on the attention of layers < i only
        for part in ("keys", "values"):
            same = torch.equal(getattr(dense.layers[i], part), getattr(tri.layers[i], part))  # no tensor dumps
            assert same, f"layer {i}'s {part} (fed by layers < {i}, all below start_layer {start}: dense) differ " \
                         "from dense"
    same = torch.equal(dense.layers[start + 1].keys, tri.layers[start + 1].keys)
    assert not same, f"layer {start + 1}'s keys equal dense: layer {start} (>= start_layer {start}) did not use the " \
                     "triangle"


@pytest.mark.parametrize("chunk", [7, 16, 33])
def test_chunked_prefill_equals_one_shot(chunk):
    model = tiny_model("mistral")
    ids = _ids(75)[0].tolist()
    attention.attach(model, AttentionConfig(method="trimix", start_layer=1, **SMALL))
    one, logits_one = generate.prefill(model, ids)
    chunked, logits_chunked = generate.prefill(model, ids, chunk_size=chunk)
    torch.testing.assert_close(logits_chunked, logits_one, atol=1e-4, rtol=1e-4,
                               msg=lambda m: f"chunks of {chunk}: logits differ from one shot: {m}")
    for i, (a, b) in enumerate(zip(one.layers, chunked.layers)):
        torch.testing.assert_close(b.keys, a.keys, atol=1e-4, rtol=1e-4,
                                   msg=lambda m, i=i: f"chunks of {chunk}: layer {i}'s keys differ from one shot: {m}")


def test_attention_mask_refused():
    model = tiny_model("llama")
    attention.attach(model, AttentionConfig())
    with pytest.raises(ValueError, match="attention mask"):
        attention.tmix_attention(model.model.layers[0].self_attn, torch.zeros(1, 4, 3, 16),
                                 torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16), torch.ones(1, 1, 3, 3))


def test_decode_after_prefill_uses_dense_rows():
    """Decoding token by token on top of a trimix prefill equals one pass with those rows dense."""
    model = tiny_model("llama")
    ids = _ids(50)
    attn = AttentionConfig(method="trimix", start_layer=1, **SMALL)
    want = _one_pass_reference(model, ids, attn, prefill_len=45)[45:]
    attention.attach(model, attn)
    cache, _ = generate.prefill(model, ids[0, :45].tolist())
    assert isinstance(cache, DynamicCache)
    got = torch.stack([generate.extend(model, cache, [t]) for t in ids[0, 45:].tolist()])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4,
                               msg=lambda m: f"decoded logits differ from one pass with dense rows: {m}")


@pytest.mark.parametrize("heads,kv_heads,d", [(4, 4, 64), (9, 3, 64), (8, 2, 128)])
def test_single_query_attention_folds_gqa(heads, kv_heads, d):
    """A decode query (Lq = 1) sees every key; folding the group into rows matches the float64 reference."""
    g = torch.Generator().manual_seed(heads)
    q = torch.randn(1, heads, 1, d, generator=g)
    k, v = (torch.randn(1, kv_heads, 77, d, generator=g) for _ in range(2))
    got = attention.dense_attention(q, k, v, None)
    want = triangle_reference(q.double(), k.double(), v.double(), 0, 78, 0, None, None)
    assert got.shape == (1, 1, heads, d)
    err = ((got.double() - want).norm() / want.norm()).item()
    assert err < 1e-6, f"{heads} heads over {kv_heads} KV heads: rel err {err:.2e} vs the float64 reference"


def test_kernels_folder_does_not_shadow_hf_kernels(tmp_path):
    """transformers probes a `kernels` distribution; our kernels/ installs as tmix_kernels only."""
    probe = ("import transformers.utils.import_utils as u, importlib.util as iu, tmix_kernels, tmixcli.attention;"
             "print(u.is_kernels_available(), iu.find_spec('kernels') is not None)")
    here = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    bare = subprocess.run([sys.executable, "-c", "import transformers.utils.import_utils as u, importlib.util as iu;"
                           "print(u.is_kernels_available(), iu.find_spec('kernels') is not None)"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert here.stdout == bare.stdout
