"""Option values refused in one line before the model loads: seeds, tolerances, TMIX_THREADS, model folders."""

from __future__ import annotations

import re

import pytest

from runcli import run
from tmixcli import cli_open


@pytest.fixture()
def ferry(tmp_path, monkeypatch) -> str:
    """A one-line document; loading a model for it fails the test."""
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    path = tmp_path / "ferry.txt"
    path.write_text("The ferry leaves at 07:45 from pier 3.\n")
    return str(path)


def one_error(capsys, *argv: str) -> str:
    """The single stderr line of a run refused with exit 2 and nothing on stdout."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    return err.strip()


@pytest.mark.parametrize("seed", [str(2**64), "99999999999999999999", "-5"])
def test_seed_out_of_range_is_refused_before_the_load(capsys, ferry, seed):
    for command in (["ask", ferry, "Q"], ["chat", ferry]):
        err = one_error(capsys, *command, "--temperature", "0.5", "--seed", seed)
        assert err == f"tmix: error: --seed must be from 0 to 2**64-1 (18446744073709551615), not {seed}"


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf"])
def test_calibrate_refuses_a_tolerance_that_means_nothing(capsys, monkeypatch, value):
    """pick_candidates compares a sum of |gradients| with the tolerance: a negative, NaN or infinite one is refused."""
    from tmixcli import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    err = one_error(capsys, "calibrate", "--tolerance", value)
    assert err.startswith("tmix: error: --tolerance must be a finite number, at least 0"), err


@pytest.mark.parametrize("flag,value,says", [("--temperature", "nan", "--temperature must be between 0"),
                                             ("--temperature", "inf", "--temperature must be between 0"),
                                             ("--top-p", "nan", "--top-p must be in (0, 1]"),
                                             ("--top-p", "inf", "--top-p must be in (0, 1]")])
def test_sampling_floats_refuse_nan_and_inf(capsys, ferry, flag, value, says):
    assert one_error(capsys, "ask", ferry, "Q", flag, value).startswith(f"tmix: error: {says}")


def test_top_p_without_sampling_is_refused(capsys, ferry):
    """Greedy decoding (--temperature 0) has no nucleus to cut: --top-p is refused, as options that cannot apply are."""
    for command in (["ask", ferry, "Q"], ["chat", ferry]):
        for extra in (["--top-p", "0.9"], ["--temperature", "0", "--top-p", "0.5"]):
            assert one_error(capsys, *command, *extra) == ("tmix: error: --top-p applies only to sampling: give it "
                                                           "with --temperature above 0 (0, the default, is greedy "
                                                           "decoding)")


def test_a_bad_tmix_threads_is_named_as_the_variable(capsys, ferry, monkeypatch):
    """The value came from TMIX_THREADS, not from a --threads the user never typed; a typed one is named as such."""
    monkeypatch.setenv("TMIX_THREADS", "abc")
    assert one_error(capsys, "ask", ferry, "Q").startswith("tmix: error: TMIX_THREADS must be 'auto' or a number")
    for flag in (["--threads", "abc"], ["--threads=abc"]):
        assert one_error(capsys, "ask", ferry, "Q", *flag).startswith("tmix: error: --threads must be 'auto'")


def test_a_document_over_the_context_hints_only_what_can_help(capsys, tiny_dir, tmp_path):
    """A shorter answer is suggested only where one would let the whole document fit (tiny model: 1024 tokens)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "sample_docs" / "notes.txt").read_text()
    long, short = tmp_path / "long.txt", tmp_path / "short.txt"
    long.write_text(text[:3000])
    short.write_text(text[:1000])
    err = one_error(capsys, "ask", str(long), "q?", "--model", tiny_dir, "--max-new-tokens", "2")
    assert err.endswith("over the model's 1024-token context; use --truncate to cut the document"), err
    err = one_error(capsys, "ask", str(short), "q?", "--model", tiny_dir, "--max-new-tokens", "400")
    prompt = sum(map(int, re.search(r"needs (\d+) document tokens \+ prompt template (\d+) \+", err).groups()))
    n_question = int(re.search(r"\+ question (\d+) \+", err).group(1))  # `ask` counts its question's own tokens
    assert 0 < n_question < 64
    assert err.endswith(f"use --truncate to cut the document, or --max-new-tokens {1024 - prompt - n_question} or "
                        "less"), err


