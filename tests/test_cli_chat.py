"""`tmix chat`: questions in turn from one prefill, Ctrl-C, --keep-history, and a document edited between questions."""

from __future__ import annotations

import sys

import pytest

from runcli import DOCS, TINY, ask_json, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)


def test_chat_rewinds_cache_between_questions(capsys, monkeypatch, tiny_dir, short_doc):
    import io

    questions = ["Who is the project manager?", "What is the renovation budget?"]
    args = ("--model", tiny_dir, "--max-new-tokens", "12", *TINY)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n\n"))
    code, out, err = run(capsys, "chat", short_doc, "--quiet", *args)
    assert code == 0, err
    singles = [ask_json(capsys, short_doc, q, *args) for q in questions]
    assert all(r["cache_hit"] for r in singles)
    assert "".join(out.split()) == "".join("".join(r["answer"] for r in singles).split())


@pytest.mark.parametrize("keep", [False, True])
def test_chat_ctrl_c_stops_the_answer_not_the_chat(capsys, monkeypatch, tiny_dir, short_doc, keep):
    import io

    from tmixcli import generate

    real, calls = generate.stream_text, []

    def first_interrupted(tokenizer, ids):
        calls.append(1)
        for i, piece in enumerate(real(tokenizer, ids)):
            if len(calls) == 1 and i == 2:
                raise KeyboardInterrupt  # as SIGINT would, in the middle of the first answer
            yield piece

    monkeypatch.setattr(generate, "stream_text", first_interrupted)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the project manager?\nWhat is the budget?\n"))
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY, *(("--keep-history",) if keep else ()))
    code, out, err = run(capsys, "chat", short_doc, *args)
    assert code == 0, err
    assert "answer interrupted" in err and err.count("TTFT") == 1 and len(calls) == 2
    assert ("left out of the conversation" in err) == keep
    single = ask_json(capsys, short_doc, "What is the budget?", "--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    assert "".join(single["answer"].split()) in "".join(out.split())  # the second answer as if asked alone


def test_chat_keep_history_saves_the_prefix_of_a_fresh_document(capsys, monkeypatch, tiny_dir, short_doc):
    """The KV file of a fresh prefill is written after the first answer, when a kept turn has grown the cache."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the project manager?\nWhat is the budget?\n"))
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, _, err = run(capsys, "chat", short_doc, "--keep-history", *args)
    assert code == 0, err
    assert "cache miss" in err and err.count("TTFT") == 2
    info = ask_json(capsys, short_doc, "What is the budget?", *args)
    assert info["cache_hit"]  # the saved file holds exactly the document prefix


def test_chat_keep_history_and_kv(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    import io

    kv = tmp_path / "short.safetensors"
    code, _, err = run(capsys, "prefill", short_doc, "-o", str(kv), "--quiet", "--model", tiny_dir, *TINY)
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.StringIO("first question?\nsecond question?\n"))
    code, out, err = run(capsys, "chat", "--kv", str(kv), "--keep-history", "--model", tiny_dir,
                         "--max-new-tokens", "6", *TINY)
    assert code == 0, err
    assert err.count("TTFT") == 2 and "cache hit" in err


class _Questions:
    """chat's stdin: each question line is handed out after its action (an edit of the document) has run."""

    def __init__(self, *steps) -> None:
        self.steps = list(steps)

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        if not self.steps:
            return ""
        action, line = self.steps.pop(0)
        if action is not None:
            action()
        return line + "\n"


def _squeezed(text: str) -> str:
    return "".join(text.split())


def test_chat_reads_an_edited_document_again(capsys, monkeypatch, tiny_dir, tmp_path):
    """An edit between questions is noticed (one status line) and read again from the old version's unchanged rows;
    a version that cannot be read, or a file deleted, is said in one line and the chat answers from the last one."""
    doc = tmp_path / "minutes.txt"
    text = (DOCS / "notes.txt").read_text()[:1000]
    grown = text + "\nThe new site manager is Ola Nordmann.\n"
    doc.write_text(text)
    q = "Who is the site manager?"
    steps = [(None, q), (lambda: doc.write_text(grown), q), (lambda: doc.write_text(grown + "word " * 3000), q),
             (doc.unlink, q), (None, q)]
    monkeypatch.setattr(sys, "stdin", _Questions(*steps))
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "chat", str(doc), *args)
    assert code == 0 and err.count("TTFT") == 5 and "tmix: error" not in err and "Traceback" not in err, err
    assert err.count("tmix: minutes.txt changed; reading it again") == 2
    read, failed = [part.split("TTFT", 1)[1].split("\n")[0] for part in err.split("reading it again")[1:]]
    assert " (prefill " in read and " + question " in read and "(" not in failed, err  # as ask counts its prefill
    assert "tokens taken from" in err  # the edit near its end: the old version's rows reused
    assert "tmix: cannot read minutes.txt again (minutes.txt needs" in err and "over the model's 1024" in err
    assert err.count("tmix: minutes.txt can no longer be read (No such file or directory); answering from the "
                     "version already read") == 1
    doc.write_text(text)
    old = ask_json(capsys, str(doc), q, *args)
    doc.write_text(grown)
    new = ask_json(capsys, str(doc), q, *args)
    assert old["cache_hit"] and new["cache_hit"]  # the chat saved the KV files of both versions
    assert _squeezed(out) == _squeezed(old["answer"] + new["answer"] * 4)


