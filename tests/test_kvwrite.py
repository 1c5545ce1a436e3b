"""KV files written while the prefill runs (kvwrite.py): same file as a whole save, written early, never half left."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tmixcli import attention, generate, kvfolder, kvheader, kvread, kvstore, kvwrite
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError

T = 45
META = {"doc_name": "d.txt", "model_id": "tiny"}


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


def tiny(layers: int = 3):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    attention.attach(model, AttentionConfig(method="trimix", start_layer=1, n_init=2, n_local=8, last_n=4))
    return model


def ids(n: int = T) -> list[int]:
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(1)).tolist()


def writer_for(model, path: Path, prefix: list[int]) -> kvwrite.KVWriter:
    n_layers, kv_heads, head_dim = kvstore.model_kv_dims(model.config)
    return kvwrite.KVWriter(path, n_layers, kv_heads, head_dim, torch.float32, prefix, META)


def same_file(a: Path, b: Path) -> None:
    ca, ia, ma = kvread.load_kv(a)
    cb, ib, mb = kvread.load_kv(b)
    assert ia == ib and {k: v for k, v in ma.items() if k != "prefill_s"} == mb
    for x, y in zip(ca.layers, cb.layers, strict=True):
        assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("chunk", [None, 7, 16])
def test_streamed_file_equals_a_whole_save(tmp_path: Path, chunk) -> None:
    """Rows handed over per layer and chunk give the file a save of the finished cache gives."""
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "streamed.safetensors", prefix)
    calls = []

    def on_rows(i, k, v, start):
        calls.append((i, start, k.shape[-2]))
        w.rows(i, k, v, start)
    cache, _ = generate.prefill(model, prefix, chunk_size=chunk, on_rows=on_rows)
    w.finish({"prefill_s": "1.250"})
    assert w.wait() == (tmp_path / "streamed.safetensors").stat().st_size
    kvwrite.save_kv(tmp_path / "whole.safetensors", cache, prefix, META)
    same_file(tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors")
    assert kvheader.read_meta(tmp_path / "streamed.safetensors")["prefill_s"] == "1.250"
    n_chunks = -(-T // (chunk or T))
    assert len(calls) == 3 * n_chunks and {c[0] for c in calls} == {0, 1, 2}
    assert sum(c[2] for c in calls if c[0] == 0) == T
    assert leftovers(tmp_path) == ["streamed.safetensors", "whole.safetensors"]


def test_rows_are_written_during_the_prefill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer 0's rows reach the disk before the last layer has run."""
    written = threading.Event()
    real = kvwrite._pwrite

    def spy(fd, data, offset):
        real(fd, data, offset)
        if offset > 0:
            written.set()
    monkeypatch.setattr(kvwrite, "_pwrite", spy)
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    seen = []

    def on_rows(i, k, v, start):
        w.rows(i, k, v, start)
        if i == 2:
            seen.append(written.wait(10))
    generate.prefill(model, prefix, on_rows=on_rows)
    w.finish()
    w.wait()
    assert seen == [True]


def test_reused_rows_then_the_rest(tmp_path: Path) -> None:
    """A prefill that starts from cached rows: those rows first, then the new ones, give the whole file."""
    model, prefix = tiny(), ids()
    base, _ = generate.prefill(model, prefix[:20])
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    for i, layer in enumerate(base.layers):
        w.rows(i, layer.keys, layer.values, 0)
    cache, _ = generate.prefill(model, prefix, cache=base, chunk_size=10, on_rows=w.rows)
    w.finish()
    w.wait()
    kvwrite.save_kv(tmp_path / "whole.safetensors", cache, prefix, META)
    same_file(tmp_path / "kv.safetensors", tmp_path / "whole.safetensors")


Bad = namedtuple("Bad", "layer start rows heads")


@pytest.mark.parametrize("bad", [Bad(0, 5, T, 2), Bad(0, 0, T, 1), Bad(3, 0, T, 2), Bad(0, 0, T + 1, 2)],
                         ids=["out-of-order", "other-shape", "no-such-layer", "too-many-rows"])
def test_rows_that_do_not_fit_give_up(tmp_path: Path, bad: Bad) -> None:
    """Rows that do not fit the plan end the writer quietly: no temp file, and the caller saves whole."""
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    k = torch.zeros(1, bad.heads, bad.rows, 16)
    w.rows(bad.layer, k, k, bad.start)
    assert not w.usable
    w.finish()
    assert leftovers(tmp_path) == []
    with pytest.raises(TmixError, match="did not fit its plan"):  # never a size for a file that is not there
        w.wait()


