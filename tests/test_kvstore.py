"""KV files: round trip, exact size, refusals and crash safety (tiny random models)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from kvfiles import T, make_meta, prefill, prefix_ids, saved, tiny_config, tiny_model
from kvfiles import tokenizer as tokenizer  # the fixture (the alias tells ruff it is used)
from tmixcli import kvfolder, kvheader, kvread, kvstore, kvwrite
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.kvcache import cache_kw

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


def rewrite_header(path: Path, edit) -> None:
    """Rewrite a KV file with edit(header) applied (data kept), padding like safetensors."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def logits(model, ids: list[int], cache=None) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]), **cache_kw(model, cache), use_cache=cache is not None).logits


# ---------------------------------------------------------------- round trip and size


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_round_trip_continuation(kind: str, tokenizer) -> None:
    model = tiny_model(kind)
    path, cache, ids = saved(model, tokenizer)
    loaded, stored_ids, meta = kvread.load_kv(path)
    assert stored_ids == ids and meta["n_tokens"] == str(T) and loaded.get_seq_length() == T
    kvstore.check_kv(meta, loaded, make_meta(model, tokenizer), model.config)
    kvstore.check_prefix_ids(stored_ids, ids)
    suffix = [5, 9, 17, 33, 64]
    from_loaded = logits(model, suffix, loaded)
    from_original = logits(model, suffix, cache)
    one_pass = logits(model, ids + suffix)[:, T:]
    torch.testing.assert_close(from_loaded, from_original, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_loaded, one_pass, atol=1e-5, rtol=1e-5)


def test_save_of_views(tmp_path: Path) -> None:
    """A cache buffer's views (spare rows after them) are written row-major, without the spare rows."""
    buf = torch.randn(2, 1, 3, 50, 8)  # buf: [L, 1, Hkv, capacity, D]
    layers = [SimpleNamespace(keys=buf[i, :, :, :37], values=buf[1 - i, :, :, :37]) for i in range(2)]
    path = tmp_path / "kv.safetensors"
    kvwrite.save_kv(path, SimpleNamespace(layers=layers), list(range(37)), {"doc_name": "d"})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # the header's reserved room is plain safetensors padding
        for i in range(2):
            assert torch.equal(f.get_tensor(f"layers.{i}.keys"), buf[i, :, :, :37])
            assert torch.equal(f.get_tensor(f"layers.{i}.values"), buf[1 - i, :, :, :37])
        assert f.get_tensor("prefix_ids").tolist() == list(range(37))


@pytest.mark.parametrize("rows", [None, 7, 0, 10_000])
def test_load_reads_in_odd_pieces(tokenizer, monkeypatch, rows) -> None:
    """Parallel reads in pieces that split rows mid-way fill every layer exactly (all rows or the first `rows`)."""
    from tmixcli import kvread

    monkeypatch.setattr(kvread, "PIECE_BYTES", 100)  # splits rows mid-way: not a multiple of a row
    monkeypatch.setattr(kvread, "WORKERS", 3)
    path, cache, ids = saved(tiny_model(), tokenizer)
    loaded, stored, _ = kvread.load_kv(path, rows=rows, headroom=5)
    keep = T if rows is None else min(rows, T)
    assert stored == ids[:keep]
    for a, b in zip(cache.layers, loaded.layers):
        assert b.keys.shape[2] == keep and b._kbuf.shape[2] == keep + 5
        assert torch.equal(a.keys[:, :, :keep], b.keys) and torch.equal(a.values[:, :, :keep], b.values)


def test_load_per_layer_devices(tokenizer) -> None:
    """A device list (one per layer, as a device map places them) is honoured; a wrong count is refused."""
    from tmixcli.models import layer_devices

    model = tiny_model()
    path, cache, _ = saved(model, tokenizer)
    devices = layer_devices(model)
    assert devices == [torch.device("cpu")] * 3
    loaded, _, _ = kvread.load_kv(path, devices)
    assert all(torch.equal(a.keys, b.keys) for a, b in zip(loaded.layers, cache.layers))
    with pytest.raises(TmixError, match="3 layers, the model 2"):
        kvread.load_kv(path, devices[:2])


