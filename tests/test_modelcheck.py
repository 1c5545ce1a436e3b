"""A model's config.json, GGUF header and weights are judged before (or as) it loads: one line, never a traceback."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from runcli import run
from tmixcli import cli_open, convert, modelcheck, models
from tmixcli.errors import TmixError

# SmolLM2-135M's config.json as tmix converts it, less what transformers fills in itself
LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152,
                "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192, "tie_word_embeddings": True}
RUNS = f"tmix runs {modelcheck.RUNS}"  # "tmix runs llama, mistral, qwen2 and qwen3 models"
COMMANDS = (["ask", "DOC", "Q"], ["prefill", "DOC"], ["prefill", "DOC", "-o", "x.kv"], ["chat", "DOC"], ["serve"],
            ["bench", "--lengths", "1k"], ["eval"], ["calibrate"])


def _without(key: str) -> dict:
    return {k: v for k, v in LLAMA_CONFIG.items() if k != key}


BAD_CONFIGS = [
    ({}, f"has no model_type ({RUNS})"),
    ([1, 2], "is not a JSON object"),
    (_without("model_type"), f"has no model_type ({RUNS})"),
    ({**LLAMA_CONFIG, "model_type": "no-such-model"},
     f"has model_type 'no-such-model', which tmix cannot run: it runs {modelcheck.RUNS}"),
    ({**LLAMA_CONFIG, "model_type": "gpt2"},
     f"has model_type 'gpt2', which tmix cannot run: it runs {modelcheck.RUNS}"),
    ({**LLAMA_CONFIG, "architectures": ["LlamaForSequenceClassification"]},
     "names no causal language model in architectures ['LlamaForSequenceClassification'] "
     "(tmix needs a ...ForCausalLM)"),
    ({**LLAMA_CONFIG, "architectures": "LlamaForCausalLM"},
     "has architectures 'LlamaForCausalLM', not a list of class names"),
    (_without("num_hidden_layers"), "lacks num_hidden_layers"),
    ({k: v for k, v in LLAMA_CONFIG.items() if k not in ("vocab_size", "hidden_size")},
     "lacks vocab_size, hidden_size"),
    ({**LLAMA_CONFIG, "num_hidden_layers": "30"}, "has num_hidden_layers '30', not a positive whole number"),
    ({**LLAMA_CONFIG, "num_hidden_layers": 0}, "has num_hidden_layers 0, not a positive whole number"),
    ({**LLAMA_CONFIG, "num_attention_heads": 9.0}, "has num_attention_heads 9.0, not a positive whole number"),
    ({**LLAMA_CONFIG, "head_dim": True}, "has head_dim True, not a positive whole number"),
    ({**LLAMA_CONFIG, "num_key_value_heads": 2}, "has num_attention_heads 9, not a multiple of num_key_value_heads 2"),
    ({**_without("head_dim"), "hidden_size": 580},
     "has hidden_size 580, not a multiple of num_attention_heads 9 (and no head_dim)"),
]


@pytest.fixture()
def folder(tmp_path, monkeypatch) -> Path:
    """A model folder with tokenizer and weight files; loading any model fails the test."""
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45 from pier 3.\n")
    return tmp_path / "m"


def one_error(capsys, *argv: str) -> str:
    """The single stderr line of a run refused with exit 2 and nothing on stdout."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    return err.strip()


@pytest.mark.parametrize("config,says", BAD_CONFIGS)
def test_a_config_tmix_cannot_run_is_named_before_the_load(capsys, folder, config, says):
    (folder / "config.json").write_text(json.dumps(config))
    for command in COMMANDS:
        argv = [a.replace("DOC", "doc.txt") for a in command]
        err = one_error(capsys, *argv, "--model", "m")
        assert err == f"tmix: error: m is not a usable model folder: its config.json {says}", argv


def test_a_config_that_is_not_json_is_named(capsys, folder):
    (folder / "config.json").write_bytes(b"\xff\xfe not json")
    err = one_error(capsys, "ask", "doc.txt", "Q", "--model", "m")
    assert err.startswith("tmix: error: m is not a usable model folder: cannot read its config.json ("), err


@pytest.mark.parametrize("family", modelcheck.FAMILIES)
def test_the_configs_of_the_families_tmix_runs_pass(tmp_path, family):
    from tiny import tiny_config

    tiny_config(family).save_pretrained(tmp_path)
    assert modelcheck.config_problem(json.loads((tmp_path / "config.json").read_text())) is None


