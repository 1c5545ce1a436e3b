"""Status lines around a prefill: the tokens line said before it, its progress (a bar at a terminal, one line in a
log), the note on a prompt too short for the triangle, Ctrl-C's line breaks and chat's TTFT after a re-read."""

from __future__ import annotations

import io
import json
import os
import re
import select
import sys
from pathlib import Path

import pytest

from runcli import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--n-local", "16", "--last-n", "8", "--start-layer", "1")
QUESTION = "Who is the project manager?"


@pytest.fixture()
def doc(tmp_path) -> str:
    """~300 tokens for the tiny model (1024-token context): longer than TINY's triangle span of 32."""
    path = tmp_path / "small.txt"
    path.write_text((ROOT / "sample_docs" / "notes.txt").read_text()[:300])
    return str(path)


def _args(tiny_dir: str, *more: str) -> tuple[str, ...]:
    """The tiny model and TINY's attention settings (and `more`), for any command."""
    return ("--model", tiny_dir, *TINY, *more)


SHORT = ("--max-new-tokens", "4")


def _stderr_when_work_begins(capsys, monkeypatch) -> list[str]:
    """What stderr had said when each prefill (generate.prefill) or KV file read (kvread.load_kv) began."""
    from tmixcli import generate, kvread

    seen: list[str] = []
    for module, name in ((generate, "prefill"), (kvread, "load_kv")):
        def wrapped(*args, _real=getattr(module, name), **kw):
            seen.append(capsys.readouterr().err)
            return _real(*args, **kw)
        monkeypatch.setattr(module, name, wrapped)
    return seen


def test_the_tokens_line_comes_before_the_prefill_or_the_kv_load(capsys, monkeypatch, tiny_dir, doc, tmp_path):
    """The documents' tokens, model and attention (and notes known by then) are said before a prefill of minutes, or
    a KV file's read; cache hit or miss after it."""
    seen = _stderr_when_work_begins(capsys, monkeypatch)
    kv = str(tmp_path / "doc.kv")
    for argv in (("ask", doc, QUESTION, *SHORT), ("ask", doc, QUESTION, *SHORT),  # a miss, then a hit
                 ("prefill", doc, "-o", kv), ("ask", "--kv", kv, QUESTION, *SHORT)):
        seen.clear()
        code, _, err = run(capsys, *argv, *_args(tiny_dir))
        assert code == 0, err
        assert "document tokens" in seen[0] and "cache" not in seen[0], (argv, seen)
        assert "document tokens" not in err and re.search("cache (hit|miss)", err), (argv, err)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n"))
    seen.clear()
    code, _, err = run(capsys, "chat", doc, *_args(tiny_dir, "--no-cache", *SHORT))
    assert code == 0 and "document tokens" in seen[0] and "document tokens" not in err, (seen, err)


def test_a_long_prefill_says_so_in_one_line_where_stderr_is_a_log(capsys, monkeypatch, tiny_dir, doc):
    """No bar in a log (stderr not a terminal): a prefill still running after PROGRESS_AFTER_S says
    "prefilling N tokens ..." once, between the tokens line and the cache line; not under --quiet or --json."""
    from tmixcli import generate

    monkeypatch.setattr(generate, "PROGRESS_AFTER_S", 0.0)  # every prefill is a long one
    code, _, err = run(capsys, "ask", doc, QUESTION, *_args(tiny_dir, "--no-cache", *SHORT))
    assert code == 0, err
    lines = err.splitlines()
    tokens = [i for i, line in enumerate(lines) if "document tokens" in line]
    prompt = re.search(r"\((\d+) with the prompt\)", lines[tokens[0]]).group(1)
    said = [i for i, line in enumerate(lines) if line.startswith("tmix: prefilling")]
    assert [lines[i] for i in said] == [f"tmix: prefilling {prompt} tokens ..."], err
    assert tokens[0] < said[0] < next(i for i, line in enumerate(lines) if "cache miss" in line), err
    for flag in ("--quiet", "--json"):
        code, _, err = run(capsys, "ask", doc, QUESTION, *_args(tiny_dir, "--no-cache", flag, *SHORT))
        assert code == 0 and "prefilling" not in err, err


