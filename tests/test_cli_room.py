"""The answer's room in the context: `ask` counts its own question, a --kv file is checked as a document is, and an
answer the context cuts short is said to be so."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from runcli import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--n-local", "16", "--last-n", "8", "--start-layer", "1")
QUESTION = "Who is the project manager?"
LONG_QUESTION = QUESTION + " Please answer in full." * 12  # more than the 64 tokens kept for a question


@pytest.fixture()
def doc(tmp_path) -> str:
    """~300 tokens for the tiny model (1024-token context)."""
    path = tmp_path / "small.txt"
    path.write_text((ROOT / "sample_docs" / "notes.txt").read_text()[:300])
    return str(path)


@pytest.fixture()
def kv_file(capsys, tmp_path, doc, tiny_dir) -> str:
    path = tmp_path / "small.kv"
    code, _, err = run(capsys, "prefill", doc, "-o", str(path), "--model", tiny_dir, *TINY, "-q")
    assert code == 0, err
    return str(path)


def loads(monkeypatch) -> list:
    """The KV file loads (kvread.load_kv) made from here on."""
    from tmixcli import kvread

    calls: list = []
    real = kvread.load_kv
    monkeypatch.setattr(kvread, "load_kv", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def error(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, err)
    return err.strip()


def answer(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "ask", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def n_question(tiny_dir: str, question: str = QUESTION) -> int:
    from transformers import AutoTokenizer

    from tmixcli import prompt

    return len(prompt.question_ids(AutoTokenizer.from_pretrained(tiny_dir), question))


@pytest.mark.parametrize("command", ["ask", "chat"])
@pytest.mark.parametrize("max_new", ["1000", "700"])
def test_kv_file_refuses_an_answer_too_long_as_the_document_does(capsys, monkeypatch, tiny_dir, doc, kv_file,
                                                                 command, max_new):
    """`--max-new-tokens` past the context: the same line for the document and its KV file, before the load."""
    model = ("--model", tiny_dir, *TINY, "--max-new-tokens", max_new)
    question = (QUESTION,) if command == "ask" else ()
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n"))
    from_doc = error(capsys, command, doc, *question, *model)
    loaded = loads(monkeypatch)
    from_kv = error(capsys, command, "--kv", kv_file, *question, *model)
    assert loaded == []
    if max_new == "1000":  # crowded out: the very same line
        assert from_kv == from_doc and from_kv.startswith(f"tmix: error: --max-new-tokens {max_new} is too large: ")
    else:  # the KV file cannot be cut: only --max-new-tokens is offered
        head = from_doc.split("; use ")[0]
        assert head.startswith("tmix: error: small.txt needs "), head
        assert head.endswith("over the model's 1024-token context"), head
        assert from_kv.split("; use ")[0] == head and "--truncate" not in from_kv
        assert re.search(r"; use --max-new-tokens \d+ or less$", from_kv), from_kv


def test_ask_counts_its_own_question(capsys, tiny_dir, doc, kv_file):
    """The longest answer beside a short question is the context less the prompt, not less a 64-token reserve."""
    model = ("--model", tiny_dir, *TINY, "--no-stop-repeats")
    prompt_tokens = answer(capsys, doc, QUESTION, *model, "--max-new-tokens", "1")["prompt_tokens"]
    most = 1024 - prompt_tokens
    assert n_question(tiny_dir) < 64
    for where in ((doc,), ("--kv", kv_file)):
        res = answer(capsys, *where, QUESTION, *model, "--max-new-tokens", str(most))
        assert res["prompt_tokens"] == prompt_tokens and res["stop_reason"] in ("end", "length"), res
        err = error(capsys, "ask", *where, QUESTION, *model, "--max-new-tokens", str(most + 1))
        assert f"--max-new-tokens {most} or less" in err and f"+ question {n_question(tiny_dir)} + " in err, err


def test_long_question_without_room_for_its_answer_is_refused(capsys, monkeypatch, tiny_dir, doc, kv_file):
    """A question past the 64 tokens kept for it, whose --max-new-tokens answer would not fit: refused naming both,
    before a prefill or a load, instead of an answer silently cut by the context; the values it offers fit."""
    n_long = n_question(tiny_dir, LONG_QUESTION)
    prompt_tokens = answer(capsys, doc, QUESTION, "--model", tiny_dir, *TINY, "--max-new-tokens", "1")["prompt_tokens"]
    prefix = prompt_tokens - n_question(tiny_dir)
    max_new = 1024 - prefix - 64  # fits beside a 64-token question, not beside this one
    assert n_long > 64
    model = ("--model", tiny_dir, *TINY, "--no-stop-repeats")
    loaded = loads(monkeypatch)
    for where in ((doc,), ("--kv", kv_file)):
        err = error(capsys, "ask", *where, LONG_QUESTION, *model, "--max-new-tokens", str(max_new))
        assert err == (f"tmix: error: the question and its answer do not fit: {n_long} question + {max_new} answer "
                       f"tokens after the {prefix}-token document prompt exceed the model's 1024-token context; "
                       f"shorten the question to 64 tokens or less, or use --max-new-tokens {1024 - prefix - n_long} "
                       "or less")
    assert loaded == []
    res = answer(capsys, doc, LONG_QUESTION, *model, "--max-new-tokens", str(1024 - prefix - n_long))
    assert res["stop_reason"] in ("end", "length")


def test_truncate_leaves_a_long_question_its_answer(capsys, tmp_path, tiny_dir):
    """--truncate cuts a document further for a question longer than 64 tokens: the whole answer still fits."""
    long = tmp_path / "long.txt"
    long.write_text((ROOT / "sample_docs" / "notes.txt").read_text())
    res = answer(capsys, str(long), LONG_QUESTION, "--model", tiny_dir, *TINY, "--truncate", "--max-new-tokens", "8")
    assert res["prompt_tokens"] + 256 <= 1024 and "truncated long.txt" in res["notes"][0]


def test_chat_says_when_the_context_cut_the_answer(capsys, monkeypatch, tmp_path, tiny_dir):
    """A chat question longer than the room kept for it, on a document that fills the context: the answer stops
    where the context is full, and the status line says so rather than blaming --max-new-tokens."""
    long = tmp_path / "long.txt"
    long.write_text((ROOT / "sample_docs" / "notes.txt").read_text())
    monkeypatch.setattr(sys, "stdin", io.StringIO(LONG_QUESTION + "\n" + QUESTION + "\n"))
    code, out, err = run(capsys, "chat", str(long), "--model", tiny_dir, *TINY, "--truncate", "--no-stop-repeats",
                         "--max-new-tokens", "256")
    assert code == 0, err
    ttft = [line for line in err.splitlines() if "TTFT" in line]
    assert len(ttft) == 2, err
    if ttft[0].split(", ")[1].startswith("256 tokens"):
        pytest.skip("the tiny model ended its answer on its own")
    assert ttft[0].endswith("; cut: the model's context is full (a shorter question leaves more room)"), ttft[0]
    assert "cut: the model's context is full" not in ttft[1]


def test_piped_chat_exits_2_when_a_question_was_refused(capsys, monkeypatch, tiny_dir, doc):
    """Piped questions go on past a refused one, and the exit code tells the script that one was refused."""
    too_long = QUESTION + " please answer" * 400
    model = ("--model", tiny_dir, *TINY, "--max-new-tokens", "4", "-q")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{too_long}\n{QUESTION}\n"))
    code, out, err = run(capsys, "chat", doc, *model)
    assert code == 2 and err.count("tmix: error: the question does not fit") == 1, err
    assert out.count("\n") >= 2  # both other questions answered
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\n{QUESTION}\n"))
    assert run(capsys, "chat", doc, *model)[0] == 0


@pytest.fixture()
def long_doc(tmp_path) -> str:
    """~1100 tokens for the tiny model: over its 1024-token context."""
    path = tmp_path / "long.txt"
    path.write_text((ROOT / "sample_docs" / "notes.txt").read_text())
    return str(path)


def test_document_refused_before_the_load_with_the_loads_own_line(capsys, monkeypatch, tmp_path, tiny_dir, doc,
                                                                  long_doc):
    """Once a load has checked the model's tokenizer files, a document over the context (or an answer room that
    crowds it out) is refused before the model loads, by `ask` and `prefill -o`, in the very line the load gives."""
    from tmixcli import cli_open, filetok

    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))  # no files checked yet
    model = ("--model", tiny_dir, *TINY)
    runs = [("ask", long_doc, QUESTION, *model), ("ask", long_doc, QUESTION, *model, "--max-new-tokens", "2000"),
            ("prefill", long_doc, "-o", str(tmp_path / "out.kv"), *model)]
    assert filetok.files_model(tiny_dir) is None
    answer(capsys, doc, QUESTION, *model, "--max-new-tokens", "1")  # a load checks the files
    assert filetok.files_model(tiny_dir) is not None
    with monkeypatch.context() as m:
        m.setattr(filetok, "files_model", lambda spec: None)
        after_load = [error(capsys, *argv) for argv in runs]
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    assert [error(capsys, *argv) for argv in runs] == after_load


def test_truncate_hint_for_a_large_answer_fits(capsys, tiny_dir, long_doc):
    """--max-new-tokens too large for any of the document: the value offered with --truncate runs (it leaves the
    document 64 tokens), one more is refused."""
    model = ("--model", tiny_dir, *TINY, "--no-cache")
    err = error(capsys, "ask", long_doc, QUESTION, *model, "--max-new-tokens", "2000")
    most = int(re.search(r"; with --truncate, use (\d+) or less: \1 leaves 64 tokens for the beginning of long.txt, "
                         r"each one less leaves one more$", err)[1])
    res = answer(capsys, long_doc, QUESTION, *model, "--truncate", "--max-new-tokens", str(most))
    assert res["prompt_tokens"] + most <= 1024 and "truncated long.txt" in res["notes"][0], res
    err = error(capsys, "ask", long_doc, QUESTION, *model, "--truncate", "--max-new-tokens", str(most + 1))
    assert err.startswith(f"tmix: error: --max-new-tokens {most + 1} is too large: "), err


def test_truncated_document_counted_as_the_status_line_counts_it(capsys, tiny_dir, long_doc):
    """The note of a cut document counts its tokens as the status line and the refusal do: the prompt's less the
    template's (the text meets the prompt's newlines around it), so the three numbers agree."""
    model = ("--model", tiny_dir, *TINY, "--no-cache")
    whole = int(re.search(r"long.txt needs (\d+) document tokens", error(capsys, "ask", long_doc, QUESTION, *model))[1])
    code, _, err = run(capsys, "ask", long_doc, QUESTION, *model, "--truncate", "--max-new-tokens", "2")
    assert code == 0, err
    shown = re.search(r"long.txt: (\d+) document tokens \((\d+) with the prompt\)", err)
    kept = re.search(r"truncated long.txt: kept its first (\d+) of (\d+) document tokens", err)
    assert shown and kept, err
    assert kept[1] == shown[1] and int(kept[2]) == whole > int(kept[1]), err