def test_model_refused_before_the_load(capsys, ferry, tmp_path, monkeypatch):
    """A missing model path, an unusable folder, a file that is not a GGUF: one line each before the model loads;
    a hub id `org/name` is not taken for a path."""
    import json

    from test_modelcheck import LLAMA_CONFIG
    from tmixcli import modelcheck, models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    (tmp_path / "bad.gguf").write_bytes(b"\x00\x01garbage" * 100)
    cases = [(["--model", "/nonexistent"], "model directory not found: /nonexistent"),
             (["--model", "./nowhere"], "model directory not found: ./nowhere"),
             (["--model", "missing.gguf"], "model file not found: missing.gguf"),
             (["--model", "m"], "m is not a usable model folder: no tokenizer files "
                                "(tokenizer.json / tokenizer.model)"),
             (["--model", "bad.gguf"], "bad.gguf is not a GGUF model file (it does not start with the bytes 'GGUF')")]
    for extra, says in cases:
        for command in (["ask", ferry, "Q"], ["prefill", ferry], ["prefill", ferry, "-o", "x.kv"], ["chat", ferry]):
            assert one_error(capsys, *command, *extra) == f"tmix: error: {says}", (command, extra)
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    assert "no weight files (*.safetensors / *.bin)" in one_error(capsys, "ask", ferry, "Q", "--model", "m")
    for command in (["eval"], ["calibrate"]):
        assert one_error(capsys, *command, "--model", "m").endswith("no weight files (*.safetensors / *.bin)")
    snapshot = tmp_path / "hf" / "hub" / "models--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    modelcheck.check_model("org/name")  # a hub id in the local Hugging Face cache, its files resolved by the load


@pytest.mark.model
def test_start_layer_past_the_default_model_refused_before_the_load(capsys, ferry):
    """The default model's 30 layers come from its config.json on disk, without torch."""
    for command in (["ask", ferry, "Q"], ["prefill", ferry], ["prefill", ferry, "-o", "x.kv"], ["chat", ferry]):
        err = one_error(capsys, *command, "--start-layer", "99")
        assert err == "tmix: error: --start-layer 99 is past the model's 30 layers", command


def test_a_file_that_is_not_gguf_is_refused_before_the_conversion_is_announced(capsys, tmp_path):
    from tmixcli.errors import TmixError
    from tmixcli.convert import convert_gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(TmixError, match="^bad.gguf is not a GGUF model file"):
        convert_gguf(bad, tmp_path / "out")
    assert "converting" not in capsys.readouterr().err


def test_an_empty_output_path_is_called_empty(capsys, ferry):
    """`-o ""` is not the current folder: it is an empty path (also bench and calibrate --plot)."""
    assert one_error(capsys, "prefill", ferry, "-o", "") == "tmix: error: -o is empty; give a file path"
    assert one_error(capsys, "prefill", ferry, "-o", ".").startswith("tmix: error: -o . is a directory")
    for command in (["bench"], ["calibrate"]):
        assert one_error(capsys, *command, "--plot", "") == "tmix: error: --plot is empty; give a file path"


def test_triangle_options_given_for_a_dense_kv_file_are_refused():
    """A dense file has no triangle layers: --start-layer (or --n-init, --n-local, --last-n) alone is a mismatch,
    named with what the file was made with; beside an explicit --attention dense they are moot, as for a document."""
    from tmixcli.config import Settings
    from tmixcli.errors import TmixError
    from tmixcli.kvstore import settings_for

    meta = {"attn_method": "dense", "attn_n_init": "8", "attn_n_local": "512", "attn_last_n": "128",
            "attn_start_layer": "0"}
    for field, flag in (("start_layer", "--start-layer"), ("n_init", "--n-init"), ("n_local", "--n-local"),
                        ("last_n", "--last-n")):
        with pytest.raises(TmixError, match=f"^{flag} 3 cannot apply to this KV file: it was made with --attention "
                                            "dense, which has no triangle layers"):
            settings_for(meta, Settings(**{field: 3}))
        assert settings_for(meta, Settings(method="dense", **{field: 3})).method == "dense"
    assert settings_for(meta, Settings()).method == "dense"


