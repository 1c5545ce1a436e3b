"""Documents, questions, system prompts and answers too long for the context: named with their tokens, or cut."""

from __future__ import annotations

import json
import sys

import pytest

from runcli import DOCS, TINY, _count_calls, ask_json, one_error, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)


def test_document_too_long_refused_then_truncated(capsys, tmp_path, tiny_dir):
    long = tmp_path / "long.txt"
    long.write_text((DOCS / "notes.txt").read_text())
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "ask", str(long), "Who is the project manager?", *args)
    assert code == 2 and out == ""
    assert "over the model's 1024" in err and "--truncate" in err and len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "tmix-cache").glob("kv/*"))
    res = ask_json(capsys, str(long), "Who is the project manager?", "--truncate", "--no-cache", *args)
    assert 1024 - 64 - 256 - 40 < res["prompt_tokens"] <= 1024 - 256  # --truncate leaves 64 + 256 tokens of room


def test_prefill_and_ask_cut_a_long_document_alike(capsys, tmp_path, tiny_dir):
    """`prefill --truncate` and `ask --truncate` (any --max-new-tokens up to 256) keep the same prefix: one KV file."""
    long = tmp_path / "long.txt"
    long.write_text((DOCS / "notes.txt").read_text())
    args = ("--model", tiny_dir, *TINY, "--truncate")
    code, out, err = run(capsys, "prefill", str(long), *args, "--json")
    assert code == 0, err
    pre = json.loads(out)
    assert 1024 - 64 - 256 - 40 < pre["tokens"] <= 1024 - 64 - 256
    assert [n.split(":")[0] for n in pre["notes"]] == ["truncated long.txt"]
    for extra in (("--max-new-tokens", "8"), ()):
        res = ask_json(capsys, str(long), "Who is the project manager?", *extra, *args)
        assert res["cache_hit"] and res["kv_path"] == pre["kv_path"]
        assert res["notes"] == pre["notes"]  # a cache hit still says the answer saw only part of the document
    res = ask_json(capsys, str(long), "Who is the project manager?", "--max-new-tokens", "400", *args)
    assert not res["cache_hit"] and res["prompt_tokens"] <= 1024 - 400  # a longer answer gets its room


