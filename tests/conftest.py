"""Shared fixtures: an isolated cache dir per test, one converted default model for the whole run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TMIX_MODELS_DIR", str(Path.home() / ".cache" / "tmix" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "tmix-cache"))


@pytest.fixture(scope="session")
def default_lm():
    """The real embedded default model (SmolLM2-135M-Instruct, fp32 on CPU), loaded once."""
    from tmixcli.models import load_model

    return load_model(None, "cpu", "fp32", progress=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A saved 4-layer random Llama with a real tiny tokenizer: fast `--model DIR` for mechanical CLI tests."""
    from tiny import tiny_model, tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", max_position_embeddings=1024).save_pretrained(out)
    tiny_tokenizer("llama").save_pretrained(out)
    return str(out)