def test_status_of_an_empty_and_a_one_token_answer(capsys, monkeypatch, tiny_dir, tmp_path):
    """No rate for 0 or 1 token, '1 token' singular; an empty answer is said in a status line and a --json note."""
    import json

    from tmixcli import generate

    doc = tmp_path / "ferry.txt"
    doc.write_text("The ferry leaves at 07:45 from pier 3.\n")
    from transformers import AutoTokenizer

    argv = ("ask", str(doc), "When?", "--model", tiny_dir, "--attention", "dense", "--no-cache")
    word = AutoTokenizer.from_pretrained(tiny_dir)("Pier", add_special_tokens=False)["input_ids"][:1]
    for answer_ids in ([], word):
        monkeypatch.setattr(generate, "generate_ids", lambda *a, ids=answer_ids, **k: (i for i in ids))
        code, out, err = run(capsys, *argv)
        status = err.strip().splitlines()
        assert code == 0 and "tok/s" not in err, err
        if answer_ids:
            assert status[-1].endswith("), 1 token") and "the model gave no answer" not in err, err
        else:
            assert status[-2].endswith("), 0 tokens") and status[-1] == "tmix: the model gave no answer", err
            code, out, _ = run(capsys, *argv, "--json")
            assert code == 0 and json.loads(out)["notes"] == ["the model gave no answer"]
            assert json.loads(out)["answer"] == ""


