"""Damaged model files (weights, tokenizer, GGUF, chat template) and hub ids that cannot be fetched: one error line
naming the file and the damage, before the model loads where the files' framing tells, never a traceback."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
from test_modelcheck import COMMANDS, one_error

from runcli import run
from tmixcli import cli_open, convert, models, prompt
from tmixcli.errors import TmixError
from tmixcli.modelcheck import check_gguf

NO_LOAD = "loaded the model for a run it refuses"


@pytest.fixture()
def model(tmp_path, tiny_dir, monkeypatch) -> Path:
    """A copy of the tiny Llama folder to damage, and a document beside it; the current folder is tmp_path."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_dir, tmp_path / "m")
    (tmp_path / "doc.txt").write_text("The ferry leaves at 07:45 from pier 3.\n")
    return tmp_path / "m"


@pytest.fixture()
def no_load(monkeypatch) -> None:
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail(NO_LOAD))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail(NO_LOAD))


def _argv(command: list[str]) -> list[str]:
    return [a.replace("DOC", "doc.txt") for a in command]


def _header_len(path: Path) -> int:
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_damaged_weights_are_named_before_the_load(capsys, model, no_load):
    weights = model / "model.safetensors"
    whole = weights.read_bytes()
    size, head = len(whole), _header_len(weights)
    cases = [(whole[:100000], f"model.safetensors is truncated (its header says {size} bytes, the file has 100000)"),
             (whole[:200], f"model.safetensors is truncated (its header alone needs {head} bytes, the file has 200)"),
             (b"", "model.safetensors is empty"),
             (bytes(range(256)) * 20, "model.safetensors is not a safetensors file (it does not start with a header "
                                      "length and a JSON header)"),
             (whole + b"\0" * 10, "model.safetensors is damaged (10 bytes follow its tensors' data)"),
             (whole[:9] + b"@" + whole[10:], "model.safetensors is damaged (its header is not a safetensors JSON "
                                             "header)")]
    for data, says in cases:
        weights.write_bytes(data)
        assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "./m") == (
            f"tmix: error: ./m is not a usable model folder: {says}")
    weights.write_bytes(whole[:100000])
    for command in COMMANDS:
        err = one_error(capsys, *_argv(command), "--model", "m")
        assert err.endswith(f"m is not a usable model folder: model.safetensors is truncated (its header says {size} "
                            "bytes, the file has 100000)"), command


def test_damaged_shards_and_index_are_named_before_the_load(capsys, model, no_load):
    from safetensors.torch import load_file, save_file

    state = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(model / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    second = model / "model-00002-of-00002.safetensors"
    data = second.read_bytes()
    second.write_bytes(data[:-100])
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m") == (
        f"tmix: error: m is not a usable model folder: model-00002-of-00002.safetensors is truncated (its header says "
        f"{len(data)} bytes, the file has {len(data) - 100})")
    second.unlink()
    assert one_error(capsys, "prefill", "doc.txt", "--model", "m") == (
        "tmix: error: m is not a usable model folder: model-00002-of-00002.safetensors is missing "
        "(model.safetensors.index.json names it)")
    (model / "model.safetensors.index.json").write_text(json.dumps(index)[:50])
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m").startswith(
        "tmix: error: m is not a usable model folder: model.safetensors.index.json cannot be read (Expecting")


def test_a_weight_file_damaged_past_its_framing_is_one_line_at_the_load(capsys, model):
    """An unknown dtype reads well as JSON: safetensors' own refusal at the load becomes the error line."""
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    head = _header_len(weights)
    header = data[8:head].replace(b'"F32"', b'"X32"', 1)
    weights.write_bytes(data[:8] + header + data[head:])
    err = one_error(capsys, "ask", "doc.txt", "Q", "--model", "m")
    assert err.startswith("tmix: error: could not load model 'm': a weight file is damaged (safetensors: "), err


def test_a_damaged_tokenizer_is_named(capsys, model, no_load):
    """Cut short: named before the load (its end is read, not the whole file); damaged inside: named by the load."""
    tokenizer = model / "tokenizer.json"
    text = tokenizer.read_text()
    tokenizer.write_text(text[:1000])
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m") == (
        "tmix: error: m is not a usable model folder: tokenizer.json is truncated (its JSON ends before its closing "
        "brace)")
    tokenizer.write_text("\n")
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m") == (
        "tmix: error: m is not a usable model folder: tokenizer.json is empty")
    tokenizer.write_text(text)
    (model / "tokenizer_config.json").write_text('{"bos_token": "<s')
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m").startswith(
        "tmix: error: m is not a usable model folder: tokenizer_config.json cannot be read (Unterminated string")


def test_a_tokenizer_damaged_inside_is_named_at_the_load(capsys, model):
    tokenizer = model / "tokenizer.json"
    tokenizer.write_text("{@" + tokenizer.read_text()[1:])
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "m") == (
        "tmix: error: could not load model 'm': tokenizer.json cannot be read (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))")


