"""The cache's size cap (TMIX_CACHE_MAX): least recently used KV files evicted, `cache prune`, files not removable."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvfiles import _aged
from runcli import DOCS, TINY, ask_json, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)
from tmixcli import kvfolder
from tmixcli.errors import TmixError


def test_cache_cap_evicts_least_recently_used(capsys, monkeypatch, tmp_path, tiny_dir):
    docs = []
    for name in ("a.txt", "b.txt", "c.txt"):
        docs.append(tmp_path / name)
        docs[-1].write_text(f"Document {name}. " + (DOCS / "notes.txt").read_text()[:600])
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first = ask_json(capsys, str(docs[0]), *args)
    size = Path(first["kv_path"]).stat().st_size
    monkeypatch.setenv("TMIX_CACHE_MAX", str(int(size * 1.5)))
    code, _, err = run(capsys, "ask", str(docs[1]), *args)
    assert code == 0 and "removed 1 least recently used KV file (" in err and not Path(first["kv_path"]).exists()
    monkeypatch.setenv("TMIX_CACHE_MAX", str(size // 2))
    res = ask_json(capsys, str(docs[2]), *args)
    assert res["kv_path"] is None and res["answer"] is not None
    code, _, err = run(capsys, "ask", str(docs[2]), *args)
    assert code == 0 and "KV file not saved" in err and "(over the cache cap)" in err and ".safetensors" not in err
    from tmixcli import generate

    monkeypatch.setattr(generate, "prefill", lambda *a, **k: pytest.fail("prefilled a file it then refused"))
    code, _, err = run(capsys, "prefill", str(docs[2]), "--model", tiny_dir, *TINY)
    assert code == 2 and "exceed the cache cap TMIX_CACHE_MAX" in err and "-o" in err
    monkeypatch.setenv("TMIX_CACHE_MAX", "plenty")
    code, _, err = run(capsys, "ask", str(docs[2]), *args)
    assert code == 2 and "TMIX_CACHE_MAX must be a size" in err and "prefill" not in err


def test_bad_cache_cap_is_refused_before_the_model_on_a_hit_as_on_a_miss(capsys, monkeypatch, tiny_dir, short_doc,
                                                                        tmp_path):
    """A mistyped TMIX_CACHE_MAX is one line before the model loads, whether the document is cached or not; runs
    that never write to the cache (--no-cache, --kv, prefill -o) do not need it."""
    from tmixcli import cli_open

    args = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", *TINY)
    kv = ask_json(capsys, short_doc, *args)["kv_path"]
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("A document no run has prefilled yet. " * 20)
    monkeypatch.setenv("TMIX_CACHE_MAX", "abc")
    load = cli_open.load
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model"))
    for argv in (["ask", short_doc, *args], ["ask", str(fresh), *args], ["prefill", short_doc, *args[1:3], *TINY]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err == "tmix: error: TMIX_CACHE_MAX must be a size like 20G, 500M or " \
                                                  "off, not 'abc'\n", err
    monkeypatch.setattr(cli_open, "load", load)
    for argv in (["ask", short_doc, *args, "--no-cache"], ["ask", "--kv", kv, *args],
                 ["prefill", short_doc, "-o", str(tmp_path / "x.kv"), *args[1:3], *TINY]):
        assert run(capsys, *argv)[0] == 0


def test_eviction_that_cannot_remove_a_file_costs_the_answer_nothing(capsys, monkeypatch, tmp_path, tiny_dir):
    """The trim after a new KV file skips a file it cannot remove and says so in a status line: no traceback."""
    import errno

    docs = []
    for name in ("a.txt", "b.txt"):
        docs.append(tmp_path / name)
        docs[-1].write_text(f"Document {name}. " + (DOCS / "notes.txt").read_text()[:600])
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first = Path(ask_json(capsys, str(docs[0]), *args)["kv_path"])
    monkeypatch.setenv("TMIX_CACHE_MAX", str(int(first.stat().st_size * 1.5)))
    real = Path.unlink

    def unlink(self, missing_ok=False):
        if self == first:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, missing_ok)
    monkeypatch.setattr(Path, "unlink", unlink)
    code, out, err = run(capsys, "ask", str(docs[1]), *args)
    assert code == 0 and out.strip() and "error" not in err and first.exists(), err
    assert f"tmix: cannot remove {first}: Read-only file system; the cache stays over TMIX_CACHE_MAX" in err


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


def test_trim_cache_evicts_least_recently_used() -> None:
    paths = _aged({"old": 400, "mid": 300, "new": 200})
    assert kvfolder.trim_cache(None) == ([], []) and kvfolder.trim_cache(900) == ([], [])
    assert [e["key"] for e in kvfolder.trim_cache(600)[0]] == ["old"] and not paths["old"].exists()
    assert [e["key"] for e in kvfolder.trim_cache(100, keep=paths["mid"])[0]] == ["new"]
    assert [e["key"] for e in kvfolder.list_entries()] == ["mid"]  # the kept file stays even over the cap


def test_cli_prune_and_ls_total(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _aged({"old": 3000, "mid": 2000, "new": 1000})
    monkeypatch.setenv("TMIX_CACHE_MAX", "4K")
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0 and "3 files, 5.9 KiB" in out and "cap 4.0 KiB" in out
    code, out, _ = run(capsys, "cache", "prune")
    assert code == 0 and "removed old" in out and "2.9 KiB in" in out
    out = run(capsys, "cache", "prune", "--max-size", "1500")[1]
    assert "removed mid" in out and [e["key"] for e in kvfolder.list_entries()] == ["new"]
    code, _, err = run(capsys, "cache", "prune", "--max-size", "huge")
    assert code == 2 and "--max-size must be a size" in err
    monkeypatch.setenv("TMIX_CACHE_MAX", "0")  # no cap, as it always read
    code, out, _ = run(capsys, "cache", "prune")
    assert code == 0 and "no size cap" in out and len(kvfolder.list_entries()) == 1
    code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")  # zero bytes, as 0M is
    assert code == 0 and "removed new" in out and "cap 0 B (--max-size" in out
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
def test_cache_commands_on_a_read_only_cache_one_line(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                      capsys) -> None:
    """rm, prune and clear remove what they can, then name the rest in one error line: no traceback."""
    paths = _aged({"old": 400, "mid": 300, "new": 200})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (kvfolder.kv_dir() / f".x.safetensors.{int(gone.stdout)}.0123abcd.tmp").write_bytes(b"0" * 10)
    _read_only(monkeypatch)
    code, _, err = run(capsys, "cache", *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("tmix: error: cannot remove "), err
    assert "Read-only file system" in err and all(p.exists() for p in paths.values())
    _read_only(monkeypatch, {"old.safetensors"})
    code, out, err = run(capsys, "cache", *argv)
    assert code == 2 and err == f"tmix: error: cannot remove {paths['old']}: Read-only file system\n", err
    assert "removed new" in out or "removed 2 KV files" in out
    assert [e["key"] for e in kvfolder.list_entries()] == (["mid", "old"] if argv[0] == "rm" else ["old"])
