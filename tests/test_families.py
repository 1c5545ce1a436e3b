"""The model families tmix runs are one list (modelcheck.FAMILIES): the errors, the docs, the tiny test models and
the fast paths that take only some families all follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tmixcli import cpu_decode, eval_prefill, modelcheck

ROOT = Path(__file__).resolve().parents[1]


def _names(text: str) -> set[str]:
    """The lower-case names in an English list ("Llama, Qwen2 and Mistral", "`llama`, `qwen2` or `qwen3`")."""
    return {w.lower() for w in re.findall(r"[A-Za-z][\w-]*", text)} - {"and", "or"}


def _sentence(path: str, pattern: str) -> str:
    found = re.search(pattern, (ROOT / path).read_text(), re.S)
    assert found, f"{path} no longer has the sentence {pattern!r} that lists the model families"
    return found[1]


@pytest.mark.parametrize(("path", "pattern"), [
    ("README.md", r"Supported architectures: ([^.]*)\."),
    ("docs/usage.md", r"whose `model_type` is ([^;]*);"),
    ("docs/usage.md", r"It works for ([^.]*) architectures\."),
])
def test_the_docs_name_exactly_the_families_tmix_runs(path, pattern):
    named = _names(_sentence(path, pattern))
    assert named == set(modelcheck.FAMILIES), f"{path} names {sorted(named)}, not {modelcheck.FAMILIES}"


def test_the_error_text_lists_every_family():
    assert re.fullmatch(r"(\w+, )*\w+ and \w+ models", modelcheck.RUNS), modelcheck.RUNS
    assert _names(modelcheck.RUNS) - {"models"} == set(modelcheck.FAMILIES)


@pytest.mark.parametrize("family", modelcheck.FAMILIES)
def test_every_family_has_a_tiny_model_config(family):
    """The attention, prompt and tokenizer tests run tests/tiny.py's FAMILIES: a family tmix runs needs its config."""
    from tiny import FAMILIES, tiny_config

    assert FAMILIES == modelcheck.FAMILIES
    assert tiny_config(family).model_type == family


def test_the_fast_paths_take_only_families_tmix_runs():
    """cpu_decode's direct step and eval's layer reuse are checked family by family (a new one may scale its
    embeddings or residuals), so they are subsets of the families, never more."""
    assert set(cpu_decode.FAMILIES) <= set(modelcheck.FAMILIES), cpu_decode.FAMILIES
    assert set(eval_prefill.REUSE_TYPES) <= set(modelcheck.FAMILIES), eval_prefill.REUSE_TYPES
    assert _names(_sentence("docs/fidelity.md", r"Only for ([\w/]*) \(")) == set(eval_prefill.REUSE_TYPES)
