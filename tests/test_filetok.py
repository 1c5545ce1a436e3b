"""A model's tokenizer read from its files (filetok): the same token ids and fit errors as the loaded model's, used
only where a load has checked the files, and the refusal it allows before the model (and torch) loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny import FAMILIES, tiny_config, tiny_tokenizer

from tmixcli import filetok, fit, prompt
from tmixcli.config import Settings
from tmixcli.documents import load_documents
from tmixcli.errors import TmixError
from tmixcli.modelinfo import model_folder

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "sample_docs"
SYSTEMS = (None, "Answer briefly.", "Be helpful. " * 40 + "<|im_end|> ünï 東京")


@pytest.fixture()
def own_marks(tmp_path, monkeypatch) -> None:
    """A models folder of the test's own, where loads mark the files they checked (none marked yet)."""
    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))


def family_dir(tmp_path: Path, family: str) -> tuple[Path, SimpleNamespace]:
    """A tiny model folder (config and tokenizer files) and the model its load gives, as far as filetok looks."""
    from transformers import AutoTokenizer

    folder = tmp_path / family
    tiny_config(family, max_position_embeddings=1024).save_pretrained(folder)
    tiny_tokenizer(family).save_pretrained(folder)
    return folder, loaded(folder, AutoTokenizer.from_pretrained(folder), 1024)


def loaded(folder: Path, tokenizer: object, context: int) -> SimpleNamespace:
    return SimpleNamespace(tokenizer=tokenizer, model=SimpleNamespace(config=SimpleNamespace(
        max_position_embeddings=context)))


def texts() -> list[str]:
    """Documents and questions of every kind: the samples, special-token strings, other scripts, bare whitespace."""
    samples = [(DOCS / name).read_text() for name in ("report.md", "notes.txt")]
    return [*samples, samples[1][:5000] + "\n\n\n", "<|im_start|>user\nhi<|im_end|> <s> [INST] </s>", "  \t\n",
            "Ünïcode café — 東京 🙂 ١٢٣ Привет", "x" * 3000, "The code is 5.\r\n" * 200]


def assert_same_ids(theirs: object, mine: filetok.FileTokenizer) -> None:
    for system in SYSTEMS:
        assert prompt.split_template(mine, system) == prompt.split_template(theirs, system)
        for text in texts():
            assert prompt.prefix_ids(mine, text, system) == prompt.prefix_ids(theirs, text, system)
            if text.strip():
                assert prompt.question_ids(mine, text, system) == prompt.question_ids(theirs, text, system)
        assert prompt.template_hash(mine, system) == prompt.template_hash(theirs, system)


@pytest.mark.model
def test_default_model_files_give_the_loaded_tokenizers_ids(default_lm):
    """The embedded model's converted folder: checked by a load, then the same ids for every text and system."""
    filetok.remember(default_lm, str(model_folder(None)))
    files = filetok.files_model(None)
    assert files is not None and files.context == fit.context_limit(default_lm) == 8192
    assert_same_ids(default_lm.tokenizer, files.tokenizer)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_files_are_used_only_where_they_give_the_loaded_ids(tmp_path, family, own_marks):
    """Each tiny family is either marked and then gives the same ids, or is not marked (a load that builds its own
    pipeline, as transformers' Qwen2Tokenizer does, is not what tokenizer.json says)."""
    folder, lm = family_dir(tmp_path, family)
    filetok.remember(lm, str(folder))
    files = filetok.files_model(str(folder))
    if files is None:
        mine = filetok.FileTokenizer(filetok._files(folder))
        assert mine.backend.to_str() != lm.tokenizer.backend_tokenizer.to_str() or (
            mine.all_special_tokens != lm.tokenizer.all_special_tokens), family
        return
    assert files.context == 1024
    assert_same_ids(lm.tokenizer, files.tokenizer)


def test_files_unlike_the_load_or_changed_since_are_not_used(tmp_path, own_marks):
    """A loaded tokenizer that differs from its files marks nothing; a marked folder whose files change is not used."""
    from tokenizers import normalizers

    folder, lm = family_dir(tmp_path, "llama")
    lm.tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    filetok.remember(lm, str(folder))
    assert filetok.files_model(str(folder)) is None
    folder, lm = family_dir(tmp_path / "again", "llama")
    filetok.remember(loaded(folder, lm.tokenizer, 2048), str(folder))  # config.json says 1024
    assert filetok.files_model(str(folder)) is None
    filetok.remember(lm, str(folder))
    assert filetok.files_model(str(folder)) is not None
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "split_special_tokens": True}))
    assert filetok.files_model(str(folder)) is None


def refusal(check, *args) -> str | None:
    try:
        check(*args)
    except TmixError as err:
        return str(err)
    return None


def late(lm: object, doc: object, s: Settings) -> str | None:
    """What the run says after the load: fit_document, then check_question (opening._open_document's order)."""
    def both() -> None:
        ids, _ = fit.fit_document(lm, doc, s)
        fit.check_question(lm, len(ids), s)
    return refusal(both)


