"""End to end through the `tmix` CLI with the real default model on the project's sample documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runcli import run

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "sample_docs"
FACTS = json.loads((DOCS / "facts.json").read_text())


TINY = ("--n-local", "16", "--last-n", "8", "--start-layer", "1")


@pytest.fixture()
def short_doc(tmp_path) -> str:
    """~650 tokens for the tiny tokenizer: fits the tiny model's 1024-token context."""
    path = tmp_path / "short.txt"
    path.write_text((DOCS / "notes.txt").read_text()[:1000])
    return str(path)


def ask_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "ask", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def tmix_subprocess(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmixcli", *argv], capture_output=True, text=True, input=stdin,
                          env=os.environ.copy(), timeout=600)


@pytest.mark.model
@pytest.mark.parametrize("doc", ["report.pdf", "notes.txt", "report.docx", "report.odt"])
def test_answers_facts_from_sample_docs(capsys, doc):
    """Cold ask prefills and saves; follow-up questions hit the cache; every fact is answered exactly."""
    source = "report.pdf" if doc.startswith("report.") else doc  # .docx and .odt hold report.pdf's text
    facts = [f for f in FACTS if f["doc"] == source]
    results = [ask_json(capsys, str(DOCS / doc), f["question"], "--max-new-tokens", "40") for f in facts]
    for fact, res in zip(facts, results):
        assert fact["answer"].lower() in res["answer"].lower(), (fact, res["answer"])
    assert [r["cache_hit"] for r in results] == [False] + [True] * (len(results) - 1)
    assert len({r["kv_path"] for r in results}) == 1
    first = results[0]
    assert first["document_tokens"] > 500 and first["prompt_tokens"] > first["document_tokens"]
    assert first["ttft_s"] >= first["prefill_s"] > 0 and first["attention"]["method"] == "trimix"
    for key in ("answer", "prompt_tokens", "document_tokens", "ttft_s", "prefill_s", "decode_tokens_per_s",
                "cache_hit", "kv_path", "model", "attention"):
        assert key in first


@pytest.mark.model
def test_answers_facts_from_two_documents_read_together(capsys):
    """notes.txt then report.pdf in one prompt (shipped start layer): every fact of both, from one KV file.

    With report.pdf first the default model misses the CEO at start layer 9 (dense answers it): docs/fidelity.md."""
    docs = [str(DOCS / "notes.txt"), str(DOCS / "report.pdf")]
    results = [ask_json(capsys, *docs, f["question"], "--max-new-tokens", "40") for f in FACTS]
    for fact, res in zip(FACTS, results):
        assert fact["answer"].lower() in res["answer"].lower(), (fact, res["answer"])
    assert [r["cache_hit"] for r in results] == [False] + [True] * (len(FACTS) - 1)
    assert results[0]["attention"]["start_layer"] == 9 and results[0]["document_tokens"] > 4500


@pytest.mark.parametrize("method", ["dense", "trimix"])
def test_cached_answer_token_identical_tiny(capsys, tiny_dir, short_doc, method):
    args = (short_doc, "Who is the project manager?", "--model", tiny_dir, "--attention", method,
            "--max-new-tokens", "24", *TINY)
    cold = ask_json(capsys, *args)
    warm = ask_json(capsys, *args)
    nocache = ask_json(capsys, *args, "--no-cache")
    assert (cold["cache_hit"], warm["cache_hit"], nocache["cache_hit"]) == (False, True, False)
    assert cold["answer"] == warm["answer"] == nocache["answer"] and cold["answer"]
    assert nocache["kv_path"] is None


@pytest.mark.model
def test_cached_answer_token_identical_default_model(capsys):
    args = (str(DOCS / "notes.txt"), FACTS[-1]["question"], "--max-new-tokens", "24")
    warm_after_cold = [ask_json(capsys, *args) for _ in range(2)]
    nocache = ask_json(capsys, *args, "--no-cache")
    assert [r["cache_hit"] for r in warm_after_cold] == [False, True]
    assert warm_after_cold[0]["answer"] == warm_after_cold[1]["answer"] == nocache["answer"]


