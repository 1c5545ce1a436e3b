"""Bad input: one line on stderr and exit 2, no traceback, no torch import; documents and the question told apart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from runcli import DOCS, ROOT, TINY, run


def test_question_taken_for_a_file_only_when_it_is_one(tmp_path):
    from tmixcli.cli_question import _names_a_file

    (tmp_path / "notes.txt").write_text("x")
    assert _names_a_file(str(tmp_path / "notes.txt")) and not _names_a_file(str(tmp_path / "other.txt"))
    long = "Summarise the notes. " + "Then list every risk " * 20 + "in notes.txt?"  # > 255 bytes: ENAMETOOLONG
    assert not _names_a_file(long) and not _names_a_file("a\x00b.txt") and not _names_a_file("Who is it?")


def test_missing_document_name_is_not_a_question(tmp_path):
    from tmixcli.cli_question import _missing_document

    (tmp_path / "notes.txt").write_text("x")
    assert _missing_document(str(tmp_path / "other.PDF")) and _missing_document("minutes.md")
    assert not _missing_document(str(tmp_path / "notes.txt"))  # exists: the other check names it
    assert not _missing_document("What is in notes.txt") and not _missing_document("v2.0?")
    assert not _missing_document("Who signed it?") and not _missing_document("report.pdf?")


BAD = [
    (["ask", "missing.pdf", "q?"], "no such file"),
    (["ask", "sample_docs/notes.txt", "sample_docs"], "is a folder; put the question last"),
    (["ask", "sample_docs/notes.txt", "   "], "question is empty"),
    (["ask", "sample_docs/notes.txt"], "usage"),
    (["ask", "sample_docs/notes.txt", "q?", "--attention", "sparse"], "trimix or dense"),
    (["ask", "sample_docs/notes.txt", "q?", "--n-local", "0"], "--n-local must be at least 1"),
    (["ask", "sample_docs/notes.txt", "q?", "--n-init", "-1"], "--n-init must be at least 0"),
    (["ask", "sample_docs/notes.txt", "q?", "--start-layer", "-1"], "--start-layer"),
    (["ask", "sample_docs/notes.txt", "q?", "--threads", "0"], "--threads"),
    (["ask", "sample_docs/notes.txt", "q?", "--threads", "100000"], "--threads"),
    (["ask", "sample_docs/notes.txt", "q?", "--device", "tpu"], "unknown device"),
    (["ask", "sample_docs/notes.txt", "q?", "--dtype", "int8"], "unknown dtype"),
    (["prefill", "sample_docs/notes.txt", "-o", "x.kv", "--device-map", "balanced"], "--device-map"),
    (["ask", "--kv", "nowhere.safetensors", "q?"], "--kv nowhere.safetensors: no such file"),
    (["ask", "--kv", "sample_docs", "q?"], "--kv sample_docs: a folder, not a file"),
    (["ask", "--kv", "/dev/null", "q?"], "--kv /dev/null: a device, not a regular file"),
    (["cache", "prune", "--max-size", ""], "--max-size is empty"),
    (["ask", "sample_docs/notes.txt", "q?", "--model", "/nonexistent/model/dir"], "not found"),
    (["prefill", "sample_docs/report.md", "-o", "sample_docs"], "directory"),
    (["prefill", "sample_docs/notes.txt", "-o", "no/such/folder/kv.safetensors"], "does not exist"),
    (["cache", "rm", "ffffffffffff"], "no"),
    (["ask", "sample_docs/notes.txt", "q?", "--compile", "maybe"], "auto, on or off"),
    (["bench", "--arch", "smollm2-135m", "--lengths", "1k", "--compile", "maybe"], "auto, on or off"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "-1"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--top-p", "0"], "--top-p"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "nan"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--temperature", "inf"], "--temperature"),
    (["ask", "sample_docs/notes.txt", "q?", "--top-p", "nan"], "--top-p"),
    (["prefill", "sample_docs/notes.txt", "-o", "sample_docs/notes.txt"], "not a tmix kv file"),
    (["bench", "--lengths", "1k", "--plot", "no/such/folder/ttft.png"], "does not exist"),
    (["calibrate", "--plot", "sample_docs"], "directory"),
    (["ask"], "missing argument"),  # usage errors from typer's (vendored) click, not only our own checks
    (["ask", "sample_docs/notes.txt", "q?", "--max-new-tokens", "many"], "--max-new-tokens"),
    (["ask", "sample_docs/notes.txt", "q?", "--bogus"], "no such option"),
    (["nosuch"], "no such command"),
    (["cache", "rm"], "missing argument"),
    (["cache", "rm", "--doc"], "--doc needs the paths of documents"),  # not "missing argument 'KEY...'"
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md"], "is a file name; put the question last"),
    (["ask", "sample_docs/notes.txt", "minutes.docx"], "no such document: minutes.docx"),
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md", "q?", "--pages", "1"], "--pages applies"),
    (["ask", "sample_docs/notes.txt", "q?", "--password", "x"], "--password only applies to pdf files, and"),
    (["ask", "sample_docs/notes.txt", "sample_docs/report.md", "q?", "--password", "x"], "none of the documents is a"),
    (["prefill", "sample_docs/notes.txt", "sample_docs/notes.txt"], "given twice"),
    (["chat", "-"], "cannot come from stdin"),
    (["eval", "--facts", "nowhere.json"], "no such file"),
    (["ask", "https://example.com/report.pdf", "q?"], "not urls; download it first"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_one_line_exit_2(capsys, argv, needle, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmix: error:") and needle in lines[0].lower(), err


def test_damaged_gguf_model_one_line(capsys, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    code, out, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", str(bad), "--quiet")
    assert code == 2 and "cannot read model.gguf as a GGUF model" in err and err.strip().splitlines() == [err.strip()]
    from tmixcli.paths import models_dir

    assert not list(models_dir().glob("gguf-model-*"))  # no half-made conversion


@pytest.mark.parametrize("offline", ["endpoint down", "HF_HUB_OFFLINE"])
def test_uncached_hub_model_offline_fails_at_once(capsys, monkeypatch, tmp_path, offline):
    """A hub id missing from the local HF cache with no way to fetch it: one line at once, not a minute of retries."""
    import time

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", "someorg/some-model", "--quiet")
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert "'someorg/some-model' is not in the local Hugging Face cache" in err
    assert ("HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "127.0.0.1 cannot be reached") in err
    assert time.perf_counter() - start < 30


def test_broken_local_model_folder_one_line(capsys, tmp_path):
    folder = tmp_path / "mymodel"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    code, _, err = run(capsys, "ask", str(DOCS / "notes.txt"), "q?", "--model", str(folder), "--quiet")
    assert code == 2 and err.strip().splitlines() == [err.strip()], err
    assert f"{folder} is not a usable model folder: cannot read its config.json (Expecting" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this runs the benchmark (tests/test_gpu.py)")
def test_bench_kernels_without_a_gpu_is_one_line(capsys):
    code, out, err = run(capsys, "bench", "--kernels", "--lengths", "1k")
    assert code == 2 and err.strip() == "tmix: error: tmix bench --kernels times CUDA kernels and needs a GPU"


def test_ask_about_a_folder(capsys, tiny_dir, tmp_path):
    folder = tmp_path / "minutes"
    folder.mkdir()
    (folder / "b.txt").write_text("The architect is Maren Lie.\n")
    (folder / "a.txt").write_text("The project manager is Tomas Brekke.\n")
    (folder / "scan.png").write_bytes(bytes.fromhex("89504e470d0a1a0a") + bytes(32))
    args = ("--model", tiny_dir, "--max-new-tokens", "4", *TINY)
    code, _, err = run(capsys, "ask", str(folder), "Who is the architect?", *args)
    assert code == 0, err
    assert "a.txt + b.txt" in err and "skipped scan.png" in err
    code, _, err = run(capsys, "ask", str(tmp_path / "minutes" / "a.txt"), str(folder), *args)
    assert code == 2 and "is a folder; put the question last" in err


def test_help_cache_and_bad_input_do_not_import_torch(tmp_path):
    """--help, `cache ls` and input errors answer at once: torch/transformers load only once a model is needed."""
    code = ("import sys\nfrom tmixcli.cli import main\n"
            "for argv in (['--help'], ['cache', 'ls'], ['ask', sys.argv[1], 'q'], ['prefill', sys.argv[1]],\n"
            "             ['ask', '--kv', sys.argv[2], 'q']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    env = {**os.environ, "TMIX_CACHE_DIR": str(tmp_path / "cache")}
    bad_kv = tmp_path / "notes.safetensors"
    bad_kv.write_text("not a KV file")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.pdf"), str(bad_kv)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert "HEAVY []" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("tmix: error:") == 3 and "Traceback" not in r.stderr
