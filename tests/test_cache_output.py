"""`tmix cache` as scripts see it: `ls --json` and `info --json` in ask's words, errors alike with and without --json,
no folder created by a listing, TMIX_CACHE_MAX read the same everywhere, and a save in progress named by prune and
clear."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from runcli import run, tmix_subprocess
from tmixcli import kvfolder, kvstore, kvwrite
from tmixcli.config import AttentionConfig
from tmixcli.errors import TmixError
from tmixcli.sizes import human_size

TWENTY_G = 20 * 2**30
SPAN = AttentionConfig(n_local=16, last_n=8, start_layer=1)  # dense up to 8 + 16 + 8 = 32 tokens


def _kv_file(key: str, tokens: int, attn: AttentionConfig = SPAN) -> Path:
    """A 2-layer KV file of `tokens` zero rows in the cache folder, as tmix writes it."""
    cache = DynamicCache()
    for layer in range(2):
        cache.update(torch.zeros(1, 2, tokens, 16), torch.zeros(1, 2, tokens, 16), layer)
    meta = kvstore.build_meta(model_id="tiny", fingerprint="f" * 64, dtype=torch.float32, attn=attn,
                              doc_name=f"{key}.txt", doc_sha256="ab" * 32, template_hash="t", n_tokens=tokens)
    path = kvfolder.kv_path_for(key)
    kvwrite.save_kv(path, cache, list(range(tokens)), meta)
    return path


def _held(name: str, size: int):
    """A temp file of a save in progress: its writer holds the lock (here, this test)."""
    path = kvfolder.kv_dir() / f".{name}.safetensors.1.0123abcd.lk.tmp"
    path.write_bytes(b"0" * size)
    f = open(path, "rb")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def test_ls_json_is_one_object_in_the_words_of_ask_json(capsys, monkeypatch, tmp_path):
    """ls --json: the entries (model, tokens as an int, bytes, an absolute kv_path, attention with
    all_layers_dense), the total, the cap and the temp files the text form shows; info --json the same fields."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMIX_CACHE_DIR", "relative-cache")  # kv_path is absolute all the same
    long, short = _kv_file("long", 40), _kv_file("short", 20)
    late = _kv_file("late", 40, AttentionConfig(n_local=16, last_n=8, start_layer=2))  # past the 2 layers
    dense = _kv_file("dense", 40, AttentionConfig(method="dense"))
    (kvfolder.kv_dir() / "broken.safetensors").write_bytes(b"nope")
    (kvfolder.kv_dir() / ".gone.safetensors.1.0123abcd.lk.tmp").write_bytes(b"0" * 300)  # nobody holds it
    with _held("busy", 100):
        code, out, err = run(capsys, "cache", "ls", "--json")
        text = run(capsys, "cache", "ls")[1]
    assert code == 0 and err == "", err
    listing = json.loads(out)
    assert listing["folder"] == str(tmp_path / "relative-cache" / "kv") and listing["cap_bytes"] == TWENTY_G
    taken = {name: (kvfolder.kv_dir() / f".{name}.safetensors.1.0123abcd.lk.tmp").stat().st_blocks * 512
             for name in ("gone", "busy")}  # disk_bytes: what each takes on disk (bytes: its size)
    assert listing["temp_files"] == {"leftover": {"count": 1, "bytes": 300, "disk_bytes": taken["gone"]},
                                     "in_progress": {"count": 1, "bytes": 100, "disk_bytes": taken["busy"]}}
    entries = {e["key"]: e for e in listing["entries"]}
    assert listing["total_bytes"] == sum(e["bytes"] for e in entries.values()) > 0
    for key, path in (("long", long), ("short", short), ("late", late), ("dense", dense)):
        e = entries[key]
        assert e["kv_path"] == str(tmp_path / path) and Path(e["kv_path"]).is_absolute(), e
        assert e["model"] == "tiny" and isinstance(e["tokens"], int) and e["bytes"] == path.stat().st_size, e
        assert not {"model_id", "n_tokens", "size", "path", "meta"} & set(e), e
    assert {k: entries[k]["attention"]["all_layers_dense"] for k in ("long", "short", "late", "dense")} == \
        {"long": False, "short": True, "late": True, "dense": True}
    assert entries["short"]["tokens"] == 20 and entries["long"]["attention"]["n_local"] == 16
    broken = entries["broken"]
    assert broken["error"] and broken["attention"] is None and broken["model"] is None and broken["tokens"] is None

    rows = {line.split()[0]: line for line in text.splitlines()[1:6]}
    assert "tri@1 8/16/8 " in rows["long"] and "(dense)" not in rows["long"], text
    assert "tri@1 8/16/8 (dense)" in rows["short"] and "tri@2 8/16/8 (dense)" in rows["late"], text
    assert f"1 leftover temp file of an interrupted save, {human_size(taken['gone'])} on disk" in text, text
    assert "1 KV file being written now, 100 B when done" in text, text

    code, out, err = run(capsys, "cache", "info", "short", "--json")
    facts = json.loads(out)
    assert code == 0 and facts["kv_path"] == str(tmp_path / short) and facts["tokens"] == 20, facts
    assert facts["model"] == "tiny" and facts["bytes"] == short.stat().st_size and facts["size_matches"], facts
    assert facts["attention"]["all_layers_dense"] is True and facts["metadata"]["n_tokens"] == "20", facts
    assert "path" not in facts and "file_size" not in facts


@pytest.mark.parametrize("argv", [["ls"], ["ls", "--json"], ["prune"], ["clear", "--yes"], ["rm", "abc"],
                                  ["info", "abc"], ["info", "abc", "--json"]])
