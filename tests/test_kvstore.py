"""KV files: round trip, exact size, refusals, crash safety and `tmix cache` (tiny random models)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from tmixcli import kvfolder, kvheader, kvread, kvstore, kvwrite
from tmixcli.cli_cache import app
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError

REPO = Path(__file__).resolve().parents[1]
VOCAB = 128
T = 12


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


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
        return model(torch.tensor([ids]), use_cache=True).past_key_values


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
    kvstore.save_kv(path, cache, ids, make_meta(model, tokenizer, attn, len(ids), **over))
    return path, cache, ids


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
        return model(torch.tensor([ids]), past_key_values=cache, use_cache=cache is not None).logits


# ---------------------------------------------------------------- round trip and size


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_round_trip_continuation(kind: str, tokenizer) -> None:
    model = tiny_model(kind)
    path, cache, ids = saved(model, tokenizer)
    loaded, stored_ids, meta = kvread.load_kv(path)
    assert stored_ids == ids and meta["n_tokens"] == str(T) and loaded.get_seq_length() == T
    kvstore.check_kv(meta, loaded, make_meta(model, tokenizer), model.config)
    kvstore.check_prefix(stored_ids, ids)
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
    kvstore.save_kv(path, SimpleNamespace(layers=layers), list(range(37)), {"doc_name": "d"})
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
    assert meta["dtype"] == kvstore.dtype_name(dtype)
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
    with pytest.raises(TmixError, match=r"is truncated: tensor"):
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
    with pytest.raises(TmixError, match=r"different model \(fingerprint"):
        _check(tiny_model(seed=7), tokenizer, path)
    with pytest.raises(TmixError, match=r"dtype fp32, now bf16"):
        _check(model, tokenizer, path, dtype=torch.bfloat16)
    with pytest.raises(TmixError, match=r"attention start_layer=1, now 2"):
        _check(model, tokenizer, path, attn=AttentionConfig(start_layer=2))
    with pytest.raises(TmixError, match=r"attention method=trimix, now dense"):
        _check(model, tokenizer, path, attn=AttentionConfig(method="dense", start_layer=1))
    with pytest.raises(TmixError, match=r"another prompt template \(hash t1, now t2\)"):
        _check(model, tokenizer, path, template_hash="t2")


def test_refuses_shape_mismatch(tokenizer) -> None:
    model = tiny_model()
    cache = DynamicCache()
    for i in range(3):
        cache.update(torch.randn(1, 2, T, 8), torch.randn(1, 2, T, 8), i)  # head_dim 8, model has 16
    path = kvfolder.kv_path_for("forged")
    kvstore.save_kv(path, cache, prefix_ids(), make_meta(model, tokenizer))
    with pytest.raises(TmixError, match=r"head_dim=8, the model has kv_heads=2 head_dim=16"):
        _check(model, tokenizer, path)
    two_layers = DynamicCache()
    for i in range(2):
        two_layers.update(torch.randn(1, 2, T, 16), torch.randn(1, 2, T, 16), i)
    kvstore.save_kv(path, two_layers, prefix_ids(), make_meta(model, tokenizer))
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
        kvstore.check_prefix(ids, ids[:3] + [0] + ids[4:])
    with pytest.raises(TmixError, match=rf"stored {T} tokens, prompt prefix {T + 1}"):
        kvstore.check_prefix(ids, ids + [7])
    with pytest.raises(TmixError, match=r"cached tokens but"):
        kvstore.save_kv(path, loaded, ids[:-1], meta)


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
    from tmixcli import kvfolder, kvheader, kvread, kvstore, kvwrite
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
    kvstore.save_kv(kvstore.Path(path), cache, list(range(256)), meta)
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


# ---------------------------------------------------------------- list_entries and `tmix cache`


def _two_files(tokenizer) -> list[str]:
    model = tiny_model()
    saved(model, tokenizer, prefix_ids(seed=1), doc_name="a.txt")
    time.sleep(0.01)
    saved(model, tokenizer, prefix_ids(seed=2), doc_name="b.pdf")
    return [e["key"] for e in kvfolder.list_entries()]


def _err(result) -> str:
    return result.stderr


def test_list_entries_and_cli(tokenizer) -> None:
    runner = CliRunner()
    keys = _two_files(tokenizer)
    (kvfolder.kv_dir() / ".leftover.safetensors.1.tmp").write_bytes(b"junk")
    entries = kvfolder.list_entries()
    assert {e["doc_name"] for e in entries} == {"a.txt", "b.pdf"}
    assert all(e["n_tokens"] == T and e["model_id"] == "tiny" and e["error"] is None for e in entries)

    out = runner.invoke(app, ["ls"])
    assert out.exit_code == 0 and "a.txt" in out.stdout and "KiB" in out.stdout and "LAST USED" in out.stdout
    listed = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert sorted(e["key"] for e in listed) == sorted(keys)

    info = runner.invoke(app, ["info", keys[0][:10]])
    assert info.exit_code == 0 and "model_fingerprint" in info.stdout and ": ok)" in info.stdout
    facts = json.loads(runner.invoke(app, ["info", entries[0]["path"], "--json"]).stdout)
    assert facts["size_matches"] and facts["metadata"]["n_tokens"] == str(T)

    bad = runner.invoke(app, ["rm", "zzzz"])
    assert bad.exit_code == 2 and _err(bad).count("\n") == 1
    assert _err(bad).startswith("tmix: error: no KV file with key 'zzzz'")
    assert runner.invoke(app, ["rm", ""]).exit_code == 2  # an empty key is refused (test_empty_key_matches_nothing)
    gone = runner.invoke(app, ["rm", keys[0][:8]])
    assert gone.exit_code == 0 and f"removed {keys[0]}" in gone.stdout
    assert [e["key"] for e in kvfolder.list_entries()] == keys[1:]


def test_cli_clear(tokenizer) -> None:
    runner = CliRunner()
    _two_files(tokenizer)
    refused = runner.invoke(app, ["clear"], input="y\n")
    assert refused.exit_code == 2 and "--yes" in _err(refused)
    assert len(kvfolder.list_entries()) == 2
    done = runner.invoke(app, ["clear", "--yes"])
    assert done.exit_code == 0 and "removed 2 KV files" in done.stdout
    assert kvfolder.list_entries() == []
    assert "no KV files" in runner.invoke(app, ["ls"]).stdout


def test_ls_tells_files_made_with_other_attention_apart(tokenizer) -> None:
    """Files of one document made with other attention settings differ in ls's ATTENTION column (and --json)."""
    model = tiny_model()  # 3 layers
    ids = prefix_ids()
    cache = prefill(model, ids)
    for attn in (AttentionConfig(method="dense", start_layer=0), AttentionConfig(start_layer=1),
                 AttentionConfig(start_layer=2, n_local=64), AttentionConfig(start_layer=3)):
        key = kvstore.cache_key(kvstore.model_fingerprint(model, tokenizer), attn, ids)
        kvstore.save_kv(kvfolder.kv_path_for(key), cache, ids, make_meta(model, tokenizer, attn))
    (kvfolder.kv_dir() / "broken.safetensors").write_bytes(b"nope")
    out = CliRunner().invoke(app, ["ls"])
    assert out.exit_code == 0, out.output
    head, *rows = out.stdout.splitlines()[:6]
    assert head.split()[:4] == ["KEY", "DOCUMENT", "MODEL", "ATTENTION"]
    column = {row.split()[0]: row[head.index("ATTENTION"):].split("  ")[0] for row in rows}
    assert column.pop("broken") == "-"
    assert sorted(column.values()) == ["dense", "tri@1 8/512/128", "tri@2 8/64/128", "tri@3 8/512/128 (dense)"], \
        out.stdout
    listed = json.loads(CliRunner().invoke(app, ["ls", "--json"]).stdout)
    made = sorted((e["attention"]["method"], e["attention"]["start_layer"], e["attention"]["n_local"])
                  for e in listed if e["attention"] is not None)
    assert made == [("dense", 0, 512), ("trimix", 1, 512), ("trimix", 2, 64), ("trimix", 3, 512)]
    assert [e["attention"] for e in listed if e["key"] == "broken"] == [None]


