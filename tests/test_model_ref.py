"""What a --model value names is decided once (modelinfo.model_ref), and a model's context is read from its
config.json once (modelinfo.config_limits): the early checks, the load, the server key, the text cap and the
tokenizer read from files agree."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from runcli import run
from tiny import tiny_config, tiny_tokenizer

from tmixcli import filetok
from tmixcli.errors import TmixError
from tmixcli.modelinfo import model_limits, model_ref
from tmixcli.serverkey import server_key
from tmixcli.textcap import files_cap

NO_USER = "~no-such-user-tmix/m"  # ~ cannot be expanded: Path.expanduser raises RuntimeError


def test_what_a_model_value_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.gguf").mkdir()
    kinds = {None: "default", "": "default", "smollm2-135m-instruct": "default", "m.gguf": "gguf",
             "folder": "folder", "./folder": "folder", str(tmp_path / "folder"): "folder", "gone.gguf": "missing",
             "folder.gguf": "missing", "./nope": "missing", "a/b/c": "missing", NO_USER: "missing",
             "./" + "x" * 300: "missing", "org/name": "hub", "name": "hub", "x" * 300: "hub"}
    assert {spec: model_ref(spec).kind for spec in kinds} == kinds


@pytest.mark.parametrize("spec, says", [
    (NO_USER, f"model directory not found: {NO_USER}"),
    (NO_USER + ".gguf", f"model file not found: {NO_USER}.gguf"),
    ("./" + "x" * 300, "model directory not found: ./" + "x" * 300),  # a name too long for the file system
])
def test_a_model_path_that_cannot_be_looked_up_is_one_line(capsys, tmp_path, spec, says):
    """Was a traceback (RuntimeError: Could not determine home directory; OSError: File name too long) in the early
    check, which did not catch what model_folder caught."""
    doc = tmp_path / "d.txt"
    doc.write_text("The code is 5.\n")
    assert run(capsys, "ask", str(doc), "What is the code?", "--model", spec) == (2, "", f"tmix: error: {says}\n")
    from tmixcli.models import load_model

    with pytest.raises(TmixError, match=f"^{says}$"):
        load_model(spec, "cpu", "fp32", progress=False)
    assert json.loads(server_key(spec, "cpu", "auto", None, "off"))["model"] == ["id", spec]


@pytest.mark.parametrize("config, context", [
    ({"max_position_embeddings": 4096}, 4096),
    ({"max_position_embeddings": "4096"}, None),  # the text cap took int("4096")
    ({"max_position_embeddings": 4096.7}, None),  # ... and int(4096.7)
    ({"max_position_embeddings": True}, None),
    ({"max_position_embeddings": 0}, None),
    ({"text_config": {"num_hidden_layers": 2, "max_position_embeddings": 4096}}, 4096),  # the text cap had none
])
def test_the_text_cap_reads_the_context_as_the_early_checks_do(tmp_path, config, context):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "abcd": 1}}}))
    cap = files_cap(str(folder))
    assert model_limits(str(folder)).context == context and (cap and cap.context) == context


def test_the_tokenizer_files_read_a_text_config_context(tmp_path, monkeypatch):
    """A config.json with its sizes under text_config (as multimodal models write it): the files give the context
    the load gives (the files were never used: their context could not be read)."""
    from transformers import AutoTokenizer

    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))
    folder = tmp_path / "llama"
    tiny_tokenizer("llama").save_pretrained(folder)
    config = tiny_config("llama", max_position_embeddings=1024).to_dict()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": config}))
    lm = SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(folder),
                         model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1024)))
    filetok.remember(lm, str(folder))
    files = filetok.files_model(str(folder))
    assert files is not None and files.context == 1024