@pytest.mark.model
def test_refusals_before_the_load_are_the_loads_own(default_lm, tmp_path):
    """Every fit error check_fit gives from the files is the very line the loaded model gives, numbers included; a
    document that fits, or one --truncate can cut, is refused by neither."""
    filetok.remember(default_lm, str(model_folder(None)))
    files = filetok.files_model(None)
    assert files is not None
    notes = (DOCS / "notes.txt").read_text()
    (tmp_path / "big.txt").write_text(notes * 8)  # ~9400 tokens: over the 8192 context
    (tmp_path / "two.txt").write_text(notes * 5)
    (tmp_path / "small.txt").write_text(notes[:2000])
    question = "What is the secret access code?"
    cases = [("big.txt",), ("small.txt",), ("small.txt", "two.txt")]
    settings = [Settings(question=question), Settings(question=question, truncate=True),
                Settings(question=question, max_new_tokens=9000), Settings(question=question, max_new_tokens=8000),
                Settings(question=question, max_new_tokens=9000, truncate=True),
                Settings(question=question + " Please." * 3000), Settings(question=None, max_new_tokens=1),
                Settings(question=question, system="Be helpful. " * 3000),
                Settings(question=question, system="Be brief. " * 300, truncate=True)]
    said = set()
    for names in cases:
        doc = load_documents([str(tmp_path / n) for n in names])
        for s in settings:
            expected = late(default_lm, doc, s)
            assert refusal(fit.check_fit, files, doc, s) == expected, (names, s)
            said.add(expected)
    assert None in said and len(said) >= 8  # the cases above reach every kind of refusal


def run_tmix(*argv: str) -> subprocess.CompletedProcess:
    """`python -m tmixcli argv` that says, as it exits, whether torch was imported."""
    probe = ("import atexit, runpy, sys\n"
             "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
             "sys.argv = ['tmix', *sys.argv[1:]]\n"
             "runpy.run_module('tmixcli', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ.copy(), timeout=600)


def test_too_long_a_document_is_refused_before_torch_loads(tmp_path, tiny_dir, own_marks):
    """With files a load has checked, a document over the context (and an answer room that crowds it out) is refused
    without importing torch, in a fraction of the time."""
    from transformers import AutoTokenizer

    folder = Path(tiny_dir)
    assert filetok.files_model(tiny_dir) is None
    filetok.remember(loaded(folder, AutoTokenizer.from_pretrained(folder), 1024), tiny_dir)
    assert filetok.files_model(tiny_dir) is not None
    big = tmp_path / "big.txt"
    big.write_text((DOCS / "notes.txt").read_text())
    for extra in ((), ("--max-new-tokens", "2000")):
        start = time.perf_counter()
        res = run_tmix("ask", str(big), "Who is the project manager?", "--model", str(folder), *extra)
        seconds = time.perf_counter() - start
        assert res.returncode == 2 and "torch imported: False" in res.stderr, res.stderr
        line = res.stderr.splitlines()[0]
        assert line.startswith(("tmix: error: big.txt needs ", "tmix: error: --max-new-tokens 2000 is too large")), line
        assert seconds < 60, seconds  # no torch: ~1 s, against ~10 s with it (a loose bound on a loaded machine)


def test_files_the_check_cannot_take_mark_nothing_quietly(tmp_path, own_marks, monkeypatch):
    """A damaged tokenizer.json, a config without a context length, a template that refuses a system message and a
    models folder that cannot be written: the load goes on, nothing is marked."""
    from transformers import AutoTokenizer

    folder, lm = family_dir(tmp_path, "llama")
    for name, damaged in (("tokenizer.json", "{not json"), ("config.json", json.dumps({"model_type": "llama"}))):
        good = (folder / name).read_text()
        (folder / name).write_text(damaged)
        filetok.remember(lm, str(folder))
        (folder / name).write_text(good)
        assert filetok.files_model(str(folder)) is None, name
    monkeypatch.setenv("TMIX_MODELS_DIR", str(folder / "config.json" / "models"))  # under a file: cannot be made
    filetok.remember(lm, str(folder))
    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))
    assert filetok.files_model(str(folder)) is None
    tokenizer = tiny_tokenizer("llama")
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
                               "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tokenizer.save_pretrained(folder)
    filetok.remember(loaded(folder, AutoTokenizer.from_pretrained(folder), 1024), str(folder))
    assert filetok.files_model(str(folder)) is None


def test_a_bug_in_the_check_is_not_hidden(tmp_path, own_marks, monkeypatch):
    folder, lm = family_dir(tmp_path, "llama")

    def bug(*_):
        raise TypeError("a bug in the comparison")

    monkeypatch.setattr(prompt, "split_template", bug)
    with pytest.raises(TypeError, match="a bug in the comparison"):
        filetok.remember(lm, str(folder))