def test_an_unusable_cache_folder_is_the_same_error_with_and_without_json(capsys, monkeypatch, tmp_path, argv):
    """A cache folder that is a file, or under one, or a kv folder that is a file: one error line, exit 2, stdout
    empty, for every cache command (ls --json printed [] and exit 0)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "kv").write_text("x")
    for root, says in ((tmp_path / "file", f"{tmp_path / 'file'} (TMIX_CACHE_DIR): it exists and is not a folder"),
                       (tmp_path / "file" / "sub", "(TMIX_CACHE_DIR): a part of its path is a file, not a folder"),
                       (tmp_path / "root", f"{tmp_path / 'root' / 'kv'}: it exists and is not a folder")):
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        code, out, err = run(capsys, "cache", *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, out, err)
        assert err.startswith("tmix: error: cannot use the cache folder ") and says in err, err


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_a_bad_cache_cap_stops_ls_before_any_output(capsys, monkeypatch, as_json):
    """ls with a TMIX_CACHE_MAX that is not a size fails alike with and without --json, before the table."""
    _kv_file("one", 40)
    for value in ("5X", "none"):  # `none` is not documented: off is the word for no cap
        monkeypatch.setenv("TMIX_CACHE_MAX", value)
        code, out, err = run(capsys, "cache", "ls", *as_json)
        assert code == 2 and out == "", out
        assert err == f"tmix: error: TMIX_CACHE_MAX must be a size like 20G, 500M or off, not {value!r}\n", err


def test_an_empty_cache_cap_is_the_default(capsys, monkeypatch):
    """TMIX_CACHE_MAX set but empty (`TMIX_CACHE_MAX=$CAP`, CAP unset) keeps the 20G cap, as an unset one."""
    _kv_file("one", 40)
    for value in ("", "  "):
        monkeypatch.setenv("TMIX_CACHE_MAX", value)
        assert kvfolder.cache_limit() == TWENTY_G
        code, out, _ = run(capsys, "cache", "ls")
        assert code == 0 and "cap 20.0 GiB (TMIX_CACHE_MAX" in out, out
        assert json.loads(run(capsys, "cache", "ls", "--json")[1])["cap_bytes"] == TWENTY_G
    monkeypatch.setenv("TMIX_CACHE_MAX", "off")
    assert json.loads(run(capsys, "cache", "ls", "--json")[1])["cap_bytes"] is None
    with pytest.raises(TmixError, match="must be a size"):
        kvfolder.parse_size("none")


def test_cache_commands_never_create_the_cache_folder(capsys, monkeypatch, tmp_path):
    """A mistyped TMIX_CACHE_DIR is listed as empty, never made (ls made it and its kv folder)."""
    root = tmp_path / "typo"
    monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
    for argv, code in ((["ls"], 0), (["ls", "--json"], 0), (["prune"], 0), (["prune", "--max-size", "0"], 0),
                       (["clear", "--yes"], 0), (["rm", "abc"], 2), (["info", "abc"], 2)):
        assert run(capsys, "cache", *argv)[0] == code, argv
        assert not root.exists(), argv
    out = run(capsys, "cache", "ls")[1]
    assert out == f"no KV files in {root / 'kv'}\n", out


def test_prune_and_clear_say_that_a_save_in_progress_is_left_alone(capsys):
    """A save being written is never removed; prune and clear now say so, as ls tells it."""
    _kv_file("old", 40)
    with _held("busy", 2048) as held:
        code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
        assert code == 0 and "removed old" in out, out
        assert out.endswith("\n1 KV file being written now, 2.0 KiB when done: left alone\n"), out
        _kv_file("again", 40)
        code, out, _ = run(capsys, "cache", "clear", "--yes")
        assert code == 0 and "removed 1 KV file" in out, out
        assert out.endswith("\n1 KV file being written now, 2.0 KiB when done: left alone\n"), out
        code, out, _ = run(capsys, "cache", "clear", "--yes")  # nothing else to remove
        left = "1 KV file being written now, 2.0 KiB when done: left alone"
        assert out == f"no KV files in {kvfolder.kv_dir()}\n{left}\n"
        assert Path(held.name).exists()
    assert "being written" not in run(capsys, "cache", "prune")[1]


def test_a_save_in_progress_is_told_by_its_size_when_done():
    """The writer sizes its temp file first: `ls` said "126.5 MiB so far" from the first second of a prefill. It
    now says that size is the file's when done, and the finished file has it."""
    from tmixcli import kvwrite

    tokens = 64
    meta = kvstore.build_meta(model_id="tiny", fingerprint="f" * 64, dtype=torch.float32, attn=SPAN,
                              doc_name="busy.txt", doc_sha256="ab" * 32, template_hash="t", n_tokens=tokens)
    writer = kvwrite.KVWriter(kvfolder.kv_path_for("busy"), 2, 2, 16, torch.float32, list(range(tokens)), meta)
    try:
        rows = torch.zeros(1, 2, 8, 16)
        writer.rows(0, rows, rows, 0)  # 8 of 64 rows of one of 2 layers
        listed = tmix_subprocess("cache", "ls")  # another process: tmix's main here would abort this writer
        out = listed.stdout
        assert listed.returncode == 0 and f"1 KV file being written now, {human_size(writer.size)} when done\n" in out
        assert "so far" not in out
        for layer in range(2):
            rest = torch.zeros(1, 2, tokens - 8 if layer == 0 else tokens, 16)
            writer.rows(layer, rest, rest, 8 if layer == 0 else 0)
        writer.finish()
        assert writer.wait() > 0 and kvfolder.kv_path_for("busy").stat().st_size == writer.size
    finally:
        writer.abort()