@pytest.mark.model
def test_prefill_then_ask_from_kv_file_alone(capsys, tmp_path):
    kv = tmp_path / "notes.safetensors"
    code, out, err = run(capsys, "prefill", str(DOCS / "notes.txt"), "-o", str(kv), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert Path(info["kv_path"]) == kv and kv.is_file() and not info["cache_hit"]
    # file size = layers x 2 x kv_heads x tokens x head_dim x 4 bytes (fp32) + token ids + a small header
    tensor_bytes = 30 * 2 * 3 * info["tokens"] * 64 * 4 + info["tokens"] * 8
    assert tensor_bytes < kv.stat().st_size < tensor_bytes + 64 * 1024
    res = ask_json(capsys, "--kv", str(kv), FACTS[-1]["question"], "--max-new-tokens", "30")
    assert res["cache_hit"] and FACTS[-1]["answer"].lower() in res["answer"].lower()
    other = str(info["attention"]["start_layer"] + 1)  # settings that differ from the file's are refused
    code, _, err = run(capsys, "ask", "--kv", str(kv), "q?", "--start-layer", other)
    assert code == 2 and f"--start-layer {other} cannot apply to this KV file" in err


def test_looping_answer_is_cut_and_trimmed(capsys, monkeypatch, tmp_path, tiny_dir):
    """An answer that loops stops after three copies of the loop; --json keeps one copy, streaming shows all."""
    from transformers import AutoTokenizer

    from tmixcli import generate

    said = "The budget for the library renovation is four million kroner."  # 10 words
    loop = AutoTokenizer.from_pretrained(tiny_dir)(" " + said, add_special_tokens=False).input_ids
    closed = []

    def looping(model, cache, suffix_ids, stops, max_new_tokens=256, *rest, on_first=None):
        try:
            on_first()
            yield from (loop * 100)[:max_new_tokens]
        finally:
            closed.append(True)

    monkeypatch.setattr(generate, "generate_ids", looping)
    doc = tmp_path / "budget.txt"
    doc.write_text("The budget is four million kroner.")
    args = (str(doc), "Budget?", "--model", tiny_dir, "--max-new-tokens", "400", "--no-cache", *TINY)
    full = ask_json(capsys, *args, "--no-stop-repeats")
    cut = ask_json(capsys, *args)
    assert full["stop_reason"] == "length" and full["new_tokens"] == 400
    assert cut["stop_reason"] == "repeat" and 3 * len(loop) < cut["new_tokens"] < 4 * len(loop)
    assert cut["answer"] == said and closed == [True, True]
    code, out, err = run(capsys, "ask", *args)  # streamed: all three copies shown, then the status says why
    assert code == 0 and out.strip().startswith(" ".join([said] * 3)) and "began to repeat itself" in err


def test_cache_cap_evicts_least_recently_used(capsys, monkeypatch, tmp_path, tiny_dir):
    docs = []
    for name in ("a.txt", "b.txt", "c.txt"):
        docs.append(tmp_path / name)
        docs[-1].write_text(f"Document {name}. " + (DOCS / "notes.txt").read_text()[:600])
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first = ask_json(capsys, str(docs[0]), *args)
    size = Path(first["kv_path"]).stat().st_size
    monkeypatch.setenv("TMIX_CACHE_MAX", str(int(size * 1.5)))
    code, _, err = run(capsys, "ask", str(docs[1]), *args)
    assert code == 0 and "removed 1 least recently used KV file (" in err and not Path(first["kv_path"]).exists()
    monkeypatch.setenv("TMIX_CACHE_MAX", str(size // 2))
    res = ask_json(capsys, str(docs[2]), *args)
    assert res["kv_path"] is None and res["answer"] is not None
    code, _, err = run(capsys, "ask", str(docs[2]), *args)
    assert code == 0 and "KV file not saved" in err and "(over the cache cap)" in err and ".safetensors" not in err
    from tmixcli import generate

    monkeypatch.setattr(generate, "prefill", lambda *a, **k: pytest.fail("prefilled a file it then refused"))
    code, _, err = run(capsys, "prefill", str(docs[2]), "--model", tiny_dir, *TINY)
    assert code == 2 and "exceed the cache cap TMIX_CACHE_MAX" in err and "-o" in err
    monkeypatch.setenv("TMIX_CACHE_MAX", "plenty")
    code, _, err = run(capsys, "ask", str(docs[2]), *args)
    assert code == 2 and "TMIX_CACHE_MAX must be a size" in err and "prefill" not in err


def test_bad_cache_cap_is_refused_before_the_model_on_a_hit_as_on_a_miss(capsys, monkeypatch, tiny_dir, short_doc,
                                                                        tmp_path):
    """A mistyped TMIX_CACHE_MAX is one line before the model loads, whether the document is cached or not; runs
    that never write to the cache (--no-cache, --kv, prefill -o) do not need it."""
    from tmixcli import cli_open

    args = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", *TINY)
    kv = ask_json(capsys, short_doc, *args)["kv_path"]
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("A document no run has prefilled yet. " * 20)
    monkeypatch.setenv("TMIX_CACHE_MAX", "abc")
    load = cli_open.load
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model"))
    for argv in (["ask", short_doc, *args], ["ask", str(fresh), *args], ["prefill", short_doc, *args[1:3], *TINY]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err == "tmix: error: TMIX_CACHE_MAX must be a size like 20G, 500M or " \
                                                  "off, not 'abc'\n", err
    monkeypatch.setattr(cli_open, "load", load)
    for argv in (["ask", short_doc, *args, "--no-cache"], ["ask", "--kv", kv, *args],
                 ["prefill", short_doc, "-o", str(tmp_path / "x.kv"), *args[1:3], *TINY]):
        assert run(capsys, *argv)[0] == 0


def test_eviction_that_cannot_remove_a_file_costs_the_answer_nothing(capsys, monkeypatch, tmp_path, tiny_dir):
    """The trim after a new KV file skips a file it cannot remove and says so in a status line: no traceback."""
    import errno

    docs = []
    for name in ("a.txt", "b.txt"):
        docs.append(tmp_path / name)
        docs[-1].write_text(f"Document {name}. " + (DOCS / "notes.txt").read_text()[:600])
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    first = Path(ask_json(capsys, str(docs[0]), *args)["kv_path"])
    monkeypatch.setenv("TMIX_CACHE_MAX", str(int(first.stat().st_size * 1.5)))
    real = Path.unlink

    def unlink(self, missing_ok=False):
        if self == first:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real(self, missing_ok)
    monkeypatch.setattr(Path, "unlink", unlink)
    code, out, err = run(capsys, "ask", str(docs[1]), *args)
    assert code == 0 and out.strip() and "error" not in err and first.exists(), err
    assert f"tmix: cannot remove {first}: Read-only file system; the cache stays over TMIX_CACHE_MAX" in err


def test_disk_full_hint_for_prefill_output(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """prefill -o on a full disk suggests `tmix cache clear` only when the KV cache holds files on that disk."""
    import errno

    from tmixcli import kvwrite

    real = kvwrite._pwrite

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    args = (short_doc, "-o", str(tmp_path / "x.kv"), "--model", tiny_dir, *TINY)
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    code, out, err = run(capsys, "prefill", *args)
    assert code == 2 and out == "" and err.count("tmix: error:") == 1, err  # after the tokens line said before
    assert err.strip().splitlines()[-1].startswith("tmix: error: disk full while writing KV file "), err
    assert f"disk full while writing KV file {tmp_path / 'x.kv'}; free space in {tmp_path}, or write" in err
    assert "cache clear" not in err
    monkeypatch.setattr(kvwrite, "_pwrite", real)
    assert run(capsys, "prefill", *args[:1], *args[3:])[0] == 0  # a KV file in the cache, on the same disk
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    code, _, err = run(capsys, "prefill", *args)
    assert code == 2 and "or run `tmix cache clear` (the KV cache is on the same disk)" in err, err


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


def one_error(capsys, *argv: str) -> str:
    """Run `tmix argv`, expecting exit code 2 and one error line; returns that line."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.startswith("tmix: error: ") and len(err.strip().splitlines()) == 1, err
    return err.strip()


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


def test_question_taken_for_a_file_only_when_it_is_one(tmp_path):
    from tmixcli.cli_ask import _names_a_file

    (tmp_path / "notes.txt").write_text("x")
    assert _names_a_file(str(tmp_path / "notes.txt")) and not _names_a_file(str(tmp_path / "other.txt"))
    long = "Summarise the notes. " + "Then list every risk " * 20 + "in notes.txt?"  # > 255 bytes: ENAMETOOLONG
    assert not _names_a_file(long) and not _names_a_file("a\x00b.txt") and not _names_a_file("Who is it?")


def test_missing_document_name_is_not_a_question(tmp_path):
    from tmixcli.cli_ask import _missing_document

    (tmp_path / "notes.txt").write_text("x")
    assert _missing_document(str(tmp_path / "other.PDF")) and _missing_document("minutes.md")
    assert not _missing_document(str(tmp_path / "notes.txt"))  # exists: the other check names it
    assert not _missing_document("What is in notes.txt") and not _missing_document("v2.0?")
    assert not _missing_document("Who signed it?") and not _missing_document("report.pdf?")


def test_fair_share():
    from tmixcli.fit import fair_share

    assert fair_share([10, 500, 300], 400) == [10, 195, 195]
    assert fair_share([10, 20], 100) == [10, 20]
    assert fair_share([7, 7, 7], 10) == [3, 3, 4] and sum(fair_share([50, 60, 70], 101)) == 101


BAD = [
    (["ask", "missing.pdf", "q?"], "no such file"),
    (["ask", "sample_docs/notes.txt", "sample_docs"], "is a folder; put the question last"),
    (["ask", "sample_docs/notes.txt", "   "], "question is empty"),
    (["ask", "sample_docs/notes.txt"], "usage"),
    (["ask", "sample_docs/notes.txt", "q?", "--attention", "sparse"], "trimix or dense"),
    (["ask", "sample_docs/notes.txt", "q?", "--n-local", "0"], "--n-local must be at least 1"),
    (["ask", "sample_docs/notes.txt", "q?", "--n-init", "-1"], "--n-init must be at least 0"),
    (["ask", "sample_docs/notes.txt", "q?", "--start-layer", "-1"], "--start-layer"),
    (["ask", "sample_docs/notes.txt", "q?", "--threads", "0"], "--threads"),
    (["ask", "sample_docs/notes.txt", "q?", "--threads", "100000"], "--threads"),
    (["ask", "sample_docs/notes.txt", "q?", "--device", "tpu"], "unknown device"),
    (["ask", "sample_docs/notes.txt", "q?", "--dtype", "int8"], "unknown dtype"),
    (["prefill", "sample_docs/notes.txt", "-o", "x.kv", "--device-map", "balanced"], "--device-map"),
    (["ask", "--kv", "nowhere.safetensors", "q?"], "--kv nowhere.safetensors: no such file"),
    (["ask", "--kv", "sample_docs", "q?"], "--kv sample_docs: a folder, not a file"),
    (["ask", "--kv", "/dev/null", "q?"], "--kv /dev/null: a device, not a regular file"),
    (["cache", "prune", "--max-size", ""], "--max-size is empty"),
    (["ask", "sample_docs/notes.txt", "q?", "--model", "/nonexistent/model/dir"], "not found"),
    (["prefill", "sample_docs/report.md", "-o", "sample_docs"], "directory"),
    (["prefill", "sample_docs/notes.txt", "-o", "no/such/folder/kv.safetensors"], "does not exist"),
    (["cache", "rm", "ffffffffffff"], "no"),
    (["ask", "sample_docs/notes.txt", "q?", "--compile", "maybe"], "auto, on or off"),
    (["bench", "--arch", "smollm2-135m", "--lengths", "1k", "--compile", "maybe"], "auto, on or off"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "-1"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--top-p", "0"], "--top-p"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "nan"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "inf"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--top-p", "nan"], "--top-p"),
    (["prefill", "sample_docs/notes.txt", "-o", "sample_docs/notes.txt"], "not a tmix kv file"),
    (["bench", "--lengths", "1k", "--plot", "no/such/folder/ttft.png"], "does not exist"),
    (["calibrate", "--plot", "sample_docs"], "directory"),
    (["ask"], "missing argument"),  # usage errors from typer's (vendored) click, not only our own checks
    (["ask", "sample_docs/notes.txt", "q?", "--max-new-tokens", "many"], "--max-new-tokens"),
    (["ask", "sample_docs/notes.txt", "q?", "--bogus"], "no such option"),
    (["nosuch"], "no such command"),
    (["cache", "rm"], "missing argument"),
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md"], "is a file name; put the question last"),
    (["ask", "sample_docs/notes.txt", "minutes.docx"], "no such document: minutes.docx"),
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md", "q?", "--pages", "1"], "--pages applies"),
    (["ask", "sample_docs/notes.txt", "q?", "--password", "x"], "--password only applies to pdf files, and"),
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md", "q?", "--password", "x"], "none of the documents is a"),
    (["prefill", "sample_docs/notes.txt", "sample_docs/notes.txt"], "given twice"),
    (["chat", "-"], "cannot come from stdin"),
    (["eval", "--facts", "nowhere.json"], "no such file"),
    (["ask", "https://example.com/report.pdf", "q?"], "not urls; download it first"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_one_line_exit_2(capsys, argv, needle, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmix: error:") and needle in lines[0].lower(), err


def test_damaged_gguf_model_one_line(capsys, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    code, out, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", str(bad), "--quiet")
    assert code == 2 and "cannot read model.gguf as a GGUF model" in err and err.strip().splitlines() == [err.strip()]
    from tmixcli.models import models_dir

    assert not list(models_dir().glob("gguf-model-*"))  # no half-made conversion


@pytest.mark.parametrize("offline", ["endpoint down", "HF_HUB_OFFLINE"])
def test_uncached_hub_model_offline_fails_at_once(capsys, monkeypatch, tmp_path, offline):
    """A hub id missing from the local HF cache with no way to fetch it: one line at once, not a minute of retries."""
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", "someorg/some-model", "--quiet")
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert "'someorg/some-model' is not in the local Hugging Face cache" in err
    assert ("HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "127.0.0.1 cannot be reached") in err
    assert time.perf_counter() - start < 30


def test_broken_local_model_folder_one_line(capsys, tmp_path):
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    code, _, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", str(folder), "--quiet")
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert f"{folder} is not a usable model folder: cannot read its config.json (Expecting" in err, err


@pytest.mark.parametrize("argv", [["serve"], ["cache", "ls"]])
def test_unusable_cache_folder_one_line(capsys, monkeypatch, tmp_path, argv):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TMIX_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    monkeypatch.chdir(ROOT)
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "cannot use the cache folder" in err, err


def _unusable_cache(monkeypatch, tmp_path, how: str) -> tuple[Path, str]:
    """A cache folder that cannot be made (under a file), or an empty one on a read-only file system (nothing in it
    can be made: chmod does not stop root); returns it and the reason the error names."""
    import errno

    if how == "under a file":
        (tmp_path / "file").write_text("")
        root = tmp_path / "file" / "cache"
        monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
        return root, "a part of its path is a file, not a folder"
    root = tmp_path / "ro-cache"
    root.mkdir()
    monkeypatch.setenv("TMIX_CACHE_DIR", str(root))
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if root in self.absolute().parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    return root, "Read-only file system"


@pytest.mark.parametrize("how", ["under a file", "read-only"])
def test_unusable_cache_folder_costs_an_answer_nothing(capsys, monkeypatch, tiny_dir, short_doc, tmp_path, how):
    """--no-cache and -o never touch the cache folder, nor does stdin need it; a plain ask answers with one status
    line saying why no KV file was saved; only prefill without -o, whose product is that file, fails."""
    import io

    root, why = _unusable_cache(monkeypatch, tmp_path, how)
    args = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, out, err = run(capsys, "ask", short_doc, *args, "--no-cache")
    assert code == 0 and out.strip() and "cache folder" not in err and "(cache off)" in err, err
    code, out, err = run(capsys, "prefill", short_doc, "-o", str(tmp_path / "x.kv"), "--model", tiny_dir, *TINY)
    assert code == 0 and out.strip() == str(tmp_path / "x.kv") and "cache folder" not in err, err
    for docs in ([short_doc], ["-"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(short_doc).read_bytes())))
        code, out, err = run(capsys, "ask", *docs, *args)
        said = [line for line in err.splitlines() if "cache folder" in line]
        assert code == 0 and out.strip() and "error" not in err, err
        assert len(said) == 2 and said[0].startswith("tmix: KV file not saved: cannot use the cache folder")
        assert why in said[0] and said[1].endswith("(cache folder unusable)"), err
    res = ask_json(capsys, short_doc, *args)
    assert res["kv_path"] is None and res["answer"] and res["notes"] == [] and not res["kv_saved"]
    assert any("KV file not saved" in n for n in res["kv_notes"])
    code, out, err = run(capsys, "prefill", short_doc, "--model", tiny_dir, *TINY)
    assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()], err
    assert "cannot use the cache folder" in err and why in err and "elsewhere with -o" in err
    assert not root.exists() or not list(root.iterdir())


def test_bad_kv_file_no_traceback(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(4096))
    res = tmix_subprocess("ask", "--kv", str(bad), "What?")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this runs the benchmark (tests/test_gpu.py)")
def test_bench_kernels_without_a_gpu_is_one_line(capsys):
    code, out, err = run(capsys, "bench", "--kernels", "--lengths", "1k")
    assert code == 2 and err.strip() == "tmix: error: tmix bench --kernels times CUDA kernels and needs a GPU"


def test_version(capsys):
    from tmixcli import __version__

    code, out, err = run(capsys, "--version")
    assert code == 0 and out.strip() == f"tmix {__version__}" and not err


@pytest.mark.parametrize("argv", [[], ["cache"]])
def test_bare_command_prints_help(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and "Usage: tmix" in out + err and "Traceback" not in err


def test_concurrent_prefill_leaves_one_valid_file(tmp_path, tiny_dir, short_doc):
    argv = [sys.executable, "-m", "tmixcli", "prefill", short_doc, "--quiet", "--model", tiny_dir, *TINY]
    procs = [subprocess.Popen(argv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    kv_dir = Path(paths.pop()).parent
    assert [p.name for p in kv_dir.iterdir()] == [Path(outs[0][0].strip()).name]
    res = tmix_subprocess("cache", "info", outs[0][0].strip(), "--json")
    assert res.returncode == 0, res.stderr


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


def _count_calls(monkeypatch, module, name: str) -> list:
    """Record each call of module.name (still made) in the list returned."""
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)
    monkeypatch.setattr(module, name, counted)
    return calls


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


def test_too_little_disk_space_is_told_before_the_prefill(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """Free space short of the KV file's size (planned exactly): `prefill` fails at once naming both sizes, before
    any prefill and leaving no file; `ask`, whose product is the answer, answers without saving, with one note."""
    import re
    import shutil

    from tmixcli import generate, kvfolder, kvwrite

    prefills = _count_calls(monkeypatch, generate, "prefill")
    real_usage = shutil.disk_usage
    free = [0]
    monkeypatch.setattr(kvwrite.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=free[0]))
    args = ("--model", tiny_dir, *TINY)
    free[0] = 1 << 40
    made = tmp_path / "made.kv"
    assert run(capsys, "prefill", short_doc, "-o", str(made), *args)[0] == 0
    size = made.stat().st_size
    free[0] = size - 1
    target = tmp_path / "out" / "x.kv"
    target.parent.mkdir()
    err = one_error(capsys, "prefill", short_doc, "-o", str(target), *args)
    want = (rf"tmix: error: not enough disk space for KV file {re.escape(str(target))} \(\d+\.\d KiB needed, "
            rf"\d+\.\d KiB free in {re.escape(str(target.parent))}\); free 1 B more in ")
    assert re.match(want, err), err
    assert len(prefills) == 1 and list(target.parent.iterdir()) == []
    err = one_error(capsys, "prefill", short_doc, *args)  # into the cache, which holds nothing to clear
    assert "not enough disk space for KV file " in err and "cache clear" not in err, err
    other = kvfolder.kv_path_for("other")
    other.write_bytes(b"0" * 100)
    err = one_error(capsys, "prefill", short_doc, *args)  # one that holds something
    assert "not enough disk space for KV file " in err and "or run `tmix cache clear`" in err, err
    other.unlink()
    assert len(prefills) == 1
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", "--max-new-tokens", "8", *args)
    assert code == 0 and out.strip() and "error" not in err, err
    assert err.count("tmix: KV file not saved: not enough disk space (") == 1 and "(not enough disk space)" in err
    assert len(prefills) == 2 and not list((tmp_path / "tmix-cache").glob("kv/*"))
    free[0] = size
    assert run(capsys, "prefill", short_doc, "-o", str(target), *args)[0] == 0
    assert target.stat().st_size == size


def test_calibrate_on_a_profiles_folder_that_cannot_be_written(capsys, monkeypatch, tiny_dir, tmp_path):
    """A profiles folder that refuses writes: `tmix calibrate` says so in one line before loading the model, and
    save_profile fails in one line leaving no temp file and the old profile whole; a save refused after calibrating
    still prints the report (root ignores permissions, so the refusals are simulated)."""
    import errno
    import tempfile

    from tmixcli import calib_profile, calibrate, models
    from tmixcli.errors import TmixError

    def refused(*args, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    places = [(tempfile, "mkstemp"), (calib_profile.os, "fsync"), (calib_profile.os, "replace")]
    reals = [getattr(module, name) for module, name in places]
    loads = _count_calls(monkeypatch, models, "load_model")
    folder = tmp_path / "tmix-cache" / "profiles"
    old = calib_profile.save_profile({"fingerprint": "ab" * 32, "start_layer": 3})
    assert old.parent == folder
    if os.geteuid() == 0:
        monkeypatch.setattr(tempfile, "mkstemp", refused)
    else:
        folder.chmod(0o500)
    err = one_error(capsys, "calibrate", "--model", tiny_dir)
    folder.chmod(0o700)
    assert err == f"tmix: error: cannot save the calibration profile in {folder}: Permission denied" and loads == []
    for place in places:  # refused at the temp file, at its fsync, at the rename
        for (module, name), real in zip(places, reals):
            monkeypatch.setattr(module, name, refused if (module, name) == place else real)
        with pytest.raises(TmixError) as said:
            calib_profile.save_profile({"fingerprint": "ab" * 32, "start_layer": 12})
        assert str(said.value) == f"cannot save the calibration profile in {folder}: Permission denied"
        assert [p.name for p in folder.iterdir()] == [old.name], place
        assert json.loads(old.read_text())["start_layer"] == 3
    for (module, name), real in zip(places, reals):
        monkeypatch.setattr(module, name, real)

    def calibrated(*args, **kw):  # what a calibration found, then a save the folder refuses
        profile = {"fingerprint": "ab" * 32, "start_layer": 2, "verified": True, "importance": [0.5, 0.1, 0.0],
                   "candidates": [2], "settings": {"tolerance": 0.05}, "eval": {}}
        monkeypatch.setattr(calib_profile.os, "replace", refused)
        calib_profile.keep_profile(profile)
        monkeypatch.setattr(calib_profile.os, "replace", reals[2])
        return profile
    monkeypatch.setattr(models, "load_model", lambda *args, **kw: None)
    monkeypatch.setattr(calibrate, "run_calibrate", calibrated)
    code, out, err = run(capsys, "calibrate")
    assert code == 2 and "recommended start layer: 2" in out and "profile not saved (use --start-layer 2" in out
    assert err.strip() == f"tmix: error: cannot save the calibration profile in {folder}: Permission denied"
    assert [p.name for p in folder.iterdir()] == [old.name]


def test_a_kv_file_that_cannot_be_written_does_not_fail_the_answer(capsys, monkeypatch, tiny_dir, short_doc,
                                                                    tmp_path):
    """A full disk under the cache: the answer stands (exit 0, JSON printed), a status line says the KV file was not
    saved, no temp file stays, and chat goes on to the next question."""
    import errno
    import io

    from tmixcli import kvwrite

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(kvwrite, "_pwrite", full)
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", *args)
    assert code == 0, err
    assert out.endswith("\n") and "KV file not saved: disk full" in err and "tmix: error" not in err
    res = ask_json(capsys, short_doc, "Who is the project manager?", *args)
    assert res["kv_path"] is None and res["kv_notes"][0].startswith("KV file not saved: disk full")
    assert "".join(res["answer"].split()) in "".join(out.split())
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the project manager?\nWhat is the budget?\n"))
    code, out, err = run(capsys, "chat", short_doc, *args)
    assert code == 0 and err.count("TTFT") == 2 and err.count("KV file not saved") == 1, err
    assert not [p for p in (tmp_path / "tmix-cache").rglob("*") if p.is_file() and "kv" in p.parts]


def test_prefill_whose_file_another_process_removes_at_once(capsys, monkeypatch, tiny_dir, short_doc):
    from tmixcli import kvwrite

    real = kvwrite.KVWriter.wait

    def wait_then_removed(self):
        size = real(self)
        self.path.unlink()  # as `tmix cache clear` in another shell would
        return size
    monkeypatch.setattr(kvwrite.KVWriter, "wait", wait_then_removed)
    code, out, err = run(capsys, "prefill", short_doc, "--model", tiny_dir, *TINY)
    assert code == 2 and out == "" and err.count("tmix: error:") == 1, err  # after the tokens line, said before
    assert err.strip().splitlines()[-1].startswith("tmix: error: the KV file was removed"), err


def test_prefill_output_never_clobbers_what_is_not_a_kv_file(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """-o naming the input document or a device is refused before any work; a KV file is replaced; ~ expands."""
    text = Path(short_doc).read_text()
    args = ("--model", tiny_dir, *TINY)
    for target, says in ((short_doc, "is not a tmix KV file"), ("/dev/null", "not a regular file")):
        code, out, err = run(capsys, "prefill", short_doc, "-o", target, *args)
        assert code == 2 and out == "" and says in err and err.strip().splitlines() == [err.strip()], err
    assert Path(short_doc).read_text() == text
    monkeypatch.setenv("HOME", str(tmp_path))
    for _ in range(2):  # the second run replaces the first run's KV file
        code, out, err = run(capsys, "prefill", short_doc, "-o", "~/doc.kv", *args)
        assert code == 0 and out.strip() == str(tmp_path / "doc.kv"), err
    assert not Path("~").exists()


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


def test_ask_interrupted_still_saves_the_prefill(capsys, monkeypatch, tiny_dir, tmp_path):
    """Ctrl-C while `ask` streams the answer to a fresh prefill: exit 130, and the KV file is written anyway."""
    from tmixcli import generate

    short_doc = tmp_path / "interrupted.txt"  # a text no other test has prefilled
    short_doc.write_text("Interrupted answers keep their prefill (test 2). " + (DOCS / "notes.txt").read_text()[:900])
    short_doc = str(short_doc)

    def interrupted(tokenizer, ids):
        yield "The"
        raise KeyboardInterrupt

    real = generate.stream_text
    monkeypatch.setattr(generate, "stream_text", interrupted)
    args = ("--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    code, out, err = run(capsys, "ask", short_doc, "Who is the project manager?", *args)
    assert code == 130 and out.startswith("The") and "saving the KV file" in err
    assert err.rstrip().endswith("tmix: interrupted")
    monkeypatch.setattr(generate, "stream_text", real)  # (undo() would also drop conftest's TMIX_CACHE_DIR)
    assert ask_json(capsys, short_doc, "What is the budget?", *args)["cache_hit"]


def test_ask_about_a_folder(capsys, tiny_dir, tmp_path):
    folder = tmp_path / "minutes"
    folder.mkdir()
    (folder / "b.txt").write_text("The architect is Maren Lie.\n")
    (folder / "a.txt").write_text("The project manager is Tomas Brekke.\n")
    (folder / "scan.png").write_bytes(bytes.fromhex("89504e470d0a1a0a") + bytes(32))
    args = ("--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, _, err = run(capsys, "ask", str(folder), "Who is the architect?", *args)
    assert code == 0, err
    assert "a.txt + b.txt" in err and "skipped scan.png" in err
    code, _, err = run(capsys, "ask", str(tmp_path / "minutes" / "a.txt"), str(folder), *args)
    assert code == 2 and "is a folder; put the question last" in err


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


def test_help_cache_and_bad_input_do_not_import_torch(tmp_path):
    """--help, `cache ls` and input errors answer at once: torch/transformers load only once a model is needed."""
    code = ("import sys\nfrom tmixcli.cli import main\n"
            "for argv in (['--help'], ['cache', 'ls'], ['ask', sys.argv[1], 'q'], ['prefill', sys.argv[1]],\n"
            "             ['ask', '--kv', sys.argv[2], 'q']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    env = {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache")}
    bad_kv = tmp_path / "notes.safetensors"
    bad_kv.write_text("not a KV file")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.pdf"), str(bad_kv)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("tmix: error:") == 3 and "Traceback" not in r.stderr


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


def test_cache_hit_under_another_name_says_so(capsys, tiny_dir, short_doc, tmp_path):
    """A copy of a prefilled document hits the cache: the status names the copy and whose prefill it reuses."""
    copy = tmp_path / "copy.txt"
    copy.write_text(Path(short_doc).read_text())
    argv = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", *TINY)
    assert run(capsys, "ask", short_doc, *argv)[0] == 0
    for _ in range(2):  # the second run finds the copy unchanged (not read again): the note still comes once
        code, _, err = run(capsys, "ask", str(copy), *argv)
        assert code == 0 and "cache hit" in err, err
        assert err.startswith("tmix: copy.txt:") and err.count("same text as short.txt, prefilled earlier") == 1, err


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


def test_kv_file_refuses_options_it_cannot_honour(capsys, monkeypatch, tiny_dir, short_doc, tmp_path):
    """--kv takes the system prompt and attention settings from the file; options that cannot apply to it are
    refused in one line before the model loads, naming what the file was made with."""
    kv = tmp_path / "terse.safetensors"
    code, _, err = run(capsys, "prefill", short_doc, "-o", str(kv), "--system", "You are terse.", "--quiet",
                       "--model", tiny_dir, *TINY)
    assert code == 0, err
    q = ("Who is the project manager?", "--model", tiny_dir, "--max-new-tokens", "8")
    from_file = ask_json(capsys, "--kv", str(kv), *q)
    from_doc = ask_json(capsys, short_doc, *q, *TINY, "--system", "You are terse.")
    assert from_file["answer"] == from_doc["answer"] and from_file["attention"] == from_doc["attention"]
    from tmixcli import cli_open

    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    refused = [(["--pages", "3-5"], "--pages cannot apply to --kv: a KV file holds exactly the text it was made from"),
               (["--password", "x"], "--password cannot apply to --kv"), (["--truncate"], "--truncate cannot apply"),
               (["--no-cache"], "--no-cache cannot apply to --kv"),
               (["--n-local", "32"], "--n-local 32 cannot apply to this KV file: it was made with --n-local 16"),
               (["--system", "Be verbose."], "made with the system prompt 'You are terse.', which is part of its "
                                             "cached prefix, so --system 'Be verbose.' cannot apply")]
    for extra, says in refused:
        for command in (["ask", "--kv", str(kv), *q], ["chat", "--kv", str(kv), "--model", tiny_dir]):
            code, out, err = run(capsys, *command, *extra)
            assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()], err
            assert err.startswith("tmix: error: ") and says in err, err


def test_same_text_in_different_bytes_shares_one_kv_file(capsys, tiny_dir, short_doc, tmp_path):
    """Files that differ only in bytes the text drops (trailing blank lines; a re-saved PDF) hit one KV file in turn."""
    text = Path(short_doc).read_text()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(text)
    b.write_text(text + "\n\n\n")
    hits = []
    for doc in (a, b, a, b):
        code, out, err = run(capsys, "ask", str(doc), "q?", "--model", tiny_dir, "--max-new-tokens", "2", "--json",
                             *TINY)
        assert code == 0 and "not used" not in err, err
        hits.append(json.loads(out)["cache_hit"])
    assert hits == [False, True, True, True]
    assert len(list((Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors"))) == 1


def _poison(path: Path) -> None:
    """Overwrite a stretch in the middle of a KV file's tensor data with 0xff bytes (NaN in fp32)."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * 4096)


def test_damaged_kv_data_is_an_error_not_an_empty_answer(capsys, tiny_dir, short_doc, tmp_path):
    """NaN in a KV file's tensors: one line and exit 2; a damaged cache file is removed so the next run prefills."""
    argv = ("q?", "--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    kv = tmp_path / "short.kv"
    assert run(capsys, "prefill", short_doc, "-o", str(kv), "-q", "--model", tiny_dir, *TINY)[0] == 0
    _poison(kv)
    code, out, err = run(capsys, "ask", "--kv", str(kv), *argv)
    assert code == 2 and out == "" and err.strip().splitlines()[-1] == (
        f"tmix: error: the model's output is not a number (NaN or inf): the KV file {kv} is damaged; make it again "
        "with tmix prefill"), err
    assert kv.exists()

    assert run(capsys, "ask", short_doc, *argv)[0] == 0
    (cached,) = (Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors")
    _poison(cached)
    code, _, err = run(capsys, "ask", short_doc, *argv)
    assert code == 2 and f"the cached KV file {cached.name} is damaged; removed it" in err, err
    assert not cached.exists()
    code, _, err = run(capsys, "ask", short_doc, *argv)
    assert code == 0 and "cache miss" in err, err


def test_dense_runs_share_one_kv_file_whatever_the_triangle_flags(capsys, tiny_dir, short_doc):
    """--n-local, --n-init, --last-n and --start-layer shape only the triangle: with --attention dense they change
    neither the KV file nor its key."""
    base = ("q?", "--model", tiny_dir, "--max-new-tokens", "2", "--attention", "dense")
    hits = [ask_json(capsys, short_doc, *base, *extra)["cache_hit"]
            for extra in ((), ("--n-local", "64"), ("--n-init", "0", "--last-n", "4", "--start-layer", "2"))]
    assert hits == [False, True, True]
    (kv,) = (Path(os.environ["TMIX_CACHE_DIR"]) / "kv").glob("*.safetensors")
    res = ask_json(capsys, "--kv", str(kv), "q?", "--model", tiny_dir, "--max-new-tokens", "2", "--n-local", "64",
                   "--attention", "dense")
    assert res["cache_hit"] and res["attention"]["method"] == "dense"