def test_unfinished_rows_give_up(tmp_path: Path) -> None:
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    w.rows(0, torch.zeros(1, 2, T, 16), torch.zeros(1, 2, T, 16), 0)
    w.finish()  # layers 1 and 2 never came
    assert not w.usable and leftovers(tmp_path) == []


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    w.rows(0, torch.zeros(1, 2, T, 16), torch.zeros(1, 2, T, 16), 0)
    kvwrite.abort_all()  # what `tmix` does when a command fails after its prefill
    assert leftovers(tmp_path) == []
    with pytest.raises(TmixError, match="could not write KV file"):
        w.wait()


def test_not_enough_space_is_known_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(kvwrite.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    writes = []
    monkeypatch.setattr(kvwrite, "_pwrite", lambda *a: writes.append(a))
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    with pytest.raises(TmixError, match=r"disk full while writing KV file .*needed, 1000 B free"):
        w.wait()
    assert writes == [] and leftovers(tmp_path) == []


def test_disk_full_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def full(fd, data, offset):
        calls.append(offset)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.pwrite(fd, data, offset)
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    generate.prefill(model, prefix, on_rows=w.rows)
    w.finish()
    assert w.usable  # so the caller reports the error rather than trying the whole save again
    with pytest.raises(TmixError, match="disk full while writing KV file"):
        w.wait()
    assert leftovers(tmp_path) == []


def test_ctrl_c_while_creating_the_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_):
        raise KeyboardInterrupt
    monkeypatch.setattr(kvwrite.shutil, "disk_usage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer_for(tiny(), tmp_path / "kv.safetensors", ids())
    assert leftovers(tmp_path) == []


def test_abort_during_the_final_fsync_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second Ctrl-C while the file is being synced: the user is told "not saved", so it must not appear."""
    syncing, real = threading.Event(), os.fsync

    def slow(fd):
        syncing.set()
        time.sleep(0.3)
        real(fd)
    monkeypatch.setattr(os, "fsync", slow)
    model, prefix = tiny(), ids()
    w = writer_for(model, tmp_path / "kv.safetensors", prefix)
    generate.prefill(model, prefix, on_rows=w.rows)
    w.finish()
    assert syncing.wait(10)
    w.abort()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["a" * 250 + ".safetensors", "b" * 230 + ".kv"])
def test_too_long_output_name_is_refused_first(capsys, tmp_path: Path, tiny_dir: str, name: str) -> None:
    """`tmix prefill -o` with a name the file system (or the temp name) cannot hold: one line, exit 2, no prefill."""
    from runcli import DOCS, TINY, run

    code, _, err = run(capsys, "prefill", str(DOCS / "notes.txt"), "-o", str(tmp_path / name), "--model", tiny_dir,
                       *TINY)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "-o" in err and "too long" in err
    assert leftovers(tmp_path) == []


def test_a_file_that_cannot_be_created_is_reported_by_wait(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a folder")
    w = writer_for(tiny(), tmp_path / "plain" / "kv.safetensors", ids())
    w.rows(0, torch.zeros(1, 2, T, 16), torch.zeros(1, 2, T, 16), 0)  # ignored: the writer has failed
    w.finish()
    with pytest.raises(TmixError, match="could not write KV file"):
        w.wait()
    assert leftovers(tmp_path) == ["plain"]


def test_ctrl_c_during_the_prefill_leaves_nothing(capsys, monkeypatch, tmp_path: Path, tiny_dir: str) -> None:
    """Ctrl-C while `ask` prefills (its KV file already half written): exit 130, one line, no file, no temp file."""
    from runcli import DOCS, TINY, run

    real = generate.prefill

    def interrupted(*args, on_rows=None, **kw):
        def rows(i, k, v, start):
            on_rows(i, k, v, start)
            if i == 1:
                raise KeyboardInterrupt
        return real(*args, on_rows=rows, **kw)
    monkeypatch.setattr(generate, "prefill", interrupted)
    doc = tmp_path / "notes.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:900])  # fits the tiny model's context
    code, out, err = run(capsys, "ask", str(doc), "Who is the project manager?", "--model", tiny_dir,
                         "--max-new-tokens", "8", *TINY)
    assert code == 130, err
    assert out == "" and err.rstrip().endswith("tmix: interrupted") and "Traceback" not in err
    assert kvfolder.list_entries() == [] and kvfolder.temp_files() == []
