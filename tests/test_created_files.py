"""Files tmix makes for others to find: a converted model folder with the umask's mode, and a `tmix serve` socket of
its own for each cache folder, also where a long cache path puts the sockets in the temp folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tmixcli.serve_client import socket_path
from tmixcli.serverkey import server_key


def _key() -> str:
    return server_key("some-model", "cpu", "auto", None, "off")


def test_each_cache_folder_has_its_own_socket_in_the_temp_folder_too(monkeypatch, tmp_path):
    long_a, long_b = (tmp_path / name / ("x" * 90) for name in ("a", "b"))
    sockets = []
    for root in (long_a, long_b, tmp_path / "short"):
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        sockets.append(socket_path(_key()))
    temp = Path(tempfile.gettempdir()) / f"tmix-{os.getuid()}"
    assert sockets[0].parent == sockets[1].parent == temp
    assert sockets[0] != sockets[1]
    assert sockets[2].parent == tmp_path / "short" / "serve"


def test_a_cache_folder_is_one_server_however_it_is_named(monkeypatch, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    keys = []
    for root in (tmp_path / "cache", "cache", "./cache/", tmp_path / "link"):
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        keys.append(_key())
    assert len(set(keys)) == 1
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "other"))
    assert _key() != keys[0]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_converted_model_folder_gets_the_umasks_mode(monkeypatch, tmp_path, umask):
    """A plain mkdir's mode, not mkdtemp's 0700: a TMIX_MODELS_DIR shared by a team is readable by it."""
    pytest.importorskip("gguf")
    from test_convtemp import _convert_here
    from test_model_files import _gguf_with_tensor

    (tmp_path / "m.gguf").write_bytes(_gguf_with_tensor())
    old = os.umask(umask)
    try:
        target = _convert_here(monkeypatch, tmp_path / "m.gguf", tmp_path / "models")
    finally:
        os.umask(old)
    assert (target / "config.json").is_file()
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]