def _default_sigint() -> None:
    """In the child: Ctrl-C interrupts, even where this test runs with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _clear_at_a_terminal(answer: bytes | None) -> tuple[int, str]:
    """`tmix cache clear` with a terminal for stdin: `answer` typed at its prompt, or, for None, Ctrl-C (SIGINT)
    there; (exit code, its output). The output goes to a pipe, so no line editor takes the terminal (and its
    typeahead) over."""
    import select

    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tmixcli", "cache", "clear"], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint)
    os.close(slave)
    shown, deadline = b"", time.monotonic() + 60
    while b"[y/N]" not in shown and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            shown += os.read(proc.stdout.fileno(), 4096)
    if answer is None:
        proc.send_signal(signal.SIGINT)
    else:
        os.write(master, answer)
    try:
        shown += proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
        os.close(master)
    return proc.returncode, shown.decode(errors="replace")


@pytest.mark.parametrize("answer", [b"n\n", b"\n"])
def test_clear_declined_at_the_prompt_removes_nothing_and_succeeds(answer: bytes) -> None:
    """'n' or Enter (the default N) is a normal answer: "nothing removed", exit 0; not Ctrl-C's 130."""
    paths = _aged({"old": 400, "new": 200})
    code, shown = _clear_at_a_terminal(answer)
    assert code == 0 and "Remove 2 KV files (600 B)? [y/N]" in shown and "nothing removed" in shown, shown
    assert "aborted" not in shown and all(p.exists() for p in paths.values())