def test_chat_keep_history_starts_over_on_an_edited_document(capsys, monkeypatch, tiny_dir, tmp_path):
    doc = tmp_path / "minutes.txt"
    text = (DOCS / "notes.txt").read_text()[:1000]
    doc.write_text(text)
    grown = text + "\nThe new site manager is Ola Nordmann.\n"
    steps = [(None, "Who is the project manager?"), (None, "And the budget?"),
             (lambda: doc.write_text(grown), "Who is the site manager?")]
    monkeypatch.setattr(sys, "stdin", _Questions(*steps))
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "chat", str(doc), "--keep-history", *args)
    assert code == 0 and err.count("TTFT") == 3, err
    assert "minutes.txt changed; reading it again" in err and "the conversation starts over on the new version" in err
    first_on_new = ask_json(capsys, str(doc), "Who is the site manager?", *args)
    assert first_on_new["cache_hit"] and _squeezed(out).endswith(_squeezed(first_on_new["answer"]))


def test_chat_keep_history_drops_the_oldest_turns_when_full(capsys, monkeypatch, tiny_dir, short_doc):
    """A conversation that outgrows the 1024-token context drops its oldest turns instead of refusing questions;
    every answer keeps its full --max-new-tokens."""
    import io

    questions = [f"Question {i}: who is the project manager?" for i in range(6)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(questions) + "\n"))
    code, out, err = run(capsys, "chat", short_doc, "--keep-history", "--model", tiny_dir, "--max-new-tokens", "20",
                         *TINY)
    assert code == 0 and "tmix: error" not in err and err.count("TTFT") == 6, err
    assert "tmix: the conversation no longer fits the model's 1024-token context: dropped its 1 oldest turn, the " \
           "last 1 kept" in err
    assert all("20 tokens" in line for line in err.splitlines() if "TTFT" in line), err


def test_dropped_turns_leave_the_state_of_a_conversation_that_began_later(tiny_dir, short_doc):
    """After the oldest turns are dropped, the next answer is the one a fresh document state gives after the kept
    turns (the first of them asked as a first question), built here independently."""
    from tmixcli import answer, generate, opening, prompt
    from tmixcli.config import Settings
    from tmixcli.conversation import Conversation
    from tmixcli.documents import load_documents
    from tmixcli.models import load_model

    lm = load_model(tiny_dir, "cpu", "fp32", progress=False)
    s = Settings(method="dense", use_cache=False, max_new_tokens=20, stop_repeats=False, progress=False)
    doc = load_documents([short_doc])
    notes: list[str] = []
    talk = Conversation(opening.open_document(lm, doc, s), s, keep=True, say=notes.append)
    for i in range(4):
        talk.ask(f"Question {i}: who is the project manager?")
    before = len(notes)
    talk.ask("Who is the architect?")
    assert len(notes) == before + 1 and "dropped its" in notes[-1] and len(talk.turns) >= 2
    fresh = opening.open_document(lm, doc, s)
    tok, (q, a) = lm.tokenizer, talk.turns[-1]
    history = [t for i, (hq, ha) in enumerate(talk.turns[:-1])
               for t in (prompt.question_ids if i == 0 else prompt.followup_ids)(tok, hq) + ha]
    generate.extend(lm.model, fresh.cache, history)
    expected = answer.ask_ids(fresh, prompt.followup_ids(tok, q), s)
    assert a == expected.ids and a


@pytest.mark.parametrize("failure", [KeyboardInterrupt, "error"])
def test_chat_reads_again_after_an_interrupted_or_failed_reread(capsys, monkeypatch, tiny_dir, tmp_path, failure):
    """Ctrl-C (or an error) while an edited document was read again left the chat on the old version for good: the
    next questions found no change and were answered from the old text. The change now stands until a re-read ends."""
    from tmixcli import generate
    from tmixcli.errors import TmixError

    doc = tmp_path / "minutes.txt"
    text = (DOCS / "notes.txt").read_text()[:1000]
    grown = text + "\nThe new site manager is Ola Nordmann.\n"
    doc.write_text(text)
    real, calls = generate.prefill, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the prefill of the edited version
            raise KeyboardInterrupt if failure is KeyboardInterrupt else TmixError("the disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "prefill", second_fails)
    q = "Who is the site manager?"
    monkeypatch.setattr(sys, "stdin", _Questions((None, q), (lambda: doc.write_text(grown), q), (None, q), (None, q)))
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "chat", str(doc), *args)
    assert code == 0 and err.count("TTFT") == 4 and "Traceback" not in err, err
    assert err.count("tmix: minutes.txt changed; reading it again") == 2, err
    said = "interrupted" if failure is KeyboardInterrupt else "(the disk went away)"
    assert said in err and "answering from the version already read (the next question tries again)" in err
    doc.write_text(text)
    old = ask_json(capsys, str(doc), q, *args)
    doc.write_text(grown)
    new = ask_json(capsys, str(doc), q, *args)
    assert new["cache_hit"]  # the chat's re-read saved the new version's KV file
    assert _squeezed(out) == _squeezed(old["answer"] * 2 + new["answer"] * 2)
