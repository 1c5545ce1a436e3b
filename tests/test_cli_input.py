"""The command line on inputs it cannot use whole (endless streams, huge files), on streams that cannot encode the
answer, on Ctrl-C from its first moments, and with stderr redirected (no progress bars)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bigdocs
from runcli import TINY, run, tmix_subprocess
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)
from tmixcli import fit, htmltext, kvheader, stdout, textcap
from tmixcli.config import Settings
from tmixcli.documents import load_documents
from tmixcli.textcap import TextCap, files_cap

ROOT = Path(__file__).resolve().parents[1]
NOTES = (ROOT / "sample_docs" / "notes.txt").read_text()


def spawn(*argv: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m tmixcli argv` from the checkout, with Ctrl-C delivered as at a terminal (a test run in the
    background inherits SIGINT ignored)."""
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


_PEAK = ("import atexit, re, runpy, sys\n"
         "out = sys.argv.pop(1)\n"
         "def peak():\n"
         "    status = open('/proc/self/status').read()\n"
         "    open(out, 'w').write(re.search(r'VmHWM:\\s*(\\d+)', status).group(1))\n"
         "atexit.register(peak)\n"
         "sys.argv[0] = 'tmix'\n"
         "runpy.run_module('tmixcli', run_name='__main__')\n")


def measured(peak_file: Path, *argv: str, **kw) -> subprocess.Popen:
    """`tmix argv` that writes its peak RSS in KiB to `peak_file` as it exits. VmHWM, not the rusage of a child:
    a forked child's rusage counts its parent's memory before exec (GBs under a CUDA build of torch)."""
    return spawn("-c", _PEAK, str(peak_file), *argv, **kw)