def test_clear_at_the_prompt_yes_removes_and_ctrl_c_stays_130() -> None:
    paths = _aged({"old": 400})
    code, shown = _clear_at_a_terminal(None)
    assert code == 130 and "tmix: interrupted" in shown and paths["old"].exists(), shown
    code, shown = _clear_at_a_terminal(b"y\n")
    assert code == 0 and "removed 1 KV file" in shown and not paths["old"].exists(), shown


def test_invalid_file_listed_not_fatal() -> None:
    (kvfolder.kv_dir() / "broken.safetensors").write_bytes(b"nope")
    (entry,) = kvfolder.list_entries()
    assert entry["key"] == "broken" and "not a safetensors" in entry["error"]
    out = CliRunner().invoke(app, ["ls"])
    assert out.exit_code == 0 and "(invalid:" in out.stdout


def test_empty_key_matches_nothing(tokenizer) -> None:
    """An empty or blank key is refused, not taken as the prefix of every key (it removed the only file)."""
    runner = CliRunner()
    saved(tiny_model(), tokenizer, prefix_ids(seed=1), doc_name="a.txt")
    for argv in (["rm", ""], ["rm", "  "], ["info", ""], ["info", " "]):
        out = runner.invoke(app, argv)
        assert out.exit_code == 2 and _err(out).count("\n") == 1 and "is empty" in _err(out), (argv, _err(out))
    assert len(kvfolder.list_entries()) == 1


