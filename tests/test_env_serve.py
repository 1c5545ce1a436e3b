"""`tmix serve` and a client in different locales: file names are the client's bytes, the question its text. A server
that would read a path otherwise (name no file, or show it otherwise) hands the request back to its client."""

from __future__ import annotations

import json

import pytest

from served import TINY, _start_server, tmix
from tmixcli import serve, serve_client
from tmixcli.serve_stream import Client, Stream

C_LOCALE = {"PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "PYTHONIOENCODING": ""}  # file names: ASCII


def _as_latin1_server(monkeypatch) -> None:
    """Read requests as a server whose file system encoding is Latin-1 would."""
    monkeypatch.setattr(serve, "from_raw", lambda raw: raw.encode("latin-1").decode("latin-1", "surrogateescape"))


def test_a_path_read_otherwise_by_the_server_is_handed_back(monkeypatch):
    question = "Wer leitet das Projekt über Köln?"
    req = json.loads(serve_client._request(["ask", "--system", "Sei kürzer", "doc.txt", question],
                                           (question, "Sei kürzer", None)))
    assert not serve._read_otherwise(req, req["argv"], req["cwd"], req["env"])
    _as_latin1_server(monkeypatch)
    assert not serve._read_otherwise(req, req["argv"], req["cwd"], req["env"])  # the texts are the client's text
    req = json.loads(serve_client._request(["ask", "日本語.txt", "Which city?"], ("Which city?",)))
    assert serve._read_otherwise(req, req["argv"], req["cwd"], req["env"])
    req = json.loads(serve_client._request(["prefill", "doc.txt", "--kv=bericht_ü.kv"], ()))
    assert serve._read_otherwise(req, req["argv"], req["cwd"], req["env"])
    old = {"argv": ["ask", "日本語.txt", "Which city?"], "cwd": "/", "env": {}}  # an older tmix: taken as sent
    assert not serve._read_otherwise(old, old["argv"], "/", {})
    with pytest.raises(ValueError, match="malformed request"):
        serve._read_otherwise({"raw": {"argv": []}}, ["ask"], "/", {})


def test_a_file_name_the_server_could_not_decode_comes_back_as_its_bytes():
    """Frames carry a name's undecodable bytes as they are (they were '?'); the client reads them as it reads file
    names."""
    sent: list[bytes] = []

    class Conn:
        def sendall(self, data: bytes) -> None:
            sent.append(data)

    Stream(Client(Conn(), lambda: False), b"E").write("tmix: bericht_\udcfc.txt: 12 document tokens, 東京\n")
    payload = sent[0][serve_client.FRAME.size:]
    assert payload == "tmix: bericht_\udcfc.txt: 12 document tokens, 東京\n".encode("utf-8", "surrogateescape")
    assert serve_client.frame_text(payload) == "tmix: bericht_\udcfc.txt: 12 document tokens, 東京\n"


def test_a_server_in_another_locale_leaves_non_ascii_names_to_the_client(tmp_path):
    """A server in the C locale without UTF-8 mode (ASCII file names) and a UTF-8 client: `tmix ask bericht_ü.txt Q`
    was "tmix serve: request failed: UnicodeEncodeError", exit 1. Now the client runs it, as without a server."""
    proc, env = _start_server(tmp_path, C_LOCALE)
    (tmp_path / "bericht_ü.txt").write_text("Die Projektleiterin heißt Zoë Müller.\n", encoding="utf-8")
    try:
        client = {**env, "PYTHONUTF8": "1"}
        ascii_named = tmix("ask", "doc.txt", "Who?", "--model", "model", *TINY, env=client, cwd=tmp_path)
        assert ascii_named.returncode == 0 and "answered by tmix serve" in ascii_named.stderr, ascii_named.stderr
        args = ("ask", "bericht_ü.txt", "Wer ist die Projektleiterin?", "--model", "model", *TINY, "--json")
        asked = tmix(*args, env=client, cwd=tmp_path)
        local = tmix(*args, env={**client, "TMIX_SERVE": "off"}, cwd=tmp_path)
        assert asked.returncode == 0 and local.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["answer"] == json.loads(local.stdout)["answer"]
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=60)
    assert "request refused: ask whose file names this server's locale reads otherwise" in log, log
    assert "request failed" not in log
