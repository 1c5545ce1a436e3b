"""Environment variables said as they act: TMIX_MODEL named in its errors and in bench/eval/calibrate's help,
TMIX_CACHE_DIR named only where it chose the cache folder, TMIX_THREADS's auto in any case."""

from __future__ import annotations

import pytest

from runcli import run
from tmixcli.cli_options import check_threads


@pytest.fixture()
def doc(tmp_path) -> str:
    path = tmp_path / "small.txt"
    path.write_text("The gardener is Kwame Asante.\n")
    return str(path)


def test_a_bad_tmix_model_is_named_in_its_error(capsys, monkeypatch, tmp_path, doc):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMIX_MODEL", "./nope")
    for argv in (("ask", doc, "Who?"), ("prefill", doc), ("bench", "--lengths", "1k"), ("eval",), ("calibrate",)):
        code, out, err = run(capsys, *argv)
        assert (code, out, err) == (2, "", "tmix: error: model directory not found: ./nope (TMIX_MODEL)\n"), argv
    code, _, err = run(capsys, "ask", doc, "Who?", "--model", "./nope")  # given as --model: the flag is plain
    assert (code, err) == (2, "tmix: error: model directory not found: ./nope\n")
    (tmp_path / "y.gguf").write_bytes(b"not a gguf")
    monkeypatch.setenv("TMIX_MODEL", "y.gguf")
    code, _, err = run(capsys, "ask", doc, "Who?")
    assert code == 2 and err.startswith("tmix: error: y.gguf (TMIX_MODEL) is not a GGUF model file"), err
    monkeypatch.setenv("TMIX_MODEL", "no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "ask", doc, "Who?")
    assert code == 2 and err.startswith("tmix: error: model 'no-such-model' (TMIX_MODEL) is not in the local Hugging "
                                        "Face cache and HF_HUB_OFFLINE is set"), err


def test_bench_eval_and_calibrate_say_they_follow_tmix_model(capsys):
    for command in ("bench", "eval", "calibrate"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "TMIX_MODEL" in " ".join(out.split()), command


def test_bench_arch_leaves_tmix_model_alone(capsys, monkeypatch):
    """--arch builds its own model: an exported TMIX_MODEL is not "--model and --arch both"."""
    monkeypatch.setenv("TMIX_MODEL", "./nope")
    code, _, err = run(capsys, "bench", "--arch", "no-such-arch", "--lengths", "1k")
    assert code == 2 and "no-such-arch" in err and "TMIX_MODEL" not in err and "not both" not in err, err
    code, _, err = run(capsys, "bench", "--arch", "no-such-arch", "--model", "./nope", "--lengths", "1k")
    assert code == 2 and err == "tmix: error: give either --model or --arch, not both\n", err


def test_the_cache_folder_names_tmix_cache_dir_only_where_it_chose_it(capsys, monkeypatch, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TMIX_CACHE_DIR")
    code, _, err = run(capsys, "cache", "ls")
    assert code == 2 and err == (f"tmix: error: cannot use the cache folder {tmp_path}/home/.cache/tmix (set "
                                 "TMIX_CACHE_DIR to use another): a part of its path is a file, not a folder\n"), err
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "home" / ".cache" / "tmix"))
    code, _, err = run(capsys, "cache", "ls")
    assert code == 2 and err == (f"tmix: error: cannot use the cache folder {tmp_path}/home/.cache/tmix "
                                 "(TMIX_CACHE_DIR): a part of its path is a file, not a folder\n"), err


def test_tmix_threads_takes_auto_in_any_case(monkeypatch):
    from tmixcli.threads import configure_threads

    for spelling in ("AUTO", "Auto", "auto"):
        monkeypatch.setenv("TMIX_THREADS", spelling)
        check_threads(None)
        check_threads(spelling)
        assert configure_threads() >= 1
        assert configure_threads(spelling) >= 1


def test_serve_help_says_what_threads_means_for_the_server(capsys):
    code, out, _ = run(capsys, "serve", "--help")
    text = " ".join(out.split())
    assert code == 0 and "uses the server's" not in text
    assert "CPU threads for each request: a number, or auto" in text