def test_cached_file_named_by_its_name_or_path(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cache info` and `cache rm` take KEY.safetensors or its path as well as the key; a file elsewhere, or a
    device, is refused in one line."""
    runner = CliRunner()
    keys = _two_files(tokenizer)
    name = f"{keys[0]}.safetensors"
    info = runner.invoke(app, ["info", name])
    assert info.exit_code == 0 and f"path: {kvfolder.kv_dir() / name}" in info.stdout, _err(info)
    elsewhere = tmp_path / "copy" / name
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((kvfolder.kv_dir() / name).read_bytes())
    for argv, says in ((["rm", str(elsewhere)], f"{elsewhere} is not in the cache folder"),
                       (["rm", str(tmp_path / "x.safetensors")], "x.safetensors: no such file"),
                       (["info", "/dev/null"], "/dev/null: a device, not a regular file"),
                       (["rm", "nothing.safetensors"], "no KV file nothing.safetensors in")):
        out = runner.invoke(app, argv)
        assert out.exit_code == 2 and _err(out).count("\n") == 1 and says in _err(out), (argv, _err(out))
    monkeypatch.chdir(kvfolder.kv_dir().parent)
    gone = runner.invoke(app, ["rm", name, f"kv/{keys[1]}.safetensors"])
    assert gone.exit_code == 0 and kvfolder.list_entries() == [] and elsewhere.is_file(), _err(gone)


def test_parse_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kvfolder.parse_size("20G") == 20 * 2**30 and kvfolder.parse_size("1.5 GiB") == 3 * 2**29
    assert kvfolder.parse_size("500m") == 500 * 2**20 and kvfolder.parse_size("4096") == 4096
    assert kvfolder.parse_size("off") is None and kvfolder.parse_size("0") == 0 == kvfolder.parse_size("0M")
    for value, limit in (("0", None), ("off", None), ("0M", 0), ("1K", 1024)):  # TMIX_CACHE_MAX=0 stays "no cap"
        monkeypatch.setenv("TMIX_CACHE_MAX", value)
        assert kvfolder.cache_limit() == limit
    for bad in ("lots", "-1G", "5Q", "G"):
        with pytest.raises(TmixError, match="TMIX_CACHE_MAX must be a size"):
            kvfolder.parse_size(bad)


def _aged(sizes: dict[str, int]) -> dict[str, Path]:
    """Fake KV files with the given sizes, each used one minute after the one before."""
    paths = {}
    for age, (name, size) in enumerate(sizes.items()):
        p = kvfolder.kv_dir() / f"{name}.safetensors"
        p.write_bytes(b"\0" * size)
        os.utime(p, (1_700_000_000 + 60 * age,) * 2)
        paths[name] = p
    return paths


def test_trim_cache_evicts_least_recently_used() -> None:
    paths = _aged({"old": 400, "mid": 300, "new": 200})
    assert kvfolder.trim_cache(None) == ([], []) and kvfolder.trim_cache(900) == ([], [])
    assert [e["key"] for e in kvfolder.trim_cache(600)[0]] == ["old"] and not paths["old"].exists()
    assert [e["key"] for e in kvfolder.trim_cache(100, keep=paths["mid"])[0]] == ["new"]
    assert [e["key"] for e in kvfolder.list_entries()] == ["mid"]  # the kept file stays even over the cap


def test_cli_prune_and_ls_total(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    _aged({"old": 3000, "mid": 2000, "new": 1000})
    monkeypatch.setenv("TMIX_CACHE_MAX", "4K")
    out = runner.invoke(app, ["ls"])
    assert out.exit_code == 0 and "3 files, 5.9 KiB" in out.stdout and "cap 4.0 KiB" in out.stdout
    out = runner.invoke(app, ["prune"])
    assert out.exit_code == 0 and "removed old" in out.stdout and "2.9 KiB in" in out.stdout
    out = runner.invoke(app, ["prune", "--max-size", "1500"])
    assert "removed mid" in out.stdout and [e["key"] for e in kvfolder.list_entries()] == ["new"]
    bad = runner.invoke(app, ["prune", "--max-size", "huge"])
    assert bad.exit_code == 2 and "--max-size must be a size" in _err(bad)
    monkeypatch.setenv("TMIX_CACHE_MAX", "0")  # no cap, as it always read
    out = runner.invoke(app, ["prune"])
    assert out.exit_code == 0 and "no size cap" in out.stdout and len(kvfolder.list_entries()) == 1
    out = runner.invoke(app, ["prune", "--max-size", "0"])  # zero bytes, as 0M is
    assert out.exit_code == 0 and "removed new" in out.stdout and "cap 0 B (--max-size" in out.stdout
    assert kvfolder.list_entries() == []


_UNLINK = Path.unlink


def _read_only(monkeypatch: pytest.MonkeyPatch, only: set[str] | None = None) -> None:
    """Files in the cache cannot be removed (all of them, or those named in `only`), as on a read-only file system
    (chmod does not stop root)."""
    root = kvfolder.kv_dir().parent

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if root in self.parents and (only is None or self.name in only):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        _UNLINK(self, missing_ok)
    monkeypatch.setattr(Path, "unlink", unlink)


def test_trim_cache_skips_a_file_it_cannot_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _aged({"old": 400, "mid": 300, "new": 200})
    _read_only(monkeypatch, {"old.safetensors"})
    removed, failed = kvfolder.trim_cache(600)
    assert [e["key"] for e in removed] == ["mid"] and failed == [(paths["old"], "Read-only file system")]
    assert kvfolder.cannot_remove(failed) == f"cannot remove {paths['old']}: Read-only file system"


@pytest.mark.parametrize("argv", [["rm", "old", "new"], ["prune", "--max-size", "1"], ["clear", "--yes"]])
def test_cache_commands_on_a_read_only_cache_one_line(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    """rm, prune and clear remove what they can, then name the rest in one error line: no traceback."""
    runner = CliRunner()
    paths = _aged({"old": 400, "mid": 300, "new": 200})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (kvfolder.kv_dir() / f".x.safetensors.{int(gone.stdout)}.0123abcd.tmp").write_bytes(b"0" * 10)
    _read_only(monkeypatch)
    out = runner.invoke(app, argv)
    err = _err(out)
    assert out.exit_code == 2 and err.count("\n") == 1 and err.startswith("tmix: error: cannot remove "), err
    assert "Read-only file system" in err and all(p.exists() for p in paths.values())
    _read_only(monkeypatch, {"old.safetensors"})
    out = runner.invoke(app, argv)
    err = _err(out)
    assert out.exit_code == 2 and err == f"tmix: error: cannot remove {paths['old']}: Read-only file system\n", err
    assert "removed new" in out.stdout or "removed 2 KV files" in out.stdout
    assert [e["key"] for e in kvfolder.list_entries()] == (["mid", "old"] if argv[0] == "rm" else ["old"])


def test_unreadable_cache_folder_is_one_line_and_offers_nothing_to_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    from tmixcli import reuse

    _aged({"old": 400})

    def denied(self: Path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(TmixError, match="cannot read the cache folder .*: Permission denied"):
        kvfolder.list_entries()
    assert reuse.best_file(list(range(300)), {}, AttentionConfig()) is None
    out = CliRunner().invoke(app, ["ls"])
    assert out.exit_code == 2 and _err(out).count("\n") == 1 and "cannot read the cache folder" in _err(out)


def test_disk_full_hint_fits_where_the_file_goes(tmp_path: Path) -> None:
    """`tmix cache clear` is suggested only where the cache holds files to clear (other KV files, leftovers of
    interrupted saves) on the disk where the file goes."""
    full = OSError(errno.ENOSPC, "No space left on device")
    inside = kvfolder.kv_path_for("k")
    assert str(kvwrite.write_error(inside, full)).endswith(f"; free space in {kvfolder.kv_dir()}")
    inside.write_bytes(b"half")  # the file being written is nothing to clear
    assert "cache clear" not in str(kvwrite.write_error(inside, full))
    inside.unlink()
    elsewhere = str(kvwrite.write_error(tmp_path / "x.kv", full))
    assert "cache clear" not in elsewhere and f"free space in {tmp_path}, or write the file to another" in elsewhere
    leftover = kvfolder.kv_dir() / ".gone.safetensors.999999999.0123abcd.tmp"
    leftover.write_bytes(b"0" * 100)
    assert "free space or run `tmix cache clear`" in str(kvwrite.write_error(inside, full))
    leftover.unlink()
    _aged({"old": 400})
    assert "free space or run `tmix cache clear`" in str(kvwrite.write_error(inside, full))
    shared = str(kvwrite.write_error(tmp_path / "x.kv", full))
    assert "run `tmix cache clear` (the KV cache is on the same disk)" in shared


def test_ls_shows_temp_files_and_prune_removes_leftovers(tokenizer) -> None:
    """A dead writer's temp file is a leftover (listed, pruned); a live writer's is listed as being written, kept."""
    import subprocess
    import sys

    runner = CliRunner()
    _two_files(tokenizer)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = kvfolder.kv_dir() / f".x.safetensors.{int(gone.stdout)}.0123abcd.tmp"
    live = kvfolder.kv_dir() / f".y.safetensors.{os.getpid()}.89abcdef.tmp"
    dead.write_bytes(b"0" * 3000)
    live.write_bytes(b"0" * 5000)
    with open(live, "rb"):  # what its writer, this process, has open
        out = runner.invoke(app, ["ls"]).stdout
        assert "1 leftover temp file of an interrupted save, 2.9 KiB: `tmix cache prune` removes it" in out, out
        assert "1 KV file being written now, 4.9 KiB so far" in out
        pruned = runner.invoke(app, ["prune"])
        assert pruned.exit_code == 0 and "removed 1 leftover temp file (2.9 KiB)" in pruned.stdout
        assert not dead.exists() and live.exists() and len(kvfolder.list_entries()) == 2
        assert "leftover" not in runner.invoke(app, ["ls"]).stdout


def test_cache_folder_that_is_a_file_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tmixcli.paths import cache_dir, cache_subdir

    (tmp_path / "file").write_text("")
    for root, says in ((tmp_path / "file", "it exists and is not a folder"),
                       (tmp_path / "file" / "cache", "a part of its path is a file, not a folder")):
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        with pytest.raises(TmixError, match=f"cannot use the cache folder {root} \\(TMIX_CACHE_DIR\\): {says}$"):
            cache_dir()
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "kv").write_text("")
    with pytest.raises(TmixError, match="cannot use the cache folder .*kv: it exists and is not a folder$"):
        cache_subdir("kv")


def test_info_of_a_truncated_file_shows_what_it_can(tokenizer) -> None:
    """`cache info` on a KV file cut short prints its metadata and sizes, then the damage as its one error line."""
    runner = CliRunner()
    keys = _two_files(tokenizer)
    path = kvfolder.kv_dir() / f"{keys[0]}.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    out = runner.invoke(app, ["info", str(path)])
    assert out.exit_code == 2 and "model_fingerprint" in out.stdout and "MISMATCH" in out.stdout
    assert _err(out).count("\n") == 1 and "is truncated" in _err(out)
    facts = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert not facts["size_matches"] and "is truncated" in facts["damage"]
    assert facts["metadata"]["n_tokens"] == str(T)
    intact = json.loads(runner.invoke(app, ["info", keys[1], "--json"]).stdout)
    assert intact["size_matches"] and intact["damage"] is None
