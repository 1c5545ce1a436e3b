"""`tmix bench`: library and Typer runs on the CPU (field presence and sanity only, no timing thresholds)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import typer
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tmixcli import bench, bench_measure, bench_run
from tmixcli.archs import ARCH_NAMES, arch_config, build_random_model, param_count
from tmixcli.bench import bench_command, parse_methods
from tmixcli.bench_report import format_csv, format_markdown
from tmixcli.bench_run import run_bench
from tmixcli.errors import TmixError
from tmixcli.listopts import parse_lengths

HEADER_KEYS = {"date", "device", "device_name", "dtype", "torch", "transformers", "triton", "git_commit", "model",
               "start_layer", "n_local", "last_n", "memory"}


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=512)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def tiny_result(tiny_model: LlamaForCausalLM) -> dict:
    return run_bench(tiny_model, lengths=[200, 400, 600], repeats=2, warmup=1, n_local=32, last_n=8, start_layer=1,
                     threads=1)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("noop")(lambda: None)  # a second command keeps "bench" a subcommand
    return app


def _check_ok_row(row: dict) -> None:
    assert row["status"] == "ok"
    assert 0 < row["ttft_min_s"] <= row["ttft_median_s"] <= row["ttft_max_s"]
    assert row["tokens_per_s"] == pytest.approx(row["length"] / row["ttft_median_s"], rel=1e-6)
    assert row["speedup_vs_dense"] > 0
    assert row["peak_mem_mib"] > 0 and row["peak_extra_mib"] >= 0
    assert row["warm_ttft_s"] > 0 and 0 < row["kv_load_s"] <= row["warm_ttft_s"]
    assert row["kv_file_mib"] > 0 and row["kv_save_s"] >= 0
    assert isinstance(row["first_token"], int)


def test_library_run(tiny_result: dict) -> None:
    assert HEADER_KEYS <= set(tiny_result["header"])
    rows = tiny_result["rows"]
    assert [(r["length"], r["method"]) for r in rows] == [
        (n, m) for n in (200, 400, 600) for m in ("dense", "trimix")]
    for row in rows[:4]:
        _check_ok_row(row)
        assert len(row["ttft_samples_s"]) == 2
    assert rows[0]["speedup_vs_dense"] == 1.0
    assert rows[2]["kv_file_mib"] == pytest.approx(rows[3]["kv_file_mib"], rel=1e-3)
    for row in rows[4:]:
        assert row["status"] == "exceeds context (512)" and row["ttft_median_s"] is None


def test_kv_file_written_during_the_timed_prefill(tiny_model: LlamaForCausalLM, tmp_path: Path) -> None:
    from tmixcli import kvread, kvwrite
    from tmixcli.generate import prefill

    ids = list(range(3, 150))
    path = tmp_path / "kv.safetensors"
    res = bench_measure.measure_ttft(tiny_model, ids, chunk_size=40, kv_path=path, meta={"model": "tiny"})
    assert res["kv_error"] is None and res["kv_save"] >= 0 and res["kv_bytes"] == path.stat().st_size
    cache, ids_back, meta = kvread.load_kv(path, "cpu")
    assert ids_back == ids and meta["model"] == "tiny"
    ref, _ = prefill(tiny_model, ids, chunk_size=40)
    for got, want in zip(kvwrite.cache_tensors(cache), kvwrite.cache_tensors(ref)):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not list(tmp_path.glob(".*"))  # no temp file left


def test_oom_is_a_row(tiny_model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench_measure.measure_ttft

    def fake(model, ids, *args, **kwargs):
        if model.config.tmix_attention["method"] == "trimix":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB")
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(bench_run, "measure_ttft", fake)
    dense, trimix = run_bench(tiny_model, lengths=[64], repeats=1, warmup=0, threads=1)["rows"]
    assert dense["status"] == "ok" and dense["ttft_median_s"] > 0
    assert trimix["status"] == "out of memory" and trimix["ttft_median_s"] is None


def test_markdown_and_csv(tiny_result: dict) -> None:
    text = format_markdown(tiny_result)
    assert "| 400 | trimix |" in text and "exceeds context (512)" in text
    parsed = list(csv.DictReader(io.StringIO(format_csv(tiny_result))))
    assert len(parsed) == 6
    assert float(parsed[1]["ttft_median_s"]) > 0 and parsed[5]["ttft_median_s"] == ""


def test_cli_json_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "ttft.png"
    args = ["bench", "--arch", "smollm2-135m", "--lengths", "256,600,9k", "--repeats", "1", "--warmup", "0",
            "--n-local", "64", "--last-n", "16", "--start-layer", "2", "--threads", "1", "--json"]
    if _has_matplotlib():
        args += ["--plot", str(png)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["header"]["start_layer"] == 2 and data["header"]["n_local"] == 64
    assert data["header"]["cpu_threads"] == 1
    rows = data["rows"]
    assert len(rows) == 6
    for row in rows[:4]:
        _check_ok_row(row)
    assert rows[4]["status"] == rows[5]["status"] == "exceeds context (8192)"
    if _has_matplotlib():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_csv_no_warm() -> None:
    args = ["bench", "--arch", "smollm2-135m", "--lengths", "128", "--repeats", "1", "--warmup", "0",
            "--methods", "trimix", "--no-warm", "--csv", "--quiet", "--threads", "1"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["method"] == "trimix" and float(row["ttft_median_s"]) > 0
    assert row["warm_ttft_s"] == "" and row["speedup_vs_dense"] == ""


@pytest.mark.parametrize("args", [["--arch", "nope"], ["--lengths", "4x"], ["--methods", "sparse"],
                                  ["--json", "--csv"], ["--arch", "smollm2-135m", "--model", "x"]])
def test_cli_refusals(args: list[str]) -> None:
    result = CliRunner().invoke(_app(), ["bench", "--lengths", "64", *args])
    assert isinstance(result.exception, TmixError)


@pytest.mark.parametrize("name,needle", [("ttft.txt", "'.txt' is not a plot type"), ("ttft", "has no file type")])
def test_plot_type_refused_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                           needle: str) -> None:
    def no_work(*args, **kw):
        raise AssertionError("the benchmark ran")
    monkeypatch.setattr(bench, "run_bench", no_work)
    result = CliRunner().invoke(_app(), ["bench", "--lengths", "64", "--plot", str(tmp_path / name)])
    assert isinstance(result.exception, TmixError) and needle in str(result.exception)
    assert ".png, .svg, .pdf" in str(result.exception) and not list(tmp_path.iterdir())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    result = CliRunner().invoke(_app(), ["bench", "--lengths", "64", "--plot", str(tmp_path / "t.png")])
    assert isinstance(result.exception, TmixError) and "needs matplotlib" in str(result.exception)


@pytest.mark.skipif(not importlib.util.find_spec("matplotlib"), reason="matplotlib not installed")
def test_plot_that_fails_keeps_the_table(tiny_result: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plot that cannot be written comes after the printed results, as one error, leaving no file behind."""
    import errno

    from matplotlib.figure import Figure

    def full(self, fname, **kw):
        Path(fname).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(bench, "run_bench", lambda *a, **kw: json.loads(json.dumps(tiny_result)))
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", full)
    result = CliRunner().invoke(_app(), ["bench", "--lengths", "64", "--plot", str(tmp_path / "t.svg"), "-q"])
    assert isinstance(result.exception, TmixError) and "No space left on device" in str(result.exception)
    assert "| 400 | trimix |" in result.stdout and not list(tmp_path.iterdir())
    monkeypatch.setattr(Figure, "savefig", real)
    result = CliRunner().invoke(_app(), ["bench", "--lengths", "64", "--plot", str(tmp_path / "t.svg"), "-q"])
    assert result.exit_code == 0 and (tmp_path / "t.svg").read_bytes().startswith(b"<?xml")
    assert [p.name for p in tmp_path.iterdir()] == ["t.svg"]


