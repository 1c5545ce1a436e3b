"""`tmix cache`: ls, info, rm and clear on KV files saved, damaged, being written or left over (tiny random models)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvfiles import T, _aged, make_meta, prefill, prefix_ids, saved, tiny_model
from kvfiles import tokenizer as tokenizer  # the fixture (the alias tells ruff it is used)
from runcli import run
from tmixcli import kvfolder, kvstore, kvwrite
from tmixcli.config import AttentionConfig
from tmixcli.sizes import human_size

REPO = Path(__file__).resolve().parents[1]


def _two_files(tokenizer) -> list[str]:
    model = tiny_model()
    saved(model, tokenizer, prefix_ids(seed=1), doc_name="a.txt")
    time.sleep(0.01)
    saved(model, tokenizer, prefix_ids(seed=2), doc_name="b.pdf")
    return [e["key"] for e in kvfolder.list_entries()]


def tmix_cache(capsys, *argv: str) -> tuple[int, str, str]:
    """`tmix cache argv` in-process: (exit code, stdout, stderr)."""
    return run(capsys, "cache", *argv)


def test_list_entries_and_cli(tokenizer, capsys) -> None:
    keys = _two_files(tokenizer)
    (kvfolder.kv_dir() / ".leftover.safetensors.1.tmp").write_bytes(b"junk")
    entries = kvfolder.list_entries()
    assert {e["doc_name"] for e in entries} == {"a.txt", "b.pdf"}
    assert all(e["n_tokens"] == T and e["model_id"] == "tiny" and e["error"] is None for e in entries)

    code, out, _ = tmix_cache(capsys, "ls")
    assert code == 0 and "a.txt" in out and "KiB" in out and "LAST USED" in out
    listed = json.loads(tmix_cache(capsys, "ls", "--json")[1])["entries"]
    assert sorted(e["key"] for e in listed) == sorted(keys)

    code, out, _ = tmix_cache(capsys, "info", keys[0][:10])
    assert code == 0 and "model_fingerprint" in out and ": ok)" in out
    facts = json.loads(tmix_cache(capsys, "info", entries[0]["path"], "--json")[1])
    assert facts["size_matches"] and facts["metadata"]["n_tokens"] == str(T)

    code, _, err = tmix_cache(capsys, "rm", "zzzz")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("tmix: error: no KV file with key 'zzzz'")
    assert tmix_cache(capsys, "rm", "")[0] == 2  # an empty key is refused (test_empty_key_matches_nothing)
    code, out, _ = tmix_cache(capsys, "rm", keys[0][:8])
    assert code == 0 and f"removed {keys[0]}" in out
    assert [e["key"] for e in kvfolder.list_entries()] == keys[1:]


def test_cli_clear(tokenizer, capsys) -> None:
    _two_files(tokenizer)
    code, _, err = tmix_cache(capsys, "clear")  # stdin is no terminal here (pytest's)
    assert code == 2 and "--yes" in err
    assert len(kvfolder.list_entries()) == 2
    code, out, _ = tmix_cache(capsys, "clear", "--yes")
    assert code == 0 and "removed 2 KV files" in out
    assert kvfolder.list_entries() == []
    assert "no KV files" in tmix_cache(capsys, "ls")[1]


def test_ls_tells_files_made_with_other_attention_apart(tokenizer, capsys) -> None:
    """Files of one document made with other attention settings differ in ls's ATTENTION column (and --json)."""
    model = tiny_model()  # 3 layers
    ids = prefix_ids()
    cache = prefill(model, ids)
    for attn in (AttentionConfig(method="dense", start_layer=0), AttentionConfig(start_layer=1),
                 AttentionConfig(start_layer=2, n_local=64), AttentionConfig(start_layer=3)):
        key = kvstore.cache_key(kvstore.model_fingerprint(model, tokenizer), attn, ids)
        kvwrite.save_kv(kvfolder.kv_path_for(key), cache, ids, make_meta(model, tokenizer, attn))
    (kvfolder.kv_dir() / "broken.safetensors").write_bytes(b"nope")
    code, out, err = tmix_cache(capsys, "ls")
    assert code == 0, err
    head, *rows = out.splitlines()[:6]
    assert head.split()[:5] == ["KEY", "DOCUMENT", "VERSION", "MODEL", "ATTENTION"]
    column = {row.split()[0]: row[head.index("ATTENTION"):].split("  ")[0] for row in rows}
    assert column.pop("broken") == "-"
    # T = 12 tokens, within n_init + n_local + last_n: every trimix file is dense in every layer (ls says so)
    assert sorted(column.values()) == ["dense", "tri@1 8/512/128 (dense)", "tri@2 8/64/128 (dense)",
                                       "tri@3 8/512/128 (dense)"], out
    listed = json.loads(tmix_cache(capsys, "ls", "--json")[1])["entries"]
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


def test_invalid_file_listed_not_fatal(capsys) -> None:
    """A file that is no KV file is listed as unusable, why said under the table (its path shortened to its name)."""
    (kvfolder.kv_dir() / "broken.safetensors").write_bytes(b"nope")
    (entry,) = kvfolder.list_entries()
    assert entry["key"] == "broken" and "not a safetensors" in entry["error"]
    code, out, _ = tmix_cache(capsys, "ls")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["broken", "-", "unusable"], out
    assert out.splitlines()[3:5] == ["1 unusable KV file: `tmix cache rm broken` removes it",
                                     "  broken.safetensors is not a safetensors KV file"], out


