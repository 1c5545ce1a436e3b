"""--threads auto shares the cores among the tmix processes computing now (cpushare's markers), decided per run, per
served request and per chat question; an explicit count is obeyed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runcli import run
from tmixcli import checkpoints, cli_chat, cpushare, serve, serving, threads

MEASURED = cpushare.others_busy  # the real measure: conftest gives other tests a quiet machine
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "sample_docs"
TINY = ("--device", "cpu", "--n-local", "16", "--last-n", "8", "--start-layer", "1", "--max-new-tokens", "4")


def _holder() -> subprocess.Popen:
    """Another tmix process at work (with this test's markers): it holds its marker until it ends."""
    code = (f"from tmixcli import cpushare; cpushare.folder = lambda: {cpushare.folder()!r}; cpushare.hold(); "
            "print('held', flush=True); import time; time.sleep(600)")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _end(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=60)


def _markers() -> list[str]:
    """The pids of the markers in this test's cache folder."""
    where = Path(cpushare.folder())
    return sorted(p.name.split("-")[0] for p in where.iterdir()) if where.is_dir() else []


def _cores(monkeypatch, n: int, others: float = 0.0) -> None:
    """auto shares n cores here, whatever this machine has, with `others` of them kept busy by other processes."""
    monkeypatch.setattr(threads, "CORES", n)
    monkeypatch.setattr(cpushare, "cpus", lambda: set(range(n)))
    monkeypatch.setattr(cpushare, "others_busy", lambda: others)


@pytest.fixture()
def two_cores(monkeypatch):
    _cores(monkeypatch, 2)


def test_a_process_counts_while_it_works_and_not_once_it_died():
    assert cpushare.running() == 1  # this one, about to work
    other = _holder()
    try:
        assert cpushare.running() == 2
        cpushare.hold()
        assert cpushare.running() == 2 and len(_markers()) == 2  # this process's own marker is counted once
        cpushare.release()
        assert _markers() == [str(other.pid)]
    finally:
        _end(other, signal.SIGKILL)  # a crash: nothing removes its marker, its lock goes with it
    assert _markers() == [str(other.pid)]
    assert cpushare.running() == 1 and _markers() == []  # not counted, and the leftover removed


def test_auto_gives_each_running_tmix_its_share(monkeypatch):
    _cores(monkeypatch, 4)
    assert threads.configure_threads("auto") == 4
    others = [_holder()]
    try:
        assert threads.configure_threads("auto") == 2
        others.append(_holder())
        assert threads.configure_threads("auto") == 1 and threads._plan["why"] == "3 tmix runs share the CPU"
        assert threads.configure_threads("3") == 3  # a count given is obeyed
    finally:
        for proc in others:
            _end(proc)


@pytest.mark.parametrize("others,expected", [(0.4, 2), (0.6, 1), (1.2, 1), (2.0, 1)])
def test_auto_leaves_the_cpus_that_other_processes_keep_busy(monkeypatch, others, expected):
    _cores(monkeypatch, 2, others)
    assert threads.configure_threads("auto") == expected
    assert threads._plan["why"] == ("" if expected == 2 else f"other processes keep {others:.1f} of 2 CPUs busy")


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat here")
def test_the_load_of_other_processes_is_measured(monkeypatch):
    monkeypatch.setitem(cpushare._look, "at", None)
    MEASURED()
    busy = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    subprocess.run([sys.executable, "-c", busy], timeout=60)
    assert MEASURED() >= 0.3  # most of a CPU for 1.5 s, however busy the machine is otherwise


def test_two_tmix_processes_at_once_share_the_cores(monkeypatch, tiny_dir, tmp_path):
    """Two real `tmix ask` processes on 2 cores (OMP_NUM_THREADS=2, whatever this machine has): the second one to
    start works with 1 thread while the first works (slowed to 50 ms a step, with no end token, until stopped)."""
    doc = tmp_path / "doc.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:600])
    (tmp_path / "t").mkdir()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "2", "TMPDIR": str(tmp_path / "t"),
           "TMIX_SERVE": "off"}
    slow = ("import sys, time; from tmixcli import checkpoints, cli, generate; generate.stop_ids = lambda *_: set(); "
            "checkpoints.between_steps.append(lambda: time.sleep(0.05)); cli.main(sys.argv[1:])")
    args = ["ask", str(doc), "Who?", "--model", tiny_dir, "--no-cache", *TINY[:-1]]  # then --max-new-tokens' value
    first = subprocess.Popen([sys.executable, "-c", slow, *args, "400", "--no-stop-repeats"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    markers = tmp_path / "t" / f"tmix-{os.getuid()}" / "running"
    try:
        deadline = time.monotonic() + 120
        while not list(markers.glob("*.lock")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(markers.glob("*.lock")), first.communicate()
        second = subprocess.run([sys.executable, "-m", "tmixcli", *args, "4"], env=env, capture_output=True,
                                text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second one worked"
        assert second.returncode == 0 and "tmix: 1 of 2 CPU threads: 2 tmix runs share the CPU\n" in second.stderr, \
            second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    monkeypatch.setattr(cpushare, "folder", lambda: str(markers))
    assert cpushare.running() == 1  # neither counts once it ended


def test_a_run_at_work_drops_to_its_share_once_another_starts(capsys, monkeypatch, tiny_dir, tmp_path, two_cores):
    doc = tmp_path / "doc.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:600])
    others: list[subprocess.Popen] = []
    step = threads._step

    def step_then_start_another() -> None:
        step()
        if not others:
            others.append(_holder())

    monkeypatch.setattr(threads, "_step", step_then_start_another)
    monkeypatch.setattr(threads, "RECHECK_S", 0.0)  # decided again at every checkpoint
    try:
        code, out, _ = run(capsys, "ask", str(doc), "Who?", "--model", tiny_dir, *TINY, "--no-cache", "--json")
    finally:
        for proc in others:
            _end(proc)
    assert code == 0 and json.loads(out)["threads"] == 1 and threads._plan["last"] == [2, 1]


def test_a_run_takes_its_share_while_another_tmix_works(capsys, monkeypatch, tiny_dir, tmp_path, two_cores):
    doc = tmp_path / "doc.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:600])
    args = (str(doc), "Who is the project manager?", "--model", tiny_dir, *TINY, "--no-cache")
    code, out, _ = run(capsys, "ask", *args, "--json")
    assert code == 0 and json.loads(out)["threads"] == 2  # alone: both cores
    seen: list[list[str]] = []
    step = threads._step
    monkeypatch.setattr(threads, "_step", lambda: (step(), seen.append(_markers())))
    other = _holder()
    try:
        code, out, _ = run(capsys, "ask", *args, "--json")
        assert code == 0 and json.loads(out)["threads"] == 1
        code, _, err = run(capsys, "ask", *args)
        assert code == 0 and "tmix: 1 of 2 CPU threads: 2 tmix runs share the CPU\n" in err, err
        assert seen and all(len(names) == 2 for names in seen)  # while it worked, its own marker was there too
        assert _markers() == [str(other.pid)]  # and gone once it ended
    finally:
        _end(other)
    assert not cpushare.working()


def test_an_explicit_thread_count_is_obeyed(capsys, tiny_dir, tmp_path, two_cores):
    doc = tmp_path / "doc.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:600])
    code, out, err = run(capsys, "ask", str(doc), "Who?", "--model", tiny_dir, *TINY, "--json", "--threads", "1")
    assert code == 0 and json.loads(out)["threads"] == 1, err  # auto would take both cores here


def test_chat_waiting_for_a_question_is_no_work(capsys, monkeypatch, tiny_dir, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text((DOCS / "notes.txt").read_text()[:600])
    questions, waiting = ["Who?", "When?", ""], []

    def next_question(_interactive: bool) -> str:
        waiting.append((cpushare.working(), _markers()))
        return questions.pop(0)

    monkeypatch.setattr(cli_chat, "_next_question", next_question)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "chat", str(doc), "--model", tiny_dir, *TINY, "--quiet")
    assert code == 0, err
    assert waiting == [(False, [])] * 3


def test_a_server_decides_per_request(monkeypatch, tiny_dir, tmp_path, two_cores):
    from served import client_of_a_test_server

    from tmixcli.models import load_model
    from tmixcli.resident import ResidentKV

    lm = load_model(tiny_dir, "cpu", "auto", progress=False)
    (tmp_path / "doc.txt").write_text((DOCS / "notes.txt").read_text()[:600])
    argv = ["ask", "doc.txt", "Who?", "--model", tiny_dir, *TINY]

    def request(*extra: str) -> tuple[str, list[str]]:
        key, client, conn = client_of_a_test_server(argv + list(extra), tiny_dir, tmp_path, monkeypatch)
        logged: list[str] = []
        with conn:
            serve._handle(conn, key, lm, logged.append, ResidentKV())
        assert client.wait(timeout=60) == 0
        return client.stderr.read(), logged

    err, logged = request()
    assert logged[-1].startswith("ask: exit 0 in ") and logged[-1].endswith(" s (2 threads)"), logged
    assert "CPU threads" not in err
    other = _holder()  # another tmix starts working: the next request takes its share
    try:
        err, logged = request()
        assert logged[-1].endswith(" s (1 thread)") and "tmix: 1 of 2 CPU threads: 2 tmix runs share" in err, err
    finally:
        _end(other)
    err, logged = request()
    assert logged[-1].endswith(" s (2 threads)"), logged  # alone again
    err, logged = request("--threads", "1")  # a request's own count wins over the server's auto
    assert logged[-1].endswith(" s (1 thread)") and "CPU threads" not in err, (logged, err)
    assert request()[1][-1].endswith(" s (2 threads)")  # and applies to that request only
    assert serving.served == {} and checkpoints.between_steps == [] and not cpushare.working()