def test_parsers() -> None:
    assert parse_lengths("4k, 32k,128k,100") == [4096, 32768, 131072, 100]
    assert parse_methods("trimix,dense,trimix") == ["trimix", "dense"]


def test_archs() -> None:
    assert set(ARCH_NAMES) == {"llama-3.1-8b", "qwen2.5-7b", "smollm2-135m"}
    assert round(param_count(arch_config("llama-3.1-8b")) / 1e9, 2) == 8.03
    assert round(param_count(arch_config("qwen2.5-7b")) / 1e9, 2) == 7.62
    assert arch_config("qwen2.5-7b").max_position_embeddings == 131072
    with pytest.raises(TmixError, match="too large for a CPU"):
        build_random_model("llama-3.1-8b", "cpu", torch.bfloat16)
    with pytest.raises(TmixError, match="known archs are"):
        arch_config("gpt-5")


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading or building a model fails the test."""
    from tmixcli import archs, models

    def fail(*args, **kw):
        raise AssertionError("loaded or built a model for a run it refuses")
    monkeypatch.setattr(models, "load_model", fail)
    monkeypatch.setattr(archs, "build_random_model", fail)


def _one_error(capsys: pytest.CaptureFixture, *argv: str, code: int = 2) -> str:
    """The single stderr line of `tmix argv` refused with exit `code` (2: bad input), nothing on stdout."""
    from runcli import run

    got, out, err = run(capsys, *argv)
    assert got == code and out == "" and len(err.strip().splitlines()) == 1, (got, out, err)
    return err.strip()


def test_start_layer_past_the_model_refused_before_the_build(capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tiny_model: LlamaForCausalLM) -> None:
    """As ask and eval do: with no triangle layer 'trimix' is dense attention, and its speedup noise."""
    _no_build(monkeypatch)
    err = _one_error(capsys, "bench", "--arch", "smollm2-135m", "--lengths", "1k", "--start-layer", "31")
    assert err == "tmix: error: --start-layer 31 is past the model's 30 layers"
    with pytest.raises(TmixError, match="^--start-layer 4 is past the model's 3 layers$"):
        run_bench(tiny_model, lengths=[64], repeats=1, warmup=0, warm=False, start_layer=4, threads=1)


@pytest.mark.model
def test_start_layer_past_the_default_model_refused_before_the_load(capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _no_build(monkeypatch)
    err = _one_error(capsys, "bench", "--lengths", "1k", "--repeats", "1", "--warmup", "0", "--no-warm",
                     "--start-layer", "99")
    assert err == "tmix: error: --start-layer 99 is past the model's 30 layers"
    assert _one_error(capsys, "bench", "--lengths", "9k", "--json") == (
        "tmix: error: --lengths 9216 is past the model's context (8192 tokens): nothing to time")


def test_start_at_the_last_layer_says_trimix_is_dense(tiny_model: LlamaForCausalLM) -> None:
    said: list[str] = []
    result = run_bench(tiny_model, lengths=[64], repeats=1, warmup=0, warm=False, start_layer=3, threads=1,
                       log=said.append)
    assert result["header"]["triangle_layers"] == 0
    assert "trimix: start_layer 3 (no layer of 3 uses the triangle: dense), n_init 8" in format_markdown(result)
    assert "bench: trimix from layer 3: no layer of 3 uses the triangle: dense" in said
    inside = run_bench(tiny_model, lengths=[64], methods=["trimix"], repeats=1, warmup=0, warm=False,
                       start_layer=2, threads=1)
    assert inside["header"]["triangle_layers"] == 1 and "uses the triangle" not in format_markdown(inside)


def test_lengths_none_of_which_fit_refused_before_the_build(capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tiny_model: LlamaForCausalLM) -> None:
    """Only some lengths past the context stay rows of their own (test_cli_json_and_plot); all of them is an error."""
    _no_build(monkeypatch)
    err = _one_error(capsys, "bench", "--arch", "smollm2-135m", "--lengths", "9k,10k", "--json")
    assert err == "tmix: error: --lengths 9216, 10240 are all past the model's context (8192 tokens): nothing to time"
    with pytest.raises(TmixError, match=r"^--lengths 600 is past the model's context \(512 tokens\)"):
        run_bench(tiny_model, lengths=[600], repeats=1, warmup=0, threads=1)


def test_unknown_arch_refused_before_a_word_about_building(capsys: pytest.CaptureFixture) -> None:
    err = _one_error(capsys, "bench", "--arch", "gpt2", "--lengths", "1k")
    assert err.startswith("tmix: error: unknown arch 'gpt2': known archs are llama-3.1-8b")
    said: list[str] = []
    with pytest.raises(TmixError, match="unknown arch 'gpt2'"):
        run_bench(arch="gpt2", lengths=[64], log=said.append)
    assert said == []


def test_threads_is_the_count_of_the_whole_run(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                              tiny_dir: str) -> None:
    """--threads N holds through the model's load, whatever TMIX_THREADS says; auto is decided once at the start."""
    from runcli import run

    from tmixcli.threads import CORES

    args = ("bench", "--model", tiny_dir, "--lengths", "64", "--methods", "trimix", "--repeats", "1", "--warmup", "0",
            "--no-warm", "--json", "--device", "cpu")
    monkeypatch.setenv("TMIX_THREADS", "2")
    code, out, err = run(capsys, *args, "--threads", "1")
    assert code == 0, err
    assert json.loads(out)["header"]["cpu_threads"] == 1
    assert json.loads(out)["header"]["device_name"].endswith(" 1 torch thread)")
    monkeypatch.delenv("TMIX_THREADS")
    code, out, err = run(capsys, *args, "--threads", "auto")
    assert code == 0, err
    assert json.loads(out)["header"]["cpu_threads"] == CORES