def test_empty_key_matches_nothing(tokenizer, capsys) -> None:
    """An empty or blank key is refused, not taken as the prefix of every key (it removed the only file)."""
    saved(tiny_model(), tokenizer, prefix_ids(seed=1), doc_name="a.txt")
    for argv in (["rm", ""], ["rm", "  "], ["info", ""], ["info", " "]):
        code, _, err = tmix_cache(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "is empty" in err, (argv, err)
    assert len(kvfolder.list_entries()) == 1


def test_cached_file_named_by_its_name_or_path(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys) -> None:
    """`cache info` and `cache rm` take KEY.safetensors or its path as well as the key; a file elsewhere, or a
    device, is refused in one line."""
    keys = _two_files(tokenizer)
    name = f"{keys[0]}.safetensors"
    code, out, err = tmix_cache(capsys, "info", name)
    assert code == 0 and f"path: {kvfolder.kv_dir() / name}" in out, err
    elsewhere = tmp_path / "copy" / name
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((kvfolder.kv_dir() / name).read_bytes())
    for argv, says in ((["rm", str(elsewhere)], f"{elsewhere} is not in the cache folder"),
                       (["rm", str(tmp_path / "x.safetensors")], "x.safetensors: no such file"),
                       (["info", "/dev/null"], "/dev/null: a device, not a regular file"),
                       (["rm", "nothing.safetensors"], "no KV file nothing.safetensors in")):
        code, _, err = tmix_cache(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and says in err, (argv, err)
    monkeypatch.chdir(kvfolder.kv_dir().parent)
    code, _, err = tmix_cache(capsys, "rm", name, f"kv/{keys[1]}.safetensors")
    assert code == 0 and kvfolder.list_entries() == [] and elsewhere.is_file(), err


def test_ls_shows_temp_files_and_prune_removes_leftovers(tokenizer, capsys) -> None:
    """A dead writer's temp file is a leftover (listed, pruned); a live writer's is listed as being written, kept."""
    _two_files(tokenizer)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = kvfolder.kv_dir() / f".x.safetensors.{int(gone.stdout)}.0123abcd.tmp"
    live = kvfolder.kv_dir() / f".y.safetensors.{os.getpid()}.89abcdef.tmp"
    dead.write_bytes(b"0" * 3000)
    live.write_bytes(b"0" * 5000)
    taken = human_size(dead.stat().st_blocks * 512)  # what removing it frees
    with open(live, "rb"):  # what its writer, this process, has open
        out = tmix_cache(capsys, "ls")[1]
        assert f"1 leftover temp file of an interrupted save, {taken} on disk: `tmix cache prune` removes it" in out
        assert "1 KV file being written now, 4.9 KiB when done" in out
        code, out, _ = tmix_cache(capsys, "prune")
        assert code == 0 and f"removed 1 leftover temp file ({taken} freed)" in out
        assert not dead.exists() and live.exists() and len(kvfolder.list_entries()) == 2
        assert "leftover" not in tmix_cache(capsys, "ls")[1]


def test_a_sparse_leftover_is_told_by_what_removing_it_frees(capsys) -> None:
    """A writer sizes its temp file first, so a leftover of a save killed early is mostly holes: ls and prune tell
    the disk space it takes (they said its full size, 15x what prune freed), --json both."""
    leftover = kvfolder.kv_dir() / ".x.safetensors.1.0123abcd.lk.tmp"  # nobody holds it locked
    with open(leftover, "wb") as f:
        f.truncate(64 * 2**20)
        f.write(b"1" * 2**20)
        os.fsync(f.fileno())
    taken = leftover.stat().st_blocks * 512
    if taken >= 64 * 2**20:
        pytest.skip("this file system keeps no holes")
    out = tmix_cache(capsys, "ls")[1]
    assert f"1 leftover temp file of an interrupted save, {human_size(taken)} on disk:" in out, out
    listing = json.loads(tmix_cache(capsys, "ls", "--json")[1])
    assert listing["temp_files"]["leftover"] == {"count": 1, "bytes": 64 * 2**20, "disk_bytes": taken}
    code, out, _ = tmix_cache(capsys, "prune")
    assert code == 0 and f"removed 1 leftover temp file ({human_size(taken)} freed)" in out and not leftover.exists()


def test_info_of_a_truncated_file_shows_what_it_can(tokenizer, capsys) -> None:
    """`cache info` on a KV file cut short prints its metadata and sizes (the header's K/V bytes fit the formula: it
    said "N = N: MISMATCH"), then the damage as its one error line; `ls` marks it unusable and says why."""
    keys = _two_files(tokenizer)
    path = kvfolder.kv_dir() / f"{keys[0]}.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    code, out, err = tmix_cache(capsys, "info", str(path))
    kv_bytes = out.split("kv bytes: ")[1].split()[0]
    assert code == 2 and "model_fingerprint" in out and f"= {kv_bytes}: ok" in out and "MISMATCH" not in out, out
    assert err.count("\n") == 1 and "is truncated: it holds " in err and "(100 B missing)" in err, err
    out = tmix_cache(capsys, "ls")[1]
    row = next(line for line in out.splitlines() if line.startswith(keys[0]))
    assert row.split()[1:4] == ["-", "unusable", "-"], out
    assert f"1 unusable KV file: `tmix cache rm {keys[0]}` removes it\n  {path.name} is truncated: it holds " in out
    facts = json.loads(tmix_cache(capsys, "info", str(path), "--json")[1])
    assert not facts["size_matches"] and "is truncated" in facts["damage"]
    assert facts["metadata"]["n_tokens"] == str(T)
    intact = json.loads(tmix_cache(capsys, "info", keys[1], "--json")[1])
    assert intact["size_matches"] and intact["damage"] is None
