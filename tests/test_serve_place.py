"""A `tmix serve` whose socket or lock file is taken from it (its cache folder deleted or moved) stops by itself: it
would otherwise hold the model where no client and no `tmix serve --stop` reaches it, beside a second server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from served import _start_server, tmix

from tmixcli import serve, serve_client
from tmixcli.serverkey import server_key

WAIT = 60.0  # seconds: generous on a loaded machine; a server checks every few seconds


def test_a_server_whose_cache_folder_is_deleted_stops_by_itself(tmp_path: Path) -> None:
    proc, env = _start_server(tmp_path)
    try:
        sock = next((tmp_path / "cache" / "serve").glob("*.sock"))
        shutil.rmtree(tmp_path / "cache")
        assert proc.wait(timeout=WAIT) == 0
        err = proc.stderr.read()
        assert f"tmix serve: its socket {sock} was removed or moved, so no client can reach this server: stopping\n" \
            in err, err
        assert err.endswith("tmix serve: stopped\n"), err
    finally:
        if proc.poll() is None:
            proc.kill()
    stop = tmix("serve", "--stop", "--model", "model", "--device", "cpu", env=env, cwd=tmp_path)
    assert stop.returncode == 2 and "no tmix server runs" in stop.stderr  # true now: none runs


def _when_serving(path: Path, act, said: list, done: threading.Event) -> threading.Thread:
    """A thread that does `act()` once the server listens on `path`, then waits for it to stop by itself; one still
    serving after WAIT seconds is told to stop (the test then fails on what it said)."""
    def run() -> None:
        deadline = time.monotonic() + WAIT
        try:
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            said.extend(act())
        finally:
            if not done.wait(WAIT):  # as Ctrl-C would: the test fails on what the server said, it does not hang
                serve._stopping.append(1)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture()
def short_cache(monkeypatch):
    """A cache folder whose socket path is short enough to lie in it (a long one goes to the shared temp folder)."""
    folder = tempfile.mkdtemp(prefix="tmix-t")
    monkeypatch.setenv("TMIX_CACHE_DIR", folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("how", ["folder deleted, second server", "lock file deleted", "lock file replaced",
                                 "lock file rewritten"])
def test_a_server_stops_once_its_socket_or_lock_is_taken_and_leaves_a_second_servers_alone(how, short_cache, tmp_path,
                                                                                             capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the server moves to "/"
    key = server_key("some-model", "cpu", "auto", None, "off")
    path = serve_client.socket_path(key)
    assert path.parent == short_cache / "serve"
    lock = path.with_suffix(".lock")
    lm = SimpleNamespace(model_id="some-model", device=SimpleNamespace(type="cpu"))
    with contextlib.ExitStack() as second:
        def act() -> list[str]:
            """Take the socket or lock file away; what the server may say of it."""
            if how == "lock file replaced":
                os.replace(path.parent / "copy", lock)  # the same bytes, another file
                return [f"its lock file {lock} now leads to another file"]
            if how == "lock file rewritten":  # in place, as a second server's lock at a reused inode number
                lock.write_text("4242 1\n")
                return [f"its lock file {lock} now leads to another file"]
            if how == "lock file deleted":
                lock.unlink()
                return [f"its lock file {lock} was removed or moved"]
            shutil.rmtree(path.parent)
            place = second.enter_context(serve.claim(key))  # as a second `tmix serve` would, at the same paths
            second.enter_context(serve._listen(path, place))
            return [f"its socket {path} was removed or moved", f"its socket {path} now leads to another file",
                    f"its lock file {lock} now leads to another file"]  # the second's socket at a reused inode

        said: list[str] = []
        done = threading.Event()
        with serve.claim(key) as place:
            shutil.copy(lock, path.parent / "copy")
            thread = _when_serving(path, act, said, done)
            try:
                serve.run_server(lm, key, place, quiet=True)
            finally:
                done.set()
        thread.join(WAIT)
        serve._stopping.clear()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.endswith(": stopping\n"), err  # one line, also under -q
        assert any(err.startswith(f"tmix serve: {line}, so ") for line in said), (err, said)
        if how.startswith("folder"):  # the second server's socket was not removed by the first on its way out
            with contextlib.closing(serve_client._connect(path)) as reached:
                assert reached is not None
