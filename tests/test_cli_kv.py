"""KV files named on the command line: `prefill -o` replaces only a KV file; `--kv` refuses what it cannot use."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from runcli import TINY, ask_json, run, tmix_subprocess
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)


def test_bad_kv_file_no_traceback(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(4096))
    res = tmix_subprocess("ask", "--kv", str(bad), "What?")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


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


def test_a_kv_file_of_another_model_names_both_and_how_to_use_it(capsys, tiny_dir, short_doc, tmp_path):
    """--kv FILE made with another model: the error names the model in the file's metadata and the one in use, with
    advice that works for --kv alone (it said "re-run tmix prefill", with two fingerprints); that --model answers."""
    other = tmp_path / "other-tiny"
    shutil.copytree(tiny_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "rms_norm_eps": config["rms_norm_eps"] * 2}))
    kv = tmp_path / "other.kv"
    code, _, err = run(capsys, "prefill", short_doc, "-o", str(kv), "-q", "--model", str(other), *TINY)
    assert code == 0, err
    q = ("Who?", "--max-new-tokens", "2", "-q")
    code, out, err = run(capsys, "ask", "--kv", str(kv), *q, "--model", tiny_dir)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "KV file was made with model other-tiny (fingerprint " in err, err
    assert f"), not with the model in use, {Path(tiny_dir).name} (fingerprint " in err, err
    assert err.endswith("; pass --model other-tiny (or that model's path), or prefill the document again with this "
                        "model\n"), err
    code, out, err = run(capsys, "ask", "--kv", str(kv), *q, "--model", str(other))
    assert code == 0 and out.strip(), err


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


def test_a_cached_file_refused_by_ask_is_prefilled_again_without_advice_to_do_so(capsys, tiny_dir, short_doc):
    """A cached file made with other attention settings: `ask` said "not used (...; re-run tmix prefill); prefilling
    again", advice for what it was already doing. The facts stay, the advice goes; `--kv` users keep it."""
    from tmixcli import kvheader, kvstore
    from tmixcli.errors import TmixError

    args = ("--model", tiny_dir, *TINY)
    code, out, err = run(capsys, "prefill", short_doc, "--quiet", *args)
    assert code == 0, err
    cached = Path(out.strip())
    code, out, err = run(capsys, "prefill", short_doc, "--quiet", *args, "--n-local", "32")
    assert code == 0, err
    cached.write_bytes(Path(out.strip()).read_bytes())  # another file under this one's key
    code, _, err = run(capsys, "ask", short_doc, "What is this about?", "--max-new-tokens", "2", *args)
    note = f"cache file {cached.name} not used (KV file was made with attention n_local=32, now 16); prefilling again"
    assert code == 0 and note in err and "re-run" not in err, err
    other_model = kvstore._other_model({"model_id": "m2", "model_fingerprint": "c" * 64}, "a" * 64, "m1")
    for message in (kvstore._mismatch("attn_n_local", "32", "16"), kvstore._mismatch("template_hash", "a", "b"),
                    other_model, kvstore._mismatch("dtype", "fp32", "bf16")):
        facts = kvstore.refusal_facts(message)
        assert message.startswith(facts) and "; " in message[len(facts):len(facts) + 2], message
        assert "prefill" in message and "prefill" not in facts, facts
    with pytest.raises(TmixError) as prefix:
        kvstore.check_prefix_ids([1, 2, 3], [1, 2, 4])
    with pytest.raises(TmixError) as version:
        kvheader.check_version(cached, {"tmix_format": "0"})
    for err in (prefix.value, version.value):  # what --kv says, with its advice; what ask says, without
        assert str(err).endswith("; re-run tmix prefill") and "re-run" not in kvstore.refusal_facts(str(err))