def test_several_documents_truncated_to_fair_shares(capsys, tmp_path, tiny_dir):
    """Too long together: the short document stays whole, the long one loses its end; the answer still runs."""
    short, long = tmp_path / "short.txt", tmp_path / "long.txt"
    short.write_text("The project manager is Tomas Brekke.")
    long.write_text((DOCS / "notes.txt").read_text())
    args = (str(short), str(long), "Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, _, err = run(capsys, "ask", *args)
    assert code == 2 and "short.txt + long.txt needs" in err and "--truncate" in err
    code, _, err = run(capsys, "ask", *args, "--truncate", "--no-cache")
    assert code == 0, err
    assert "truncated long.txt: kept its first" in err and "truncated short.txt" not in err


@pytest.fixture()
def small_doc(tmp_path) -> str:
    """~300 tokens for the tiny tokenizer: fits the tiny model's context with a 256-token answer and to spare."""
    path = tmp_path / "short.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:300])
    return str(path)


def test_oversized_system_prompt_is_named(capsys, tiny_dir, small_doc):
    """A system prompt that leaves the document no room is named with its tokens, not blamed on the document."""
    import re

    from transformers import AutoTokenizer

    args = (small_doc, "Who is the project manager?", "--model", tiny_dir, *TINY)
    system = "Be helpful. " * 300
    n_system = len(AutoTokenizer.from_pretrained(tiny_dir)(system, add_special_tokens=False).input_ids)
    for extra, n_question in (((), len_question(tiny_dir)), (("--truncate",), 64)):  # --truncate keeps 64 for it
        err = one_error(capsys, "ask", *args, "--system", system, *extra)
        assert err.startswith("tmix: error: the system prompt (--system) is too long: prompt template "), err
        assert f"+ system prompt {n_system} + question {n_question} + answer 256 = " in err, err
        assert "1024-token context" in err
        assert "leaving 0 for short.txt; shorten it" in err and "--truncate to cut" not in err
        parts = re.search(r"template (\d+) \+ system prompt (\d+) \+ question (\d+) \+ answer (\d+) = (\d+)", err)
        assert sum(map(int, parts.groups()[:4])) == int(parts[5]) > 1024
    err = one_error(capsys, "prefill", small_doc, "--model", tiny_dir, *TINY, "--system", system)
    assert "the system prompt (--system) is too long" in err
    some = "Be helpful. " * 45  # fits, but not beside the whole document: that is cut, the share said
    err = one_error(capsys, "ask", *args, "--system", some)
    assert "short.txt needs" in err and " document tokens + prompt template " in err and "--truncate" in err
    n_some = len(AutoTokenizer.from_pretrained(tiny_dir)(some, add_special_tokens=False).input_ids)
    assert f"+ system prompt {n_some} + question " in err, err
    code, _, err = run(capsys, "ask", *args, "--system", some, "--truncate", "--max-new-tokens", "4", "--no-cache")
    assert code == 0 and "truncated short.txt: kept its first" in err, err


def test_oversized_answer_room_is_named(capsys, tiny_dir, small_doc):
    """--max-new-tokens that leaves the document no room is named, with the largest value that keeps it whole: for
    `ask` the room its own question takes (--truncate keeps 64 tokens for any question, to cut alike)."""
    import re

    args = (small_doc, "Who is the project manager?", "--model", tiny_dir, *TINY, "--no-cache")
    most = {}
    for extra, n_question in (((), len_question(tiny_dir)), (("--truncate",), 64)):
        err = one_error(capsys, "ask", *args, "--max-new-tokens", "1000", *extra)
        assert err.startswith("tmix: error: --max-new-tokens 1000 is too large: prompt template "), err
        assert f"question {n_question} + answer 1000 = " in err and "leaving 0 for short.txt" in err
        assert "system" not in err
        most[extra] = int(re.search(r"use (\d+) or less to keep all of short.txt$", err)[1])
    whole = ask_json(capsys, *args, "--max-new-tokens", "4")
    assert most[()] == 1024 - whole["prompt_tokens"]  # the question's own tokens, not 64
    assert most[("--truncate",)] == 1024 - 64 - whole["prompt_tokens"] + len_question(tiny_dir)
    res = ask_json(capsys, *args, "--max-new-tokens", str(most[()]), "--no-stop-repeats")
    assert res["prompt_tokens"] == whole["prompt_tokens"] and res["new_tokens"] <= most[()]
    assert res["stop_reason"] in ("end", "length")  # the whole --max-new-tokens had room
    err = one_error(capsys, "ask", *args, "--max-new-tokens", str(most[()] + 1))
    assert err.endswith(f"or --max-new-tokens {most[()]} or less"), err
    res = ask_json(capsys, *args, "--max-new-tokens", str(most[("--truncate",)]), "--truncate", "--no-stop-repeats")
    assert res["prompt_tokens"] == whole["prompt_tokens"] and res["new_tokens"] <= most[("--truncate",)]


def len_question(tiny_dir: str, question: str = "Who is the project manager?") -> int:
    """Tokens of the question part of the prompt (question, end of turn, answer header) for the tiny model."""
    from transformers import AutoTokenizer

    from tmixcli import prompt

    return len(prompt.question_ids(AutoTokenizer.from_pretrained(tiny_dir), question))


def test_oversized_question_is_named(capsys, tiny_dir, small_doc):
    import re

    question = "Who is the project manager of the library renovation? " * 120
    err = one_error(capsys, "ask", small_doc, question, "--model", tiny_dir, *TINY, "--no-cache", "-q")
    said = re.search(r"the question does not fit: (\d+) tokens after the (\d+)-token document prompt exceed the "
                     r"model's 1024-token context; shorten it to (\d+) tokens or less \(room for a 256-token answer\)",
                     err)
    assert said, err
    n_question, before, most = map(int, said.groups())
    assert n_question == len_question(tiny_dir, question) and most == 1024 - before - 256


def test_documents_that_cannot_be_cut_enough_say_their_room(capsys, tmp_path, tiny_dir):
    """Many documents whose headings alone outgrow the room --truncate has left: the numbers, not "no room"."""
    for i in range(40):
        (tmp_path / f"part{i:02}.txt").write_text(f"Part {i} of the minutes: nothing was decided today.")
    err = one_error(capsys, "ask", str(tmp_path), "Who?", "--model", tiny_dir, *TINY, "--truncate",
                    "--max-new-tokens", "700")
    assert "cannot be cut to fit: the model's 1024-token context leaves it " in err
    assert "tokens after prompt template " in err and "question 64 + answer 700" in err


def test_fair_share():
    from tmixcli.fit import fair_share

    assert fair_share([10, 500, 300], 400) == [10, 195, 195]
    assert fair_share([10, 20], 100) == [10, 20]
    assert fair_share([7, 7, 7], 10) == [3, 3, 4] and sum(fair_share([50, 60, 70], 101)) == 101


def test_question_that_does_not_fit_is_refused_before_the_prefill(capsys, monkeypatch, tiny_dir, short_doc,
                                                                  tmp_path):
    """`ask` with a question too long for the context: one line with the tokens, exit 2, before any prefill (no KV
    file) and before a cached or --kv file is loaded; `chat`, whose prefill came before the question, says so,
    keeps that prefill's KV file and goes on to the next question."""
    import io

    from tmixcli import generate, kvread

    prefills = _count_calls(monkeypatch, generate, "prefill")
    loads = _count_calls(monkeypatch, kvread, "load_kv")
    long_question = "Who is the project manager? " + "please answer " * 300
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    kv_files = lambda: list((tmp_path / "tmix-cache").glob("kv/*.safetensors"))  # noqa: E731
    code, out, err = run(capsys, "ask", short_doc, long_question, *args)
    assert code == 2 and out == "" and err.count("does not fit") == 1, err
    assert err.strip().splitlines()[-1].startswith("tmix: error: the question does not fit: ")
    assert "-token document prompt exceed the model's 1024-token context" in err
    assert prefills == [] and kv_files() == []
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{long_question}\nWhat is the budget?\n"))
    code, out, err = run(capsys, "chat", short_doc, *args)
    assert code == 2, err  # piped questions: the refused one makes the exit code 2, once the others are answered
    assert err.count("tmix: error: the question does not fit") == 1 and err.count("TTFT") == 1
    assert len(prefills) == 1 and len(kv_files()) == 1
    single = ask_json(capsys, short_doc, "What is the budget?", *args)
    assert single["cache_hit"] and "".join(single["answer"].split()) in "".join(out.split())
    loads.clear()
    for where in ((short_doc,), ("--kv", str(kv_files()[0]))):  # a cached file, a --kv file: not loaded
        code, out, err = run(capsys, "ask", *where, long_question, *args)
        assert code == 2 and out == "" and "tmix: error: the question does not fit: " in err, err
    assert loads == [] and len(prefills) == 1