def test_an_older_config_without_kv_heads_or_head_dim_passes():
    """Llama-2 and Mistral-7B configs name no head_dim; the first Llama ones no num_key_value_heads either."""
    config = {k: v for k, v in LLAMA_CONFIG.items() if k not in ("head_dim", "num_key_value_heads")}
    nulls = {"head_dim": None, "num_key_value_heads": None, "architectures": None}
    mistral = {"model_type": "mistral", "architectures": ["MistralForCausalLM"]}
    for fine in (config, {**config, **nulls}, {**config, **mistral}):
        assert modelcheck.config_problem(fine) is None, fine


@pytest.mark.model
def test_the_default_model_passes_every_check():
    from tmixcli.modelcheck import check_folder

    folder = convert.default_model_dir(progress=False)
    assert modelcheck.config_problem(json.loads((folder / "config.json").read_text())) is None
    check_folder(folder, str(folder))
    modelcheck.check_gguf(convert.default_gguf_path())


def _gguf(*pairs: tuple[bytes, int, bytes]) -> bytes:
    """A GGUF v3 header holding these (key, type, packed value) pairs and no tensors."""
    body = b"".join(struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + v for k, t, v in pairs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + body


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def test_a_gguf_of_another_architecture_is_refused_before_the_conversion(capsys, folder, monkeypatch):
    """Its general.architecture is read from the header (no torch); converting it would take minutes for nothing."""
    monkeypatch.setattr(convert, "convert_gguf", lambda *a, **k: pytest.fail("converted a model it refuses"))
    Path("phi.gguf").write_bytes(_gguf((b"general.alignment", 4, struct.pack("<I", 32)),
                                       (b"general.architecture", 8, _string(b"phi3"))))
    for command in COMMANDS:
        argv = [a.replace("DOC", "doc.txt") for a in command]
        assert one_error(capsys, *argv, "--model", "phi.gguf") == (
            "tmix: error: phi.gguf holds a 'phi3' model (its general.architecture), which tmix cannot run: it runs "
            f"{modelcheck.RUNS}"), argv
    assert "converting" not in capsys.readouterr().err
    Path("llama.gguf").write_bytes(_gguf((b"general.architecture", 8, _string(b"llama"))))
    modelcheck.check_gguf(Path("llama.gguf"))
    tokens = struct.pack("<IQ", 8, 2) + _string(b"<s>") + _string(b"</s>")
    Path("array.gguf").write_bytes(_gguf((b"tokenizer.ggml.tokens", 9, tokens),
                                         (b"general.architecture", 8, _string(b"phi3"))))
    with pytest.raises(TmixError, match="^array.gguf holds a 'phi3' model"):  # found past an array of strings
        modelcheck.check_gguf(Path("array.gguf"))


def test_a_hub_model_in_the_local_cache_is_judged_by_its_config(capsys, folder, tmp_path, monkeypatch):
    repo = tmp_path / "hf" / "hub" / "models--someorg--gpt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps({**LLAMA_CONFIG, "model_type": "gpt2"}))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "someorg/gpt") == (
        "tmix: error: someorg/gpt (in the Hugging Face cache) is not a usable model: its config.json has model_type "
        f"'gpt2', which tmix cannot run: it runs {modelcheck.RUNS}")


@pytest.mark.parametrize("change,says", [
    ({"num_hidden_layers": 6}, "its weight files lack 18 of the tensors its config.json asks for "
                               "(model.layers.4.input_layernorm.weight, ...); the two do not belong together"),
    ({"num_hidden_layers": 2}, "its weight files hold 18 tensors of layers past the 2 its config.json has "
                               "(model.layers.2.input_layernorm.weight, ...); the two do not belong together"),
    ({"vocab_size": 500}, "the tensor shapes in its weight files do not match its config.json's sizes"),
])
def test_weights_that_do_not_fit_the_config_are_refused_at_the_load(capsys, tiny_dir, tmp_path, change, says):
    """A config.json that reads well but does not describe its weights: transformers would fill the missing layers
    with random numbers (an answer of noise, exit 0) or stop with a traceback."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45.\n")
    err = one_error(capsys, "ask", str(tmp_path / "doc.txt"), "When?", "--model", str(folder), "--max-new-tokens", "2")
    assert err == f"tmix: error: could not load model 'm': {says}"


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_fifo_among_the_model_files_is_named_not_waited_on(tmp_path, name):
    """Reading the model's files (its context from tokenizer.json, transformers' load) would wait on it for good."""
    import os
    import subprocess
    import sys

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    (model / "tokenizer.model").write_bytes(b"")
    (model / "model.safetensors").write_bytes(b"")
    (model / name).unlink(missing_ok=True)
    os.mkfifo(model / name)
    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45.\n")
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-m", "tmixcli", "ask", "doc.txt", "When?", "--model", "m"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still waiting on {name} after 60 s")
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"tmix: error: m is not a usable model folder: {name} is a FIFO (named pipe), not a regular file\n")