def test_threads_refused_as_ask_refuses_them(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    _no_build(monkeypatch)
    cpus = os.cpu_count()
    args = ("bench", "--arch", "smollm2-135m", "--lengths", "1k")
    for value in ("0", str(cpus + 1), "x"):
        assert _one_error(capsys, *args, "--threads", value) == (
            f"tmix: error: --threads must be 'auto' or a number from 1 to this machine's {cpus} CPUs, not '{value}'")
    monkeypatch.setenv("TMIX_THREADS", str(cpus + 1))
    for command in (args, ("eval",), ("calibrate",)):
        assert _one_error(capsys, *command) == (
            f"tmix: error: TMIX_THREADS must be 'auto' or a number from 1 to this machine's {cpus} CPUs, "
            f"not '{cpus + 1}'"), command


def test_a_length_where_every_layer_is_dense_says_so(tiny_model: LlamaForCausalLM) -> None:
    """At n_init + n_local + last_n tokens or fewer the triangle leaves nothing out: trimix's speedup is noise."""
    said: list[str] = []
    result = run_bench(tiny_model, lengths=[40, 64], repeats=1, warmup=0, warm=False, n_local=32, last_n=8,
                       start_layer=1, threads=1, log=said.append)
    assert [(r["length"], r["method"], r["all_layers_dense"]) for r in result["rows"]] == [
        (40, "dense", True), (40, "trimix", True), (64, "dense", True), (64, "trimix", False)]
    assert ("bench: 40 tokens, trimix: the prompt's 40 tokens are within n_init + n_local + last_n = 48: every layer "
            "is dense") in said
    assert not [line for line in said if "64 tokens, trimix: the prompt" in line]
    text = format_markdown(result)
    row40, row64 = (next(line for line in text.splitlines() if line.startswith(f"| {n} | trimix |")) for n in (40, 64))
    assert row40.endswith("| ok (every layer dense) |") and row64.endswith("| ok |")
    assert text.endswith("every layer dense at 40 tokens (at most n_init + n_local + last_n = 48): the triangle "
                         "leaves nothing out there, so trimix's speedup is noise")
    rows = list(csv.DictReader(io.StringIO(format_csv(result))))
    assert [r["all_layers_dense"] for r in rows] == ["True", "True", "True", "False"]
    longer = run_bench(tiny_model, lengths=[64], repeats=1, warmup=0, warm=False, n_local=32, last_n=8,
                       start_layer=1, threads=1)
    assert "every layer dense" not in format_markdown(longer)


def test_an_arch_too_large_for_the_cpu_refused_before_building(capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The parameter count of a built-in arch is known from its shape: one line, no 'building ...' first."""
    _no_build(monkeypatch)
    err = _one_error(capsys, "bench", "--arch", "llama-3.1-8b", "--lengths", "1k", "--device", "cpu")
    assert err == ("tmix: error: llama-3.1-8b has 8.0B parameters: too large for a CPU benchmark (~30 GiB, hours per "
                   "long prefill); use a GPU, or force it (--force)")
    err = _one_error(capsys, "bench", "--arch", "qwen2.5-7b", "--lengths", "1k", "--device", "cpu", "--dtype", "bf16")
    assert err.startswith("tmix: error: qwen2.5-7b has 7.6B parameters: too large for a CPU benchmark (~14 GiB")


def test_a_forced_arch_larger_than_free_memory_refused_before_building(capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """--force lifts the parameter limit, not the memory: a run the kernel would kill without a word is one line."""
    from tmixcli import memfit

    _no_build(monkeypatch)
    monkeypatch.setattr(memfit, "available_bytes", lambda: 20 * 2**30)
    err = _one_error(capsys, "bench", "--arch", "llama-3.1-8b", "--lengths", "1k", "--device", "cpu", "--force",
                     code=1)  # the machine's memory, not the input
    assert err == ("tmix: error: llama-3.1-8b needs ~29.9 GiB of memory for its 32-bit weights and the machine has "
                   "20.0 GiB free: --dtype bf16 halves it")
    monkeypatch.setattr(memfit, "available_bytes", lambda: 10 * 2**30)
    err = _one_error(capsys, "bench", "--arch", "qwen2.5-7b", "--lengths", "1k", "--device", "cpu", "--force",
                     "--dtype", "bf16", code=1)
    assert err == ("tmix: error: qwen2.5-7b needs ~14.2 GiB of memory for its 16-bit weights and the machine has "
                   "10.0 GiB free: a smaller model, or free memory")


@pytest.mark.parametrize("argv,message", [
    (["--n-local", "0"], "--n-local must be at least 1, not 0"),
    (["--n-init", "-1"], "--n-init must be at least 0, not -1"),
    (["--last-n", "-3"], "--last-n must be at least 0, not -3"),
    (["--start-layer", "-1"], "--start-layer must be at least 0, not -1"),
    (["--lengths", "1k,,2k"], "--lengths has an empty item in '1k,,2k': remove the extra comma or give the missing "
     "value"),
    (["--lengths", "1k,"], "--lengths has an empty item in '1k,': remove the extra comma or give the missing value"),
    (["--methods", "dense,,trimix"], "--methods has an empty item in 'dense,,trimix': remove the extra comma or give "
     "the missing value"),
])
def test_option_errors_name_the_option_before_any_status_line(capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                              message: str) -> None:
    """The default model has a shipped profile, whose status line came before these errors."""
    _no_build(monkeypatch)
    assert _one_error(capsys, "bench", "--lengths", "1k", *argv) == f"tmix: error: {message}"
