"""tmix in odd shells: a C locale without UTF-8 mode (stdout's errors are surrogateescape), a current folder deleted
under the shell, and options written after `--`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runcli import one_error, run
from tmixcli import serve_client, stdout
from tmixcli.errors import TmixError

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Die Projektleiterin heißt Zoë Müller. Der Ort ist 東京.\n"


def _python(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python argv` with this checkout's tmix."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *argv], capture_output=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})})


@pytest.mark.parametrize("errors", ["strict", "surrogateescape", "surrogatepass"])
def test_every_error_handler_of_stdout_gets_question_marks(monkeypatch, errors):
    """PYTHONIOENCODING=ascii gives 'strict', the C locale without UTF-8 mode 'surrogateescape': either way a
    character stdout cannot encode is a '?', and a file name's undecodable bytes go out as they came."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors, write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors, write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    stdout.tolerant_streams()
    sys.stdout.write("heißt Zoë, bericht_\udcfc.txt")
    sys.stderr.write("tmix: heißt")
    assert out.buffer.getvalue() == b"hei?t Zo?, bericht_\xfc.txt"
    assert err.buffer.getvalue() == b"tmix: hei\\xdft"


def test_c_locale_without_utf8_mode_prints_the_text(tmp_path):
    """`PYTHONUTF8=0 LC_ALL=C tmix text utf8.txt`: was a UnicodeEncodeError traceback at the first 'ß' (exit 1)."""
    doc = tmp_path / "utf8.txt"
    doc.write_text(TEXT, encoding="utf-8")
    done = _python("-m", "tmixcli", "text", str(doc), env={"PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
                                                            "LC_ALL": "C", "PYTHONIOENCODING": ""})
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    assert done.stdout == b"Die Projektleiterin hei?t Zo? M?ller. Der Ort ist ??.\n"


def test_a_deleted_current_folder_is_one_line_before_torch(tmp_path):
    """`tmix ask` from a folder deleted under the shell: torch's MKL died there ("Cannot load libtorch_cpu.so",
    exit 2, no word from tmix); now one line. `tmix text` of an absolute path still works there."""
    gone = tmp_path / "gone"
    gone.mkdir()
    doc = tmp_path / "small.txt"
    doc.write_text("The gardener is Kwame Asante.\n")
    script = (f"import os, sys, runpy; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv[0] = 'tmix'; "
              "runpy.run_module('tmixcli', run_name='__main__')")
    asked = _python("-c", script, "ask", str(doc), "Who is the gardener?", "--max-new-tokens", "5")
    assert asked.returncode == 2 and asked.stdout == b""
    assert asked.stderr.decode() == (f"tmix: error: the current folder no longer exists ({gone}): cd to another "
                                     "one\n")
    gone.mkdir()
    text = _python("-c", script, "text", str(doc))
    assert text.returncode == 0 and text.stdout.decode() == "The gardener is Kwame Asante.\n", text.stderr


def test_the_server_client_in_a_deleted_folder_says_so(capsys, monkeypatch, tmp_path):
    """The client of `tmix serve` fell back to a local run when it could not name its folder, which torch killed."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(TmixError, match=rf"^the current folder no longer exists \({gone}\): cd to another one$"):
        serve_client.forward(["ask", "doc.txt", "Who?"], "some key")
    assert one_error(capsys, "prefill", str(tmp_path / "doc.txt")).startswith("tmix: error: the current folder no")


def test_options_after_dashes_are_named(capsys, monkeypatch, tmp_path):
    """`tmix ask -- -dash.md "Q" -q` (options after the arguments, as the README writes them) was "Q: no such file":
    -q had become the question."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-dash.md").write_text("The password is swordfish.\n")
    usage = "FILE... QUESTION"
    for option in ("-q", "--max-new-tokens=10", "--json"):
        assert one_error(capsys, "ask", "--", "-dash.md", "What is the password?", option) == (
            f"tmix: error: {option} comes after --, where it is read as {usage}, not as an option: put the options "
            f"before -- (tmix ask [OPTIONS] -- {usage})")
    assert one_error(capsys, "prefill", "--", "-dash.md", "--json").endswith("(tmix prefill [OPTIONS] -- FILE...)")
    code, out, err = run(capsys, "text", "-q", "--", "-dash.md")  # options before --: the file is read
    assert code == 0 and out == "The password is swordfish.\n", err
    (tmp_path / "-q").write_text("A file named -q.\n")  # an existing file of that name is a file
    code, out, err = run(capsys, "text", "--", "-q")
    assert code == 0 and out == "A file named -q.\n", err
