"""--truncate says where a document was cut (the pages kept of a PDF, else the share kept), and `tmix text --truncate`
prints the text that `prefill --truncate` keeps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from docfiles import make_pdf
from runcli import DOCS, TINY, run

from tmixcli import prompt
from tmixcli.config import Settings
from tmixcli.documents import load_documents
from tmixcli.fit import fitted_text
from tmixcli.pdfpages import cut_place

PAGE = "Page {n} of the annual review. " + "The warehouse in Gdansk shipped pallets on time again. " * 12


def test_cut_place_names_the_pages_kept():
    whole = "one\n\n--- page 2 ---\n\ntwo\n\n--- page 3 ---\n\nthree\n\n--- page 5 ---\n\nfive"
    assert cut_place(whole, "one\n\n--- page 2 ---\n\ntw", 5, False) == "pages 1-2 of 5, page 2 in part"
    assert cut_place(whole, "one\n\n--- page 2 ---\n\ntwo", 5, False) == "pages 1-2 of 5"
    assert cut_place(whole, "one\n\n--- page 2 ---\n\n", 5, False) == "page 1 of 5"  # a marker alone is no page kept
    assert cut_place(whole, "o", 5, False) == "page 1 of 5 in part"
    assert cut_place(whole, "one\n\n--- page 2 ---\n\ntw", 5, True) == \
        "pages 1-2 of the 5 pages read, page 2 in part"
    selected = "--- page 3 ---\n\nthree\n\n--- page 4 ---\n\nfour"  # --pages 3-4
    assert cut_place(selected, selected[:-2], 2, False) == "pages 3-4 of the 2 pages read, page 4 in part"
    assert cut_place("plain text", "plain", None, False) == ""


@pytest.fixture()
def long_pdf(tmp_path) -> str:
    path = tmp_path / "review.pdf"
    path.write_bytes(make_pdf([PAGE.format(n=n) for n in range(1, 13)]))
    return str(path)


def test_truncation_notes_say_where_the_document_was_cut(capsys, tmp_path, tiny_dir, long_pdf):
    """QA22 F18: the last page kept of a PDF, the share kept of another document."""
    code, out, err = run(capsys, "prefill", long_pdf, "--model", tiny_dir, *TINY, "--truncate", "--json")
    assert code == 0, err
    note, = json.loads(out)["notes"]
    assert note.startswith("truncated review.pdf: kept its first ") and " document tokens: pages 1-" in note
    assert note.endswith(" of 12, page " + note.split(" of 12, page ")[1]) and note.endswith(" in part")
    last = int(note.split("pages 1-")[1].split(" ")[0])
    assert 1 < last < 12
    text = tmp_path / "long.txt"
    text.write_text((DOCS / "notes.txt").read_text())
    code, out, err = run(capsys, "prefill", str(text), "--model", tiny_dir, *TINY, "--truncate", "--json")
    note, = json.loads(out)["notes"]
    kept, whole = (int(n) for n in note.split("kept its first ")[1].split(" document")[0].split(" of "))
    assert note.endswith(f" document tokens ({100 * kept // whole}%)") and 0 < kept < whole


def test_text_truncate_prints_what_prefill_keeps(capsys, tmp_path, monkeypatch, tiny_dir, long_pdf):
    """QA22 F18: `tmix text --truncate` shows the cut text, with prefill's notes; refused until a load has checked
    the model's tokenizer files."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))  # no tokenizer files checked yet
    short = tmp_path / "short.txt"
    short.write_text("The project manager is Tomas Brekke.")
    args = (str(short), long_pdf, "--model", tiny_dir, "--truncate")
    code, out, err = run(capsys, "text", *args)
    assert (code, out) == (2, "") and err.startswith("tmix: error: --truncate needs the model's tokenizer files")
    code, out, err = run(capsys, "prefill", *args, *TINY, "--json")  # the load checks and marks the files
    assert code == 0, err
    pre = json.loads(out)
    code, out, err = run(capsys, "text", *args)
    assert code == 0 and err == "".join(f"tmix: {n}\n" for n in pre["notes"]), err
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text, notes = fitted_text(SimpleNamespace(tokenizer=tok, context=1024), load_documents([str(short), long_pdf]),
                              Settings(truncate=True))
    assert out == (text if text.endswith("\n") else text + "\n") and notes == pre["notes"]
    assert len(prompt.prefix_ids(tok, text)) == pre["tokens"]
    assert out.startswith("Document 1: short.txt\n\nThe project manager is Tomas Brekke.\n\nDocument 2: ")
    assert "Page 1 of the annual review" in out and "Page 12 of" not in out
    code, whole, _ = run(capsys, "text", str(short), long_pdf)
    assert code == 0 and "Page 12 of" in whole  # without --truncate: all of it


def test_text_truncate_sizes_the_cut_as_ask_does(capsys, tmp_path, monkeypatch, tiny_dir, long_pdf):
    """`text --truncate` with ask's --question, --system and --max-new-tokens keeps what `ask --truncate` keeps (a long
    question, a system prompt and a long answer all leave the document less room); without --truncate they are
    refused in one line."""
    from transformers import AutoTokenizer

    question = "Which warehouse shipped pallets on time, and in which city of the annual review was it? " * 4
    sizing = ("--system", "Answer in one short sentence, citing the page.", "--max-new-tokens", "300")
    code, out, err = run(capsys, "ask", long_pdf, question, "--model", tiny_dir, *TINY, "--truncate", *sizing,
                         "--json", "--no-cache")
    assert code == 0, err
    asked = json.loads(out)
    code, plain, err = run(capsys, "text", long_pdf, "--model", tiny_dir, "--truncate")
    assert code == 0, err
    code, out, err = run(capsys, "text", long_pdf, "--model", tiny_dir, "--truncate", "--question", question, *sizing)
    assert code == 0 and err == "".join(f"tmix: {n}\n" for n in asked["notes"]), err
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    s = Settings(truncate=True, question=question, system=sizing[1], max_new_tokens=300)
    text, _ = fitted_text(SimpleNamespace(tokenizer=tok, context=1024), load_documents([long_pdf]), s)
    assert out == text + "\n" and len(prompt.prefix_ids(tok, text, s.system)) == asked["prompt_tokens"] - len(
        prompt.question_ids(tok, question, s.system))
    assert len(out) < len(plain)  # the long question, system prompt and answer room cut more
    for extra in (("--question", "Which city?"), ("--system", "Be brief."), ("--max-new-tokens", "300")):
        code, out, err = run(capsys, "text", long_pdf, *extra)
        assert (code, out) == (2, "") and err == (f"tmix: error: {extra[0]} only changes what --truncate keeps: give "
                                                  "it with --truncate\n")