@pytest.mark.parametrize("dtype,nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_file_size_and_dtype_preserved(dtype: torch.dtype, nbytes: int, tokenizer) -> None:
    model = tiny_model(dtype=dtype)
    path, cache, _ = saved(model, tokenizer)
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len < 64 * 1024
    layers, heads, head_dim = 3, 2, 16
    assert path.stat().st_size == layers * 2 * heads * T * head_dim * nbytes + T * 8 + 8 + header_len
    loaded, _, meta = kvread.load_kv(path)
    assert meta["dtype"] == kvheader.dtype_name(dtype)
    for a, b in zip(loaded.layers, cache.layers):
        assert a.keys.dtype == dtype and torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    facts = kvheader.inspect_kv(path)
    assert facts["size_matches"] and facts["tensor_count"] == 1 + 2 * layers


def test_fingerprint_and_key(tokenizer) -> None:
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    fp = kvstore.model_fingerprint(a, tokenizer)
    assert fp == kvstore.model_fingerprint(b, tokenizer) == a._tmix_fingerprint
    assert fp != kvstore.model_fingerprint(tiny_model(seed=1), tokenizer)
    assert fp != kvstore.model_fingerprint(tiny_model(seed=0), None)
    attn = AttentionConfig(start_layer=1)
    key = kvstore.cache_key(fp, attn, [1, 2, 3])
    assert len(key) == 24 and key == kvstore.cache_key(fp, attn, [1, 2, 3])
    assert key != kvstore.cache_key(fp, AttentionConfig(start_layer=2), [1, 2, 3])
    assert key != kvstore.cache_key(fp, attn, [1, 2, 4])
    assert kvfolder.kv_path_for(key).parent == Path(os.environ["TMIX_CACHE_DIR"]) / "kv"


# ---------------------------------------------------------------- refusals


def test_refuses_non_safetensors(tmp_path: Path) -> None:
    rnd = tmp_path / "random.safetensors"
    rnd.write_bytes(os.urandom(8) + b"\x00" + os.urandom(4087))  # byte 8 never "{": 1 in 256 runs hit the length check
    txt = tmp_path / "notes.safetensors"
    txt.write_text("hello, this is a plain text file\n" * 10)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    for p in (rnd, txt, tiny):
        with pytest.raises(TmixError, match=r"is not a safetensors KV file") as exc:
            kvread.load_kv(p)
        assert str(p) in str(exc.value)


def test_refuses_truncated_and_oversized(tokenizer) -> None:
    path, _, _ = saved(tiny_model(), tokenizer)
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    cut = r"is truncated: it holds \d+ of the \d+ bytes of tensor data its header lists \(100 B missing\)"
    with pytest.raises(TmixError, match=cut):
        kvread.load_kv(path)
    path.write_bytes(raw[:40])
    with pytest.raises(TmixError, match=r"is truncated: header needs"):
        kvheader.read_meta(path)
    path.write_bytes(struct.pack("<Q", 2**40) + raw[8:])
    with pytest.raises(TmixError, match=r"header length 1099511627776 exceeds the 100 MB limit"):
        kvread.load_kv(path)


def test_refuses_inconsistent_tensor_entries(tokenizer) -> None:
    path, _, _ = saved(tiny_model(), tokenizer)
    rewrite_header(path, lambda h: h["layers.0.keys"].update(shape=[1, 2, T, 15]))
    with pytest.raises(TmixError, match=r"size does not match its shape"):
        kvheader.read_meta(path)


@pytest.mark.parametrize("version,word", [("2", "newer"), ("0", "older")])
def test_refuses_unknown_format_version(version: str, word: str, tokenizer) -> None:
    path, _, _ = saved(tiny_model(), tokenizer)
    rewrite_header(path, lambda h: h["__metadata__"].update(tmix_format=version))
    with pytest.raises(TmixError, match=rf"made by an? {word} tmix.*re-run tmix prefill"):
        kvread.load_kv(path)


def _check(model, tokenizer, path: Path, **over) -> None:
    loaded, _, meta = kvread.load_kv(path)
    kvstore.check_kv(meta, loaded, make_meta(model, tokenizer, **over), model.config)


def test_refuses_other_model_dtype_attention_template(tokenizer) -> None:
    model = tiny_model()
    path, _, _ = saved(model, tokenizer)
    with pytest.raises(TmixError, match=r"made with model tiny \(fingerprint \w{12}\), not with the model in use"):
        _check(tiny_model(seed=7), tokenizer, path)
    with pytest.raises(TmixError, match=r"dtype fp32, now bf16"):
        _check(model, tokenizer, path, dtype=torch.bfloat16)
    with pytest.raises(TmixError, match=r"attention start_layer=1, now 2"):
        _check(model, tokenizer, path, attn=AttentionConfig(start_layer=2))
    with pytest.raises(TmixError, match=r"attention method=trimix, now dense"):
        _check(model, tokenizer, path, attn=AttentionConfig(method="dense", start_layer=1))
    with pytest.raises(TmixError, match=r"another prompt template \(hash t1, now t2\)"):
        _check(model, tokenizer, path, template_hash="t2")


def test_a_file_of_another_model_is_refused_naming_the_models() -> None:
    """The model the file's metadata names and the one in use; --model advice only where the file names another."""
    made = {"model_id": "m2", "model_fingerprint": "c" * 64}
    expected = {"model_fingerprint": "a" * 64}
    cases = {"m1": "made with model m2 (fingerprint cccccccccccc), not with the model in use, m1 (fingerprint "
                   "aaaaaaaaaaaa); pass --model m2 (or that model's path), or prefill",
             "m2": "made with another version of m2 (fingerprint cccccccccccc), not with the model in use, m2 "
                   "(fingerprint aaaaaaaaaaaa); pass --model with the model it was made with, or prefill"}
    for model_id, says in cases.items():
        with pytest.raises(TmixError, match=re.escape(says)):
            kvstore.check_fields(made, expected, model_id)
    with pytest.raises(TmixError, match=re.escape("made with another model (fingerprint cccccccccccc), not with the "
                                                  "model in use, fingerprint aaaaaaaaaaaa; pass --model with")):
        kvstore.check_fields({"model_fingerprint": "c" * 64}, expected)


def test_refuses_shape_mismatch(tokenizer) -> None:
    model = tiny_model()
    cache = DynamicCache()
    for i in range(3):
        cache.update(torch.randn(1, 2, T, 8), torch.randn(1, 2, T, 8), i)  # head_dim 8, model has 16
    path = kvfolder.kv_path_for("forged")
    kvwrite.save_kv(path, cache, prefix_ids(), make_meta(model, tokenizer))
    with pytest.raises(TmixError, match=r"head_dim=8, the model has kv_heads=2 head_dim=16"):
        _check(model, tokenizer, path)
    two_layers = DynamicCache()
    for i in range(2):
        two_layers.update(torch.randn(1, 2, T, 16), torch.randn(1, 2, T, 16), i)
    kvwrite.save_kv(path, two_layers, prefix_ids(), make_meta(model, tokenizer))
    with pytest.raises(TmixError, match=r"KV file has 2 layers, the model has 3"):
        _check(model, tokenizer, path)


def test_refuses_token_count_and_prefix_mismatch(tokenizer) -> None:
    model = tiny_model()
    path, _, ids = saved(model, tokenizer)
    loaded, _, meta = kvread.load_kv(path)
    with pytest.raises(TmixError, match=rf"holds {T} tokens but its n_tokens={T + 1}"):
        kvstore.check_kv({**meta, "n_tokens": str(T + 1)}, loaded, make_meta(model, tokenizer), model.config)
    rewrite_header(path, lambda h: h["__metadata__"].update(n_tokens=str(T + 1)))
    with pytest.raises(TmixError, match=rf"\[{T}\] prefix ids but n_tokens={T + 1}"):
        kvread.load_kv(path)
    with pytest.raises(TmixError, match=r"prefix differs from this prompt at token 3"):
        kvstore.check_prefix_ids(ids, ids[:3] + [0] + ids[4:])
    with pytest.raises(TmixError, match=rf"stored {T} tokens, prompt prefix {T + 1}"):
        kvstore.check_prefix_ids(ids, ids + [7])
    with pytest.raises(TmixError, match=r"cached tokens but"):
        kvwrite.save_kv(path, loaded, ids[:-1], meta)


class _Evil:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refuses_pickle_without_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists()  # the payload works when unpickled
    marker = tmp_path / "marker"
    path = tmp_path / "evil.safetensors"
    torch.save({"x": _Evil(marker)}, path)

    def boom(*a, **k):
        raise AssertionError("tmix must never unpickle")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(torch, "load", boom)
    with pytest.raises(TmixError, match=r"not a safetensors KV file \(it looks like a PyTorch/pickle"):
        kvread.load_kv(path)
    with pytest.raises(TmixError, match=r"not a safetensors KV file"):
        kvheader.read_meta(path)
    assert not marker.exists()


def test_refuses_sliding_window(tokenizer) -> None:
    config = tiny_config("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1)
    assert kvstore.uses_sliding_window(config)
    assert not kvstore.uses_sliding_window(tiny_config("qwen2"))
    assert not kvstore.uses_sliding_window(tiny_config("llama"))
    with pytest.raises(TmixError, match=r"sliding-window attention is not supported by the KV cache yet"):
        kvstore.refuse_sliding(config)
    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1)
    with pytest.raises(TmixError, match=r"sliding-window attention is not supported by the KV cache yet"):
        saved(model, tokenizer)
    assert kvfolder.list_entries() == []


# ---------------------------------------------------------------- crash safety


def test_disk_full_leaves_nothing(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def full(fd, data, offset):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.pwrite(fd, data, offset)
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    with pytest.raises(TmixError, match=r"disk full"):
        saved(tiny_model(), tokenizer)
    assert list(kvfolder.kv_dir().iterdir()) == []


SAVER = textwrap.dedent("""
    import sys, time, torch
    from transformers import DynamicCache
    import os
    from tmixcli import kvheader, kvwrite
    path, delay = sys.argv[1], float(sys.argv[2])
    def slow(fd, data, offset):
        os.pwrite(fd, data, offset)
        print("writing", flush=True)
        time.sleep(delay)
    kvwrite._pwrite = slow
    torch.manual_seed(0)
    cache = DynamicCache()
    for i in range(4):
        cache.update(torch.randn(1, 2, 256, 64), torch.randn(1, 2, 256, 64), i)
    meta = {"tmix_format": kvheader.FORMAT_VERSION, "doc_name": "d", "model_id": "m", "dtype": "fp32"}
    kvwrite.save_kv(path, cache, list(range(256)), meta)
    print("done", flush=True)
""")


def _saver(path: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(delay)], env=env,
                            stdout=subprocess.PIPE, text=True)


def test_kill_during_save_leaves_no_final_file() -> None:
    path = kvfolder.kv_path_for("killed")
    proc = _saver(path, 30.0)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not path.exists()
    assert len(kvfolder.temp_files()) == 1 and kvfolder.temp_is_stale(kvfolder.temp_files()[0])  # its lock is gone
    assert kvfolder.list_entries() == []


def test_concurrent_saves_same_key() -> None:
    path = kvfolder.kv_path_for("same")
    procs = [_saver(path, 0.2) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 and "done" in o for p, o in zip(procs, outs))
    cache, ids, meta = kvread.load_kv(path)
    assert ids == list(range(256)) and cache.get_seq_length() == 256 and meta["num_layers"] == "4"
    assert kvfolder.temp_files() == [] and [e["key"] for e in kvfolder.list_entries()] == ["same"]


def test_an_older_file_with_attn_dense_backend_is_accepted(tokenizer) -> None:
    """Files made before 2026-11-24 hold attn_dense_backend ("sdpa" whatever ran): it is ignored, not compared, and
    new files no longer write it (review 24 R15)."""
    model = tiny_model()
    ids = prefix_ids()
    meta = make_meta(model, tokenizer)
    assert "attn_dense_backend" not in meta and "dense_backend" not in AttentionConfig().to_dict()
    path = kvfolder.kv_path_for("old")
    kvwrite.save_kv(path, prefill(model, ids), ids, {**meta, "attn_dense_backend": "sdpa"})
    _check(model, tokenizer, path)
