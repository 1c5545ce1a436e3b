"""A served request's output as frames: whole frames however it is cut short, and a bounded wait once stopping."""

from __future__ import annotations

import socket
import threading

from tmixcli import serve_stream
from tmixcli.serve_client import FRAME


def _frames(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """All the frames `sock` holds until its peer closes, each whole (asserted): (kind, payload)."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    frames = []
    while data:
        kind, n = FRAME.unpack(data[:FRAME.size])
        assert len(data) >= FRAME.size + n, "half a frame"
        frames.append((kind, data[FRAME.size:FRAME.size + n]))
        data = data[FRAME.size + n:]
    return frames


def test_a_long_write_goes_in_frames_of_whole_characters():
    """A frame small enough for the kernel to queue whole: a stop signal ending a blocked send never cuts one."""
    ours, theirs = socket.socketpair()
    text = "Fähre über den Fluss. " * 1000
    with ours:
        with theirs:
            serve_stream.Stream(serve_stream.Client(theirs, lambda: False), b"O").write(text)
        frames = _frames(ours)
    assert len(frames) > 1 and all(len(data) <= 8192 for _, data in frames)
    assert "".join(data.decode() for _, data in frames) == text  # each piece decodes on its own


def test_a_stopping_server_waits_a_bounded_time_for_a_client_that_reads_nothing(monkeypatch):
    """Its last frames go into the grown buffer; past that, a send gives up after _LAST_WAIT s, the client gone,
    and what the client finds is whole frames."""
    monkeypatch.setattr(serve_stream, "_LAST_WAIT", 0.5)
    ours, theirs = socket.socketpair()
    client = serve_stream.Client(theirs, lambda: True)
    out = serve_stream.Stream(client, b"O")
    sent = [0]

    def write() -> None:  # off the main thread: a client gone is a flag here, not ClientGone
        while not client.gone and sent[0] < 10_000:
            out.write("x" * 3000)
            sent[0] += 1

    writer = threading.Thread(target=write, daemon=True)
    try:
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive(), "a send still waits for a client that reads nothing"
        assert client.gone and sent[0] < 10_000
    finally:
        theirs.close()
    with ours:
        frames = _frames(ours)
    assert frames and all(kind == b"O" and data in (b"x" * 2048, b"x" * 952) for kind, data in frames)
