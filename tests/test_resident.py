"""ResidentKV: one loaded KV file held by `tmix serve`, used only while the file on disk is unchanged."""

from __future__ import annotations

import os
import time

from tmixcli.resident import ResidentKV


def test_held_while_the_file_is_unchanged(tmp_path):
    f = tmp_path / "a.kv"
    f.write_bytes(b"x" * 10)
    r = ResidentKV()
    assert r.get(f) is None
    r.put(f, "cache", [1, 2], {"m": "1"})
    assert r.get(f) == ("cache", [1, 2], {"m": "1"})
    assert r.get(f) is not None  # a use marks the file used (mtime) and keeps the entry valid
    assert r.get(tmp_path / "b.kv") is None and r.get(f) is None  # another file drops what was held


def test_a_changed_or_removed_file_is_not_used(tmp_path):
    f = tmp_path / "a.kv"
    f.write_bytes(b"x" * 10)
    r = ResidentKV()
    r.put(f, "cache", [1], {})
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert r.get(f) is None
    r.put(f, "cache", [1], {})
    f.write_bytes(b"y" * 11)
    assert r.get(f) is None
    r.put(f, "cache", [1], {})
    g = tmp_path / "g.kv"
    g.write_bytes(b"y" * 11)
    os.replace(g, f)  # replaced by rename, as tmix writes files: another inode
    assert r.get(f) is None
    r.put(f, "cache", [1], {})
    f.unlink()
    assert r.get(f) is None
    r.put(f, "cache", [1], {})  # a file gone before it could be held: nothing held
    assert r.get(f) is None
