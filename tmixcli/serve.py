"""`tmix serve`: keep a model loaded and run `tmix ask` / `tmix prefill` for other processes over a Unix socket.

A warm question costs a fresh `tmix` process ~6 s of importing torch and transformers plus the model load (~1 s
for the default model, far more for an 8B model) before the 0.5 s of real work. A server started with the same
--model, --device, --dtype, --device-map and --compile holds the model; `ask` and `prefill` find its socket (named
by those options), send their arguments and working folder, and the server runs them exactly as the command line
would, streaming stdout and stderr back. The last KV file a request prefilled or loaded stays in memory
(tmixcli/resident.py), so a follow-up question skips its load. TMIX_SERVE=off makes `ask`/`prefill` ignore servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tmixcli.errors import TmixError
from tmixcli.paths import cache_dir

_FRAME = struct.Struct("!cI")  # kind (O stdout, E stderr, X exit code), payload length
served: dict = {}  # while a server runs a request: {"key": ..., "lm": LoadedModel, "resident": ResidentKV}
_stopping: list[int] = []  # set by Ctrl-C / SIGTERM: the request in hand ends, then the server


def server_key(model: str | None, device: str, dtype: str, device_map: str | None, compile: str) -> str:
    """What a server must match: the options that decide which model is loaded and how."""
    spec = model or ""
    if spec and Path(spec).expanduser().exists():
        spec = str(Path(spec).expanduser().resolve())  # a model folder named relative to the caller's folder
    return json.dumps([spec, device, dtype, device_map or "", compile])


def socket_path(key: str) -> Path:
    """The socket of the server for `key`, in the cache folder (or a private temp folder if that path is too long)."""
    name = hashlib.sha256(key.encode()).hexdigest()[:16] + ".sock"
    path = cache_dir() / "serve" / name
    if len(str(path)) > 100:  # AF_UNIX paths are limited to ~108 bytes
        path = Path(tempfile.gettempdir()) / f"tmix-{os.getuid()}" / name
    return path


def _connect(path: Path) -> socket.socket | None:
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def forward(argv: list[str], key: str) -> int | None:
    """Run `tmix argv` on the server for `key`: its output goes to ours; returns its exit code (None: no server)."""
    if os.environ.get("TMIX_SERVE", "").lower() in ("off", "0", "no") or served:
        return None
    sock = _connect(socket_path(key))
    if sock is None:
        return None
    with sock:
        sock.sendall(json.dumps({"argv": argv, "cwd": os.getcwd()}).encode() + b"\n")
        reader = sock.makefile("rb")
        while True:
            head = reader.read(_FRAME.size)
            if len(head) < _FRAME.size:
                print("tmix: error: the tmix server stopped during this run", file=sys.stderr)
                return 1
            kind, n = _FRAME.unpack(head)
            if kind == b"X":
                return n
            out = sys.stdout if kind == b"O" else sys.stderr
            out.write(reader.read(n).decode("utf-8", "replace"))
            out.flush()


def stop_server(key: str) -> int:
    """Ask the server for `key` to stop; returns its pid once it has taken the request and its socket is gone."""
    path = socket_path(key)
    sock = _connect(path)
    if sock is None:
        raise TmixError("no tmix server runs with these --model, --device, --dtype, --device-map and --compile")
    with sock:
        sock.sendall(json.dumps({"stop": True}).encode() + b"\n")
        head = sock.makefile("rb").read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise TmixError("the tmix server did not answer the stop request")
    pid = _FRAME.unpack(head)[1]
    deadline = time.monotonic() + 30
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


class _Stream:
    """A text stream whose writes go to the client as frames; a client gone becomes BrokenPipeError."""

    def __init__(self, sock: socket.socket, kind: bytes) -> None:
        self.sock, self.kind, self.encoding = sock, kind, "utf-8"

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        try:
            self.sock.sendall(_FRAME.pack(self.kind, len(data)) + data)
        except OSError:
            raise BrokenPipeError("the client is gone") from None
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _request_scope(cwd: str) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


def _handle(conn: socket.socket, key: str, lm, log, resident=None) -> None:
    from tmixcli import cli

    line = conn.makefile("rb").readline()
    if not line.strip():  # a liveness probe (another `tmix serve` starting), not a request
        return
    req = json.loads(line)
    if req.get("stop"):  # `tmix serve --stop`: answer with our pid, then end after this request
        _stopping.append(1)
        conn.sendall(_FRAME.pack(b"X", os.getpid()))
        log("stop requested")
        return
    argv, start = [str(a) for a in req.get("argv", [])], time.perf_counter()
    if argv[:1] not in (["ask"], ["prefill"]) or "-" in argv:  # stdin is the client's, never read here
        log(f"request refused: {' '.join(argv[:1]) or 'nothing'}")
        return
    code = 1
    out, err = _Stream(conn, b"O"), _Stream(conn, b"E")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _request_scope(req.get("cwd", "/")):
            served.update(key=key, lm=lm, resident=resident)
            try:
                cli.main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # noqa: BLE001 - one failed request must not take the server down
                log(f"request failed: {type(exc).__name__}: {exc}")
            finally:
                served.clear()
        conn.sendall(_FRAME.pack(b"X", code))
    except (OSError, ValueError) as exc:  # a client gone or a bad request: the server carries on
        log(f"request dropped: {exc}")
    log(f"{' '.join(argv[:1])}: exit {code} in {time.perf_counter() - start:.2f} s")


def run_server(lm, key: str, quiet: bool = False) -> None:
    """Serve requests one at a time until Ctrl-C or SIGTERM; the socket file is removed on the way out."""
    def log(msg: str) -> None:
        if not quiet:
            print(f"tmix serve: {msg}", file=sys.stderr, flush=True)

    path = socket_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    probe = _connect(path)
    if probe is not None:
        probe.close()
        raise TmixError(f"a tmix server with these options already runs (socket {path})")
    path.unlink(missing_ok=True)  # a stale socket of a server that died
    from tmixcli.resident import ResidentKV

    resident = ResidentKV()  # the last KV file a request loaded: a follow-up question skips the load
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log(f"{lm.model_id} on {lm.device.type}, socket {path}; `tmix ask`/`tmix prefill` with the same --model, "
        "--device, --dtype, --device-map and --compile use it; Ctrl-C stops")
    try:
        while not _stopping:
            conn, _ = sock.accept()
            with conn:
                try:
                    _handle(conn, key, lm, log, resident)
                except (OSError, ValueError) as exc:  # a malformed request or a client gone: the next one
                    log(f"request dropped: {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        path.unlink(missing_ok=True)
        _stopping.clear()
        log("stopped")


def _stop(*_) -> None:
    _stopping.append(1)
    raise KeyboardInterrupt