def test_a_file_given_as_model_folder_is_called_a_file(capsys, model, no_load):
    assert one_error(capsys, "ask", "doc.txt", "Q", "--model", "./doc.txt") == (
        "tmix: error: ./doc.txt is a file, not a model folder (give a folder with a config.json, or a .gguf file)")


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _gguf_with_tensor(floats: int = 64) -> bytes:
    """A GGUF v3 file: general.architecture llama and one F32 tensor of `floats` values after 32-byte alignment."""
    meta = _string(b"general.architecture") + struct.pack("<I", 8) + _string(b"llama")
    tensor = _string(b"token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", floats // 8, 8)
    tensor += struct.pack("<IQ", 0, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + meta + tensor
    head += b"\0" * (-len(head) % 32)
    return head + b"\0" * (4 * floats)


def test_a_truncated_gguf_is_named_before_the_conversion(capsys, tmp_path, monkeypatch, no_load):
    pytest.importorskip("gguf")  # the tensor types' sizes come from it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(convert, "convert_gguf", lambda *a, **k: pytest.fail("converted a model it refuses"))
    Path("doc.txt").write_text("The ferry leaves at 07:45.\n")
    whole = _gguf_with_tensor()
    Path("whole.gguf").write_bytes(whole)
    check_gguf(Path("whole.gguf"))
    for cut, says in ((4, "the file ends inside its GGUF header, after 4 bytes"),
                      (40, "the file ends inside its GGUF header, after 40 bytes"),
                      (len(whole) - 1, f"its tensors end at byte {len(whole)}, the file has {len(whole) - 1}")):
        Path("cut.gguf").write_bytes(whole[:cut])
        for command in COMMANDS:
            err = one_error(capsys, *_argv(command), "--model", "cut.gguf")
            assert err == f"tmix: error: cut.gguf is truncated: {says}", command


def test_without_the_gguf_package_only_the_header_is_checked(tmp_path, monkeypatch):
    """No tensor sizes without gguf (the GPU box has none): a file cut in its data passes to the conversion, which
    says what is missing in one line."""
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.setitem(sys.modules, "gguf.constants", None)
    whole = _gguf_with_tensor()
    (tmp_path / "cut.gguf").write_bytes(whole[:-1])
    check_gguf(tmp_path / "cut.gguf")
    (tmp_path / "cut.gguf").write_bytes(whole[:40])
    with pytest.raises(TmixError, match="ends inside its GGUF header"):
        check_gguf(tmp_path / "cut.gguf")


@pytest.mark.model
def test_the_default_gguf_cut_short_is_named(tmp_path):
    """The real file's header (49152 tokens, merges, 272 tensors) is walked to its end: its tensors end where it
    does, and a copy cut in its header or its data is called truncated."""
    data = convert.default_gguf_path().read_bytes()
    for cut, says in ((1000, "the file ends inside its GGUF header, after 1000 bytes"),
                      (2_000_000, f"its tensors end at byte {len(data)}, the file has 2000000")):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(TmixError) as err:
            check_gguf(tmp_path / "cut.gguf")
        assert str(err.value) == f"cut.gguf is truncated: {says}"


def test_a_gguf_the_conversion_cannot_parse_is_one_line(tmp_path, monkeypatch):
    """Where the early check is passed (damage it cannot see), the conversion's struct.error is one line too."""
    from tmixcli import modelcheck
    from tmixcli.ggufheader import GgufHeader

    monkeypatch.setattr(convert, "check_gguf", lambda path: GgufHeader(None, None))
    monkeypatch.setattr(modelcheck, "check_gguf", lambda path: GgufHeader(None, None))
    (tmp_path / "cut.gguf").write_bytes(_gguf_with_tensor()[:40])
    with pytest.raises(TmixError, match=r"^cannot read cut.gguf as a GGUF model \("):
        convert.convert_gguf(tmp_path / "cut.gguf", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["ask", "DOC", "Q"], ["serve"], ["bench", "--lengths", "1k"], ["eval"]])
def test_an_uncached_hub_id_offline_is_refused_before_the_load(capsys, tmp_path, monkeypatch, no_load, command):
    monkeypatch.chdir(tmp_path)
    Path("doc.txt").write_text("The ferry leaves at 07:45.\n")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert one_error(capsys, *_argv(command), "--model", "someorg/some-model") == (
        "tmix: error: model 'someorg/some-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
        "pass a local model folder or .gguf file, or download it where there is network")


MISTRAL_STYLE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('Only user and assistant "
                 "roles are supported!') }}{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}")


def test_a_chat_template_that_refuses_the_system_prompt_is_one_line(capsys, model):
    (model / "chat_template.jinja").write_text(MISTRAL_STYLE)
    says = ("tmix: error: the model's chat template refused the prompt: Only user and assistant roles are supported! "
            "(it takes no system prompt: leave out --system)")
    for command in (["ask", "doc.txt", "Who?", "--no-cache"], ["prefill", "doc.txt"]):
        assert one_error(capsys, *command, "--model", "m", "--system", "Be brief.") == says, command
    code, out, _ = run(capsys, "ask", "doc.txt", "Who?", "--model", "m", "--max-new-tokens", "2", "--no-cache")
    assert code == 0 and out


def test_a_model_without_a_chat_template_says_its_prompt_is_plain(capsys, model):
    (model / "chat_template.jinja").unlink()
    for run_ in ("fresh prefill", "cache hit of the unchanged document (docindex)"):
        code, out, _ = run(capsys, "ask", "doc.txt", "Who?", "--model", "m", "--max-new-tokens", "2", "--json")
        assert code == 0 and json.loads(out)["notes"] == [prompt.PLAIN_NOTE], (run_, out)
    code, _, err = run(capsys, "prefill", "doc.txt", "-o", "doc.kv", "--model", "m")
    assert code == 0 and err.count(f"tmix: {prompt.PLAIN_NOTE}\n") == 1, err
    code, _, err = run(capsys, "ask", "--kv", "doc.kv", "Who?", "--model", "m", "--max-new-tokens", "2")
    assert code == 0 and err.count(f"tmix: {prompt.PLAIN_NOTE}\n") == 1, err