def test_a_kv_file_whose_n_tokens_is_damaged_says_so(capsys, monkeypatch, tiny_dir, tmp_path):
    """n_tokens in the header disagreeing with the tensor shapes is named as damage before the load, not read as a
    prefix too long for the question."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    doc = tmp_path / "ferry.txt"
    doc.write_text("The ferry leaves at 07:45 from pier 3.\n")
    kv = tmp_path / "ferry.kv"
    assert run(capsys, "prefill", str(doc), "-o", str(kv), "-q", "--model", tiny_dir, "--attention", "dense")[0] == 0
    with safe_open(str(kv), "pt") as f:
        meta = f.metadata()
    tokens = meta["n_tokens"]
    save_file(load_file(str(kv)), str(kv), metadata={**meta, "n_tokens": "99999"})
    monkeypatch.setattr(cli_open, "load", lambda *a, **k: pytest.fail("loaded the model for a damaged file"))
    err = one_error(capsys, "ask", "--kv", str(kv), "Q", "--model", tiny_dir)
    assert err == f"tmix: error: {kv}: KV file has [{tokens}] prefix ids but n_tokens=99999", err


@pytest.fixture()
def no_load(monkeypatch):
    """Loading a model fails the test."""
    from tmixcli import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))


def test_eval_refuses_to_compare_nothing(capsys, no_load):
    """No start layers, or a length at which the triangle is dense attention: refused as calibrate refuses it."""
    for value in ("", ","):
        assert one_error(capsys, "eval", "--start-layers", value) == (
            "tmix: error: --start-layers is empty: give the start layers to compare with dense, such as 10,15,20")
    dense_up_to = "up to n_init + n_local + last_n = 2136 tokens the triangle is dense attention; give at least 2137"
    assert one_error(capsys, "eval", "--lengths", "1k", "--n-local", "2000") == (
        f"tmix: error: --lengths 1024 is too short to compare: {dense_up_to}")
    assert one_error(capsys, "eval", "--lengths", "6k,1k", "--n-local", "2000") == (
        f"tmix: error: --lengths 1024 is too short to compare: {dense_up_to}")
    assert one_error(capsys, "calibrate", "--length", "1k", "--n-local", "2000") == (
        f"tmix: error: --length 1024 is too short to calibrate: {dense_up_to}")


def test_calibrate_refuses_a_list_for_a_single_length(capsys, no_load):
    for option in ("--length", "--grad-length"):
        assert one_error(capsys, "calibrate", option, "1k,2k") == (
            f"tmix: error: {option} takes one length, not a list ('1k,2k'): use a number like 6k or 3000")
        assert one_error(capsys, "calibrate", option, "abc") == (
            f"tmix: error: bad length 'abc' for {option}: use a number like 6k or 3000")


@pytest.mark.parametrize("name", ["TMIX_SERVE", "TMIX_CPU_STEP", "TMIX_CUDA_GRAPHS"])
def test_a_mistyped_switch_variable_is_named(capsys, ferry, no_load, monkeypatch, name):
    """As TMIX_THREADS and TMIX_CACHE_MAX: one line naming the variable, before the model loads."""
    monkeypatch.setenv(name, "maybe")
    for command in (["ask", ferry, "Q"], ["prefill", ferry], ["chat", ferry], ["eval"], ["calibrate"],
                    ["bench", "--lengths", "1k"]):
        assert one_error(capsys, *command) == (
            f"tmix: error: {name} must be on or off (1/0, yes/no, true/false), not 'maybe'"), command


def test_switch_values(monkeypatch):
    from tmixcli.envflags import switch

    for value, on in (("", True), ("1", True), ("on", True), ("Yes", True), ("0", False), ("off", False),
                      (" NO ", False), ("false", False)):
        monkeypatch.setenv("TMIX_CPU_STEP", value)
        assert switch("TMIX_CPU_STEP") is on, value
    monkeypatch.delenv("TMIX_CPU_STEP")
    assert switch("TMIX_CPU_STEP")


def test_a_start_layer_at_the_model_depth_is_said_to_be_dense(capsys, tiny_dir, tmp_path):
    """The tiny model has 4 layers: from layer 4 no layer uses the triangle, and the status line says so."""
    doc = tmp_path / "ferry.txt"
    doc.write_text("The ferry leaves at 07:45 from pier 3.\n")
    argv = ("ask", str(doc), "When?", "--model", tiny_dir, "--max-new-tokens", "1", "--no-cache")
    code, _, err = run(capsys, *argv, "--start-layer", "4")
    assert code == 0 and ("attention trimix from layer 4 (--start-layer; no layer of 4 uses the triangle: dense), "
                          "n_init=8") in err, err
    code, _, err = run(capsys, *argv, "--start-layer", "3")
    assert code == 0 and "attention trimix from layer 3 (--start-layer), n_init=8" in err, err


def test_a_models_folder_that_cannot_be_made_is_one_line(capsys, monkeypatch, tmp_path):
    """TMIX_MODELS_DIR naming a file: one error line naming the variable before the conversion is announced."""
    from tmixcli.errors import TmixError
    from tmixcli.convert import convert_gguf
    from tmixcli.paths import models_dir

    blocker = tmp_path / "models.txt"
    blocker.write_text("not a folder")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(64))
    for env, why in ((blocker, "it exists and is not a folder"), (blocker / "sub", "a part of its path is a file")):
        monkeypatch.setenv("TMIX_MODELS_DIR", str(env))
        with pytest.raises(TmixError, match=f"^cannot use the models folder {env} \\(TMIX_MODELS_DIR\\): {why}"):
            convert_gguf(gguf, models_dir() / "m")
    monkeypatch.delenv("TMIX_MODELS_DIR")
    (tmp_path / "tmix-cache").mkdir()
    (tmp_path / "tmix-cache" / "models").write_text("in the way")
    with pytest.raises(TmixError, match="^cannot use the models folder .*tmix-cache/models: it exists and is not a"):
        convert_gguf(gguf, models_dir() / "m")
    assert "converting" not in capsys.readouterr().err


def test_bench_eval_and_calibrate_refuse_a_bad_device_or_dtype_before_the_load(capsys, tiny_dir, monkeypatch):
    """Every command that loads a model runs one pre-load check (cli_options.check_model_options): bench, eval and
    calibrate told a mistyped --device or --dtype only after torch's import, by the loader's copy of the rule."""
    from tmixcli import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    for command in (["bench", "--lengths", "256", "--no-warm"], ["eval", "--lengths", "256", "--start-layers", "1"],
                    ["calibrate", "--length", "256", "--grad-length", "256", "--cases", "0"]):
        for extra, says in ((["--device", "gpu"], "unknown device 'gpu': use auto, cpu or cuda"),
                            (["--dtype", "f16"], "unknown dtype 'f16': use auto, bf16, fp16 or fp32")):
            assert one_error(capsys, *command, "--model", tiny_dir, *extra) == f"tmix: error: {says}", command


def test_the_loader_refuses_what_the_command_line_refuses():
    """models.resolve_device/resolve_dtype and load_model apply the command line's rule (modelcheck.check_placement)
    for callers that skip it: "cuda:x" was passed on to torch, whose error is no TmixError line."""
    import torch

    from tmixcli.errors import TmixError
    from tmixcli.models import load_model, resolve_device, resolve_dtype

    for call, says in ((lambda: resolve_device("cuda:x"), "unknown device 'cuda:x': use auto, cpu or cuda"),
                       (lambda: resolve_dtype("f16", torch.device("cpu")), "unknown dtype 'f16': use auto, bf16"),
                       (lambda: load_model(device="cpu", device_map="balanced"), "--device-map takes only 'auto'")):
        with pytest.raises(TmixError, match=f"^{re.escape(says)}"):
            call()
    assert resolve_device("cpu") == torch.device("cpu") and resolve_dtype("fp16", torch.device("cpu")) == torch.float16
