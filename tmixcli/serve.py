"""`tmix serve`: keep a model loaded and run `tmix ask` / `tmix prefill` for other processes over a Unix socket.

A warm question costs a fresh `tmix` process ~6 s of importing torch and transformers plus the model load (~1 s for
the default model, far more for an 8B model) before the 0.5 s of real work. A server holds the model; `ask` and
`prefill` runs whose --model, --device, --dtype, --device-map and --compile resolve to the same settings reach it
(tmixcli/serve_client.py), and the server runs them as the command line would, streaming stdout and stderr back
(tmixcli/serve_stream.py). A client that hangs up (its Ctrl-C) stops its request at the next decode step, as Ctrl-C
stops a local run (the prefill's KV file is still saved), or earlier at the next checkpoint (tmixcli/checkpoints.py:
a decoder layer of the prefill or of the question, 50 ms of a KV file read, a document, input chunk, page or
paragraph read; no KV file is left). The last KV file a request prefilled or loaded stays in memory
(tmixcli/resident.py), so a follow-up question skips its load. `tmix serve --stop` reaches a second socket that a
thread answers even mid-request, and ends the server as SIGTERM does. A server whose socket or lock file is taken
from it (its cache folder deleted or moved) stops by itself (tmixcli/serve_place.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tmixcli.errors import TmixError
from tmixcli.filekind import process_bound
from tmixcli.serve_client import FRAME, from_raw, socket_path, stop_path
from tmixcli.serve_errors import log_path, report
from tmixcli.serve_place import Place
from tmixcli.serve_stream import Client, ClientGone, Stream, hung_up
from tmixcli.serving import served
from tmixcli.stdout import end_line

if TYPE_CHECKING:
    from tmixcli.models import LoadedModel
    from tmixcli.resident import ResidentKV

_REQUEST_WAIT = 5.0  # seconds a client has to send its request line once connected
_CHECK_EVERY = 2.0  # seconds between checks, while idle, that clients still find this server (serve_place)
_stopping: list[int] = []  # set by Ctrl-C / SIGTERM / `tmix serve --stop`: the request in hand ends, then the server
_closing: list[int] = []  # set once the server is ending: a stop signal then ends nothing more


class Refused(Exception):
    """A request the server hands back untouched (it reads stdin): the client runs it itself."""


class LeftBeforeStart(Exception):
    """The client of a request left (killed while it waited for a busy server) before anything of it ran."""


def _read_otherwise(req: dict, argv: list[str], cwd: str, env: dict[str, str]) -> bool:
    """Whether a path of the request (an argument that is not text, the working folder, a TMIX_* variable) names other
    bytes here than in its client (other locales): served, it would name no file, or be shown otherwise than a local
    run shows it, so its client runs the request itself. A request of an older tmix (no `raw`) is taken as sent;
    ValueError for a malformed one."""
    raw = req.get("raw")
    if raw is None:
        return False
    try:
        text = set(raw["text"])
        pairs = [(a, b) for i, (a, b) in enumerate(zip(argv, raw["argv"], strict=True)) if i not in text]
        pairs += [(cwd, raw["cwd"])] + [(v, raw["env"][k]) for k, v in env.items()]
        return any(from_raw(b) != a for a, b in pairs)
    except (KeyError, TypeError, AttributeError, UnicodeError) as exc:
        raise ValueError(f"malformed request: {exc!r}") from None


@contextlib.contextmanager
def _request_scope(cwd: str, env: dict[str, str]) -> Iterator[None]:
    """The client's working folder and TMIX_* variables for one request; the server's own folder is never needed."""
    ours = {k: v for k, v in os.environ.items() if k.startswith("TMIX_")}
    os.chdir(cwd)
    _set_tmix_env({k: v for k, v in env.items() if k.startswith("TMIX_")})
    try:
        yield
    finally:
        _set_tmix_env(ours)
        os.chdir("/")


def _set_tmix_env(values: dict[str, str]) -> None:
    """Replace every TMIX_* environment variable with `values` (requests run one at a time)."""
    for name in [k for k in os.environ if k.startswith("TMIX_")]:
        del os.environ[name]
    os.environ.update(values)


def take_request(sources: list[str]) -> None:
    """Inside a server, before any work: tell the client its request runs here, or refuse one that reads stdin, a
    FIFO, a device or another file only the client can open (filekind.process_bound)."""
    if any(process_bound(p) for p in sources):
        raise Refused
    conn = served.get("conn")  # None: a test playing server, with no client
    try:
        if conn is not None:
            conn.sendall(FRAME.pack(b"S", os.getpid()))  # the pid: a client can name the server if it dies
    except OSError:
        raise LeftBeforeStart from None


def stopping() -> bool:
    """Whether this server was told to stop (the request in hand was interrupted by that)."""
    return bool(_stopping)


def _read_request(conn: socket.socket) -> dict | None:
    """The request line, within _REQUEST_WAIT seconds (an idle client must not hold the server); None: a probe."""
    deadline, data = time.monotonic() + _REQUEST_WAIT, b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no request within {_REQUEST_WAIT:g} s")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.settimeout(None)
    line = data.split(b"\n", 1)[0]
    if not line.strip():
        return None
    req = json.loads(line)
    if not isinstance(req, dict):
        raise ValueError("the request is not a JSON object")
    return req


def _handle(conn: socket.socket, key: str, lm: LoadedModel, log: Callable[[str], None],
            resident: ResidentKV | None = None, trace_log: Path | None = None) -> None:
    """Read one request from `conn` and run it (or stop, or refuse it); logs how it ended. `trace_log`: where the
    traceback of an internal error goes, besides the server's stderr (serve_errors)."""
    req = _read_request(conn)
    if req is None:  # a liveness probe, not a request
        return
    if req.get("stop"):  # `tmix serve --stop`: answer with our pid, then end after this request
        _stopping.append(1)
        conn.sendall(FRAME.pack(b"X", os.getpid()))
        log("stop requested")
        return
    argv, start = [str(a) for a in req.get("argv", [])], time.perf_counter()
    cwd, env = str(req.get("cwd", "/")), {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
    if argv[:1] not in (["ask"], ["prefill"]):
        log(f"request refused: {' '.join(argv[:1]) or 'nothing'}")
        return
    if _read_otherwise(req, argv, cwd, env):  # closed without a word: the client runs it itself
        log(f"request refused: {argv[0]} whose file names this server's locale reads otherwise (its client runs it)")
        return
    left = f"request dropped before it ran: its client ({argv[0]}) hung up while waiting"
    if hung_up(conn):  # killed while queued behind another request
        log(left)
        return
    client, code, server_err = Client(conn, stopping), 1, sys.stderr  # during the request, sys.stderr is the client's
    tty = req.get("tty") if isinstance(req.get("tty"), dict) else {}
    out, err = Stream(client, b"O", tty.get("stdout") is True), Stream(client, b"E", tty.get("stderr") is True)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                _request_scope(cwd, env):
            served.update(key=key, lm=lm, resident=resident, conn=conn)
            code = _run(argv, client, server_err, trace_log)
        client.send(FRAME.pack(b"X", code))
    except Refused:  # closed without a word: the client runs it itself
        log(f"request refused: {argv[0]} of stdin, a FIFO, a device or the like (its client runs it)")
        return
    except LeftBeforeStart:
        log(left)
        return
    except ClientGone:  # found gone by the request's last words or its exit code
        pass
    except (OSError, ValueError) as exc:  # a bad request (e.g. its folder gone): the server carries on
        log(f"request dropped: {exc}")
    if client.gone:
        log("the client hung up")
    threads = sys.modules.get("tmixcli.threads")
    used = threads.said() if threads is not None else ""
    log(f"{' '.join(argv[:1])}: exit {code} in {time.perf_counter() - start:.2f} s" + (f" ({used})" if used else ""))


def _run(argv: list[str], client: Client, server_err: TextIO, trace_log: Path | None) -> int:
    """cli.main(argv) as a process of its own runs it, stopped at the next checkpoint if the client hangs up (then
    exactly as a local Ctrl-C: a prefill's KV file is saved once the answer began); its exit code. An internal error
    is one line to the client, its traceback kept on `server_err` and in `trace_log`, and exit 1."""
    from tmixcli import checkpoints, cli

    checkpoints.between_steps.append(client.check)
    try:
        cli.main(argv)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except (Refused, LeftBeforeStart):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in one request must not take the server down
        line = report(exc, argv[0], server_err, trace_log)  # kept first: the client may be gone
        end_line()  # the line stands on its own, after an answer cut mid-line
        print(line, file=sys.stderr, flush=True)
        return 1
    finally:
        checkpoints.between_steps.remove(client.check)
        served.clear()


@contextlib.contextmanager
def claim(key: str) -> Iterator[Place]:
    """Hold the lock file beside the socket for `key` (yields where the server is found): one server per key, decided
    at once."""
    path = socket_path(key).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TmixError(f"cannot use the socket folder {path.parent}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TmixError(f"a tmix server with these options already runs (socket {path})") from None
        yield Place(path, fd)
    finally:
        os.close(fd)


def run_server(lm: LoadedModel, key: str, place: Place, quiet: bool = False) -> None:
    """Serve requests on `place` (claim(key)) one at a time until Ctrl-C, SIGTERM, SIGHUP, `tmix serve --stop` or
    its socket or lock file taken from it (then one line, also under -q); the sockets still its own go on exit."""
    def log(msg: str) -> None:  # while a request runs, sys.stderr is its client's
        if not quiet:
            print(f"tmix serve: {msg}", file=sys.stderr, flush=True)

    server_err = sys.stderr

    def note(msg: str) -> None:  # from the stop thread: always the server's own stderr
        if not quiet:
            print(f"tmix serve: {msg}", file=server_err, flush=True)

    from tmixcli.resident import ResidentKV

    resident = ResidentKV()  # the last KV file a request loaded: a follow-up question skips the load
    path = place.sock
    sock = _listen(path, place)
    os.chdir("/")  # requests run in their client's folder; ours may be deleted while we serve
    stops = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN
                                               else [])  # a closed terminal, unless started under nohup
    previous = {sig: signal.signal(sig, _stop) for sig in stops}
    stopper = None
    from tmixcli.threads import described

    cpu = f" ({described()})" if lm.device.type == "cpu" else ""
    log(f"{lm.model_id} on {lm.device.type}{cpu}, socket {path}; `tmix ask`/`tmix prefill` whose --model, "
        "--device, --dtype, --device-map and --compile mean the same use it; Ctrl-C stops")
    try:
        stopper = _StopListener(stop_path(path), note, place)
        sock.settimeout(_CHECK_EVERY)  # idle, the accept wakes this often to check `place`
        while not _stopping:
            lost = place.lost()
            if lost is not None:
                with contextlib.suppress(OSError, ValueError):  # a closed stderr: it stops all the same
                    print(f"tmix serve: {lost}: stopping", file=server_err, flush=True)
                break
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    _handle(conn, key, lm, log, resident, log_path(path))
                except (OSError, ValueError) as exc:  # a malformed request or a client gone: the next one
                    log(f"request dropped: {exc}")
    except KeyboardInterrupt:
        pass
    finally:
        _closing.append(1)
        if stopper is not None:
            stopper.close()
        _restore(previous)
        sock.close()
        place.remove()
        _stopping.clear()
        _closing.clear()
        log("stopped")


class _StopListener:
    """The socket `tmix serve --stop` reaches, answered by a thread of its own: a stop ends the request in hand as
    SIGTERM does (the thread sends the main thread that signal), not only the wait for the next request."""

    def __init__(self, path: Path, note: Callable[[str], None], place: Place) -> None:
        self.path, self.note, self.lock = path, note, threading.Lock()
        self.sock = _listen(path, place)
        self.thread = threading.Thread(target=self._serve, name="tmix-serve-stop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the server is ending
                return
            with conn:
                try:
                    if not (_read_request(conn) or {}).get("stop"):
                        continue
                    conn.sendall(FRAME.pack(b"X", os.getpid()))
                except (OSError, ValueError):
                    continue
            with self.lock:
                if _closing:
                    return
                self.note("stop requested")
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def close(self) -> None:
        """Once _closing is set: a stop being signalled has been sent when the lock is had, and none follows; then the
        socket closes (Place.remove removes its file)."""
        with self.lock:
            pass
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept
        self.sock.close()


def _restore(previous: dict) -> None:
    """Put the signal handlers back, first taking any SIGTERM the stop thread sent that is not delivered yet (the
    default handler would end the process with it)."""
    held = {signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        while signal.sigtimedwait(held, 0) is not None:
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _listen(path: Path, place: Place | None = None) -> socket.socket:
    """A socket listening on `path`, noted in `place` as its own; a stale socket file of a server that died is
    replaced (we hold the lock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)
        sock.bind(str(path))
        if place is not None:
            place.bound(path)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        raise TmixError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


def _stop(*_) -> None:
    """Ctrl-C, SIGTERM, SIGHUP or `tmix serve --stop`: the request in hand ends "interrupted", then the server."""
    _stopping.append(1)
    if not _closing:
        raise KeyboardInterrupt