def waited(proc: subprocess.Popen, peak_file: Path) -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of a finished `measured` child."""
    proc.wait()
    return proc.returncode, int(peak_file.read_text())


@pytest.mark.model
def test_endless_stdin_is_refused_fast_in_bounded_memory(tmp_path):
    """`yes 'The code is 5.' | tmix ask - q`: one line once the text is past what the context could use."""
    proc = measured(tmp_path / "peak", "ask", "-", "What is the code?", stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE, stdout=subprocess.PIPE)

    def feed() -> None:
        try:
            while True:
                proc.stdin.write(b"The code is 5.\n" * 4096)
        except (BrokenPipeError, ValueError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    start = time.perf_counter()
    writer.start()
    err = proc.stderr.read().decode()
    code, rss_kib = waited(proc, tmp_path / "peak")
    seconds = time.perf_counter() - start
    assert code == 2, err
    assert err.startswith("tmix: error: stdin is over 2.5 MiB, more than the model's 8192-token context can hold"), err
    assert err.count("\n") == 1 and "--truncate" in err
    assert rss_kib < 400 * 1024 and seconds < 60, (rss_kib, seconds)  # tokenizing it all took GBs; no torch here


def test_dev_zero_is_one_line_in_bounded_memory(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    proc = measured(tmp_path / "peak", "ask", "/dev/zero", "What is the code?", stderr=subprocess.PIPE,
                    stdout=subprocess.PIPE)
    err = proc.stderr.read().decode()
    code, rss_kib = waited(proc, tmp_path / "peak")
    assert code == 2 and err.count("\n") == 1, err
    assert "/dev/zero is not a document tmix reads" in err and "binary data" in err
    assert rss_kib < 400 * 1024


def _old_fit(monkeypatch, lm, doc):
    """fit_document as it was before inputs were capped: the whole text tokenized (no cap can cut it)."""
    with monkeypatch.context() as m:
        m.setattr(textcap, "cap_of", lambda context, vocab: TextCap(context, 1 << 40))
        return fit.fit_document(lm, doc, Settings(truncate=True))


@pytest.mark.parametrize("times_cap", [0.8, 40])
def test_truncate_keeps_the_same_tokens_tokenizing_only_what_can_be_kept(capsys, monkeypatch, tiny_dir, tmp_path,
                                                                         times_cap):
    """A document within the cap is cut from the same tokens as ever; one far past it too, although only the part
    that could be kept is read and tokenized."""
    from tmixcli.models import load_model

    cap = files_cap(tiny_dir)
    assert cap is not None and cap.context == 1024
    text = (NOTES * (int(cap.chars * times_cap) // len(NOTES) + 1))[:int(cap.chars * times_cap)]
    path = tmp_path / "long.txt"
    path.write_text(text)
    lm = load_model(tiny_dir, "cpu", "fp32", progress=False)
    want_ids, want_notes = _old_fit(monkeypatch, lm, load_documents([str(path)]))
    seen: list[int] = []
    call = type(lm.tokenizer).__call__

    def spy(tok, text, *args, **kwargs):
        seen.append(len(text))
        return call(tok, text, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(type(lm.tokenizer), "__call__", spy)
        doc = load_documents([str(path)], budget=textcap.Budget(True, lambda: cap))
        ids, notes = fit.fit_document(lm, doc, Settings(truncate=True))
    assert ids == want_ids
    assert max(seen) <= cap.chars + textcap.MARGIN + textcap.TAIL + 1000  # the kept text and the prompt around it
    if times_cap < 1:
        assert notes == want_notes and not doc.partial
    else:
        assert notes == [want_notes[0].split(" of ")[0] + " of more than 1024 document tokens"]
    code, out, err = run(capsys, "ask", str(path), "What is the budget?", "--truncate", "--model", tiny_dir,
                         "--max-new-tokens", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert kvheader.read_prefix_ids(Path(result["kv_path"])) == want_ids
    assert notes[-1] in result["notes"]  # after it, maybe "the model gave no answer" (random weights)


@pytest.mark.parametrize("kind", bigdocs.KINDS)
def test_truncate_keeps_the_same_tokens_of_a_document_read_only_in_part(capsys, monkeypatch, tiny_dir, tmp_path,
                                                                        kind):
    """An office, EPUB or HTML document far past the cap is read only until its text surely is (test_inputs): cut
    by --truncate to the same tokens as when its whole text was extracted."""
    from tmixcli.models import load_model

    monkeypatch.setattr(htmltext, "HTML_CHUNK", 1 << 16)  # a page of 800 KB stands for a bigger one
    cap = files_cap(tiny_dir)
    path = bigdocs.write(tmp_path / f"long.{kind}", bigdocs.paragraphs(40 * cap.chars // 100))
    lm = load_model(tiny_dir, "cpu", "fp32", progress=False)
    want_ids, want_notes = _old_fit(monkeypatch, lm, load_documents([str(path)]))
    doc = load_documents([str(path)], budget=textcap.Budget(True, lambda: cap))
    assert doc.partial and doc.notes == (
        f"read only the beginning of {path}, already more than the model's context could hold",)
    ids, notes = fit.fit_document(lm, doc, Settings(truncate=True))
    assert ids == want_ids and notes == [want_notes[0].split(" of ")[0] + " of more than 1024 document tokens"]
    code, out, err = run(capsys, "ask", str(path), "What is the budget?", "--truncate", "--model", tiny_dir,
                         "--max-new-tokens", "1", "--json")
    assert code == 0, err
    assert kvheader.read_prefix_ids(Path(json.loads(out)["kv_path"])) == want_ids


def test_answer_characters_stdout_cannot_encode_are_replaced(monkeypatch):
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", ascii_out)
    stdout.tolerant_streams()
    sys.stdout.write("The main test site is located in Tromsø.")
    assert ascii_out.buffer.getvalue() == b"The main test site is located in Troms?."


@pytest.mark.model
def test_ascii_stdout_gets_the_answer_without_a_traceback(tmp_path):
    """PYTHONIOENCODING=ascii tmix ask facts.txt "Where is the main test site?": "Troms?", not a UnicodeEncodeError."""
    doc = tmp_path / "facts.txt"
    doc.write_text("Field notes.\n\nThe main test site is located in Tromsø, Norway, near the harbour. "
                   "The backup site is in Bergen.\n")
    proc = spawn("-m", "tmixcli", "ask", str(doc), "Where is the main test site?", "--max-new-tokens", "30",
                 env={"PYTHONIOENCODING": "ascii"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "Traceback" not in err.decode(), err.decode()
    assert "Troms?" in out.decode("ascii")


def _interrupt_while_importing(delay: float) -> tuple[int, str]:
    """Start `python -X importtime -m tmixcli ask ...`, send Ctrl-C `delay` s after its first import of tmix's own
    (from there on tmix answers for it), and return (exit code, stderr without the import timings)."""
    proc = spawn("-X", "importtime", "-m", "tmixcli", "ask", str(ROOT / "sample_docs" / "notes.txt"), "Who?",
                 "--no-cache", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            if line.split("|")[-1].strip() == "tmixcli.startup":
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(60), "".join(lines)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    reader.join(10)
    return proc.returncode, "".join(line for line in lines if not line.startswith("import time:"))


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.3])
def test_ctrl_c_while_starting_up_exits_130_in_one_line(delay):
    """Ctrl-C during the imports of typer (the first ~0.5 s) or torch: "tmix: interrupted", exit 130, no traceback."""
    code, err = _interrupt_while_importing(delay)
    assert code == 130, err
    assert err.strip() == "tmix: interrupted" or (err.strip().endswith("tmix: interrupted") and
                                                  "Traceback" not in err), err


def test_the_tmix_script_sets_its_ctrl_c_handler_before_it_loads_anything_else():
    """The `tmix` script starts in tmixcli/startup.py, which sets its handler before importing anything (signal alone
    imports enum, functools and collections: most of the ~17 ms where a Ctrl-C showed Python's traceback) and
    imports the command line only then."""
    assert 'tmix = "tmixcli.startup:main"' in (ROOT / "pyproject.toml").read_text()
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import tmixcli.startup, _signal; "
             "loaded = sorted(sys.modules); import json; "
             "print(json.dumps([loaded, _signal.getsignal(_signal.SIGINT).__qualname__]))")
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(ROOT)], capture_output=True, text=True, check=True)
    modules, handler = json.loads(out.stdout)
    assert handler == "_interrupted" and not {"signal", "enum", "contextlib", "tmixcli.cli"} & set(modules), modules
    script = "import sys; sys.argv = ['tmix', '--version']; from tmixcli.startup import main; main()"
    version = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("tmix "), version


def test_the_tmix_script_keeps_its_handler_through_the_parsing_until_a_command_begins():
    """Under the script, Ctrl-C exits at once until a command's body begins (typer's parsing builds pydantic adapters,
    whose native code can lose a KeyboardInterrupt: a Ctrl-C 0.3 s in once let the whole answer run); a plain import
    of the command line (tests, `tmix serve`'s requests) hands Ctrl-C back at once."""
    probe = ("import sys, _signal; from tmixcli import startup; startup._deferred[0] = {deferred}; import tmixcli.cli; "
             "name = lambda: _signal.getsignal(_signal.SIGINT).__qualname__; "
             "print(name(), startup.command(name)(), startup.command(name)())")
    for deferred, says in ((True, "_interrupted default_int_handler default_int_handler"),
                           (False, "default_int_handler default_int_handler default_int_handler")):
        out = subprocess.run([sys.executable, "-c", probe.format(deferred=deferred)], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        assert out.stdout.split() == says.split(), out


_DROPPED = ("import os, signal, sys\n"
            "from tmixcli import cli, models\n"
            "load = models.load_model\n"
            "class Finalized:\n"
            "    def __del__(self):\n"
            "        os.kill(os.getpid(), signal.SIGINT)  # raised here, where Python drops it\n"
            "def loading(*args, **kwargs):\n"
            "    Finalized()\n"
            "    return load(*args, **kwargs)\n"
            "models.load_model = loading\n"
            "cli.main(sys.argv[1:])\n")


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_the_answer(tiny_dir):
    """Python drops a KeyboardInterrupt raised in a finalizer (a __del__, a weakref callback: a Ctrl-C 0.3 s in once
    let a whole answer run in CI); the next checkpoint raises it again, without the traceback Python prints."""
    proc = spawn("-c", _DROPPED, "ask", str(ROOT / "sample_docs" / "notes.txt"), "Who?", "--model", tiny_dir,
                 "--no-cache", "--truncate", "--max-new-tokens", "50", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err.decode()
    assert err.decode().rstrip().endswith("tmix: interrupted") and "Traceback" not in err.decode(), err.decode()
    assert out.decode().strip() == "", out.decode()


def test_progress_bar_left_out_when_stderr_is_not_a_terminal(monkeypatch):
    from tiny import tiny_model

    from tmixcli import generate

    bars = []
    monkeypatch.setattr("tqdm.tqdm", lambda *a, **kw: bars.append(kw) or pytest.fail("a bar was made"))
    model = tiny_model("llama")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with generate.layer_progress(model, 1, True):
        pass
    assert bars == []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    made = []

    class Bar:
        def __init__(self, *a, **kw) -> None:
            made.append(kw)

        def close(self) -> None:
            pass

    monkeypatch.setattr("tqdm.tqdm", Bar)
    monkeypatch.setattr(sys, "stderr", Terminal())
    with generate.layer_progress(model, 1, True):
        pass
    assert len(made) == 1


def test_gguf_conversion_bar_left_out_unless_shown():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from tmixcli.convert import _gguf_bar

    original = gguf_utils.tqdm
    with _gguf_bar(False):
        assert gguf_utils.tqdm([1, 2], file=io.StringIO()).disable
    assert gguf_utils.tqdm is original
    with _gguf_bar(True):
        assert gguf_utils.tqdm is original


def _closed_stdout() -> None:
    os.close(1)


@pytest.mark.parametrize("argv", [["--version"], ["cache", "ls"]])
@pytest.mark.parametrize("where, why", [("closed", "stdout is closed"), ("/dev/full", "No space left on device")])
def test_a_closed_or_full_stdout_is_one_line_not_a_traceback(argv, where, why, tmp_path):
    """`tmix --version >&-`, `tmix cache ls >/dev/full`: one line on stderr and exit 1."""
    with open(os.devnull if where == "closed" else where, "w") as out:
        r = subprocess.run([sys.executable, "-m", "tmixcli", *argv], cwd=ROOT, stdout=out, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "TMIX_CACHE_DIR": str(tmp_path)},
                           preexec_fn=_closed_stdout if where == "closed" else None, timeout=120)
    assert (r.returncode, r.stderr) == (1, f"tmix: error: cannot write to stdout: {why}\n")


@pytest.mark.parametrize("where", ["closed", "/dev/full"])
def test_an_unwritable_stderr_drops_the_status_lines_not_the_answer(where, tiny_dir, tmp_path):
    """`tmix ask doc q 2>&-` (or 2>/dev/full): the answer on stdout and exit 0, as with -q."""
    doc = tmp_path / "short.txt"
    doc.write_text(NOTES[:1000])
    argv = ["ask", str(doc), "Who?", "--model", tiny_dir, "--max-new-tokens", "4", "--n-local", "16", "--last-n", "8"]
    env = {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache"), "TMIX_SERVE": "off"}
    quiet = subprocess.run([sys.executable, "-m", "tmixcli", *argv, "-q"], cwd=ROOT, capture_output=True, text=True,
                           env=env, timeout=600)
    assert quiet.returncode == 0 and quiet.stdout.strip(), quiet.stderr
    with open(os.devnull if where == "closed" else where, "w") as err:
        r = subprocess.run([sys.executable, "-m", "tmixcli", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                           text=True, env=env, timeout=600,
                           preexec_fn=(lambda: os.close(2)) if where == "closed" else None)
    assert (r.returncode, r.stdout) == (0, quiet.stdout)


def test_a_full_stdout_for_the_answer_is_one_line_and_keeps_the_kv_file(tiny_dir, tmp_path):
    """`tmix ask doc q >/dev/full`: one line, exit 1; the prefill's KV file is saved as when the reader leaves."""
    doc = tmp_path / "short.txt"
    doc.write_text(NOTES[:1000])
    argv = ["ask", str(doc), "Who?", "--model", tiny_dir, "--max-new-tokens", "4", "--n-local", "16", "--last-n", "8"]
    env = {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache"), "TMIX_SERVE": "off"}
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "tmixcli", *argv, "-q"], cwd=ROOT, stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    assert (r.returncode, r.stderr) == (1, "tmix: error: cannot write to stdout: No space left on device\n")
    assert len(list((tmp_path / "cache" / "kv").glob("*.safetensors"))) == 1


@pytest.mark.parametrize("mode", ["stream", "json"])
def test_closed_stdout_ends_quietly_and_keeps_the_kv_file(tiny_dir, short_doc, tmp_path, mode):
    """`tmix ask doc q | head`: the reader gone before the answer is exit 141, no traceback, the KV file saved."""
    argv = ["ask", short_doc, "a question?", "--model", tiny_dir, "--max-new-tokens", "40", *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "tmixcli", *argv, *(["--json"] if mode == "json" else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    proc.stdout.close()  # the pipe's reader is gone before the first byte
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "error" not in err and "Exception ignored" not in err, err
    kv_files = list((Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors"))
    assert len(kv_files) == 1 and kv_files[0].stat().st_size > 0
    again = tmix_subprocess(*argv, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["cache_hit"], again.stderr