def test_the_bar_shows_on_a_terminal_that_reports_no_size(monkeypatch):
    """A pty nobody sized (0x0: `script`, a pty opened by a program) is still a terminal: tqdm, left to read its size,
    drew nothing there at all."""
    from tiny import tiny_model

    from tmixcli import generate

    master, slave = os.openpty()
    try:
        assert os.get_terminal_size(slave) == (0, 0)
        with open(slave, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            monkeypatch.setattr(generate, "PROGRESS_AFTER_S", 0.0)
            generate.prefill(tiny_model("llama"), list(range(10, 60)), progress=True)
        shown = b""
        while select.select([master], [], [], 0.5)[0]:
            shown += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    assert b"prefill: " in shown and b"%|" in shown, shown


def test_a_prompt_within_the_triangle_span_is_said_to_be_dense(capsys, tiny_dir, doc, tmp_path):
    """Up to n_init + n_local + last_n prompt tokens the triangle leaves nothing out: the status line says every layer
    is dense, and --json's attention has all_layers_dense (its settings, and so the cache key, are unchanged)."""
    short = tmp_path / "ferry.txt"
    short.write_text("An adult ticket costs 40 kroner.\n")
    code, _, err = run(capsys, "ask", str(short), QUESTION, "--model", tiny_dir, "--max-new-tokens", "2")
    assert code == 0, err
    assert re.search(r"last_n=128 \(the prompt's \d+ tokens are within n_init \+ n_local \+ last_n = 648: every "
                     r"layer is dense\)", err), err
    code, out, err = run(capsys, "ask", str(short), QUESTION, "--model", tiny_dir, "--max-new-tokens", "2", "--json")
    attention = json.loads(out)["attention"]
    assert attention["all_layers_dense"] is True and attention["method"] == "trimix", attention
    code, out, err = run(capsys, "ask", doc, QUESTION, *_args(tiny_dir, *SHORT))
    assert code == 0 and "every layer is dense" not in err, err
    code, out, err = run(capsys, "prefill", doc, *_args(tiny_dir, "--json"))
    assert json.loads(out)["attention"]["all_layers_dense"] is False, out


def _interrupted_after(monkeypatch, pieces: list[str]) -> None:
    """Each answer streams `pieces`, then Ctrl-C (as SIGINT would, mid-answer)."""
    from tmixcli import generate

    def interrupted(tokenizer, ids):
        yield from pieces
        raise KeyboardInterrupt
    monkeypatch.setattr(generate, "stream_text", interrupted)


@pytest.mark.parametrize("pieces", [["The", " project"], []], ids=["mid-answer", "before-the-answer"])
def test_ctrl_c_ends_the_answers_line_on_stdout_and_leaves_stderr_its_message_lines(capsys, monkeypatch, tiny_dir,
                                                                                     doc, pieces):
    """Ctrl-C in `ask` (a fresh prefill, whose KV file is still saved, then a cache hit): stdout ends with a line
    break where an answer was cut, stderr holds no blank line where it is no terminal."""
    _interrupted_after(monkeypatch, pieces)
    for saving in (True, False):
        code, out, err = run(capsys, "ask", doc, QUESTION, *_args(tiny_dir, *SHORT))
        assert code == 130 and out == ("The project\n" if pieces else ""), out
        assert ("saving the KV file" in err) == saving and err.endswith("\ntmix: interrupted\n"), err
        assert "\n\n" not in err and not err.startswith("\n"), err


def test_chat_ctrl_c_ends_the_cut_answer_once(capsys, monkeypatch, tiny_dir, doc):
    """In `chat` Ctrl-C ends the cut answer's line on stdout (no empty line where nothing was written) and goes on."""
    _interrupted_after(monkeypatch, [])
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n"))
    code, out, err = run(capsys, "chat", doc, *_args(tiny_dir, *SHORT))
    assert code == 0 and out == "" and "tmix: answer interrupted\n" in err and "\n\n" not in err, (out, err)
    _interrupted_after(monkeypatch, ["The", " project"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{QUESTION}\n"))
    code, out, err = run(capsys, "chat", doc, *_args(tiny_dir, *SHORT))
    assert code == 0 and out == "The project\nThe project\n" and err.count("answer interrupted") == 2, (out, err)


def test_the_line_break_before_a_message_after_ctrl_c_is_only_for_a_terminal(capsys, monkeypatch):
    """At a terminal the ^C is echoed where the cursor is: a message after it starts on a line of its own, which the
    answer's line ended on stdout already gives; in a log no blank line at all."""
    from tmixcli import stdout

    for terminal, answer, lead in ((True, "The answer", ""), (True, "", "\n"), (False, "The answer", ""),
                                   (False, "", "")):
        monkeypatch.setattr(stdout, "is_terminal", lambda _stream, tty=terminal: tty)
        with stdout.guarded():
            sys.stdout.write(answer)
            assert stdout.interrupt_lead() == lead, (terminal, answer)
            assert stdout.interrupt_lead() == "", (terminal, answer)  # a second line about the same Ctrl-C
        assert capsys.readouterr().out == (answer + "\n" if answer else "")
