"""Weights judged against free memory before the load: counted from the files' headers, refused in one line when
they cannot fit, loaded in bf16 by `--dtype auto` on the CPU when fp32 cannot fit and bf16 can."""

from __future__ import annotations

from pathlib import Path

import pytest
from runcli import TINY, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)

from tmixcli import memfit
from tmixcli.errors import TmixError
from tmixcli.sizes import human_size
from tmixcli.models import load_model
from tmixcli.weightfiles import weight_elements


def _numbers(folder: str) -> int:
    """What the folder's model holds, counted by torch (tied weights once, as safetensors stores them)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).num_parameters()


def _free(monkeypatch: pytest.MonkeyPatch, n: int | None) -> None:
    monkeypatch.setattr(memfit, "available_bytes", lambda: n)


def test_elements_of_one_file_and_of_shards(tiny_dir: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    n = _numbers(tiny_dir)
    assert weight_elements(Path(tiny_dir)) == n
    AutoModelForCausalLM.from_pretrained(tiny_dir).save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert weight_elements(tmp_path / "sharded") == n
    assert weight_elements(tmp_path) is None  # no weights: nothing known
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    assert weight_elements(tmp_path) is None


def test_refused_when_the_weights_cannot_fit(tiny_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    n = _numbers(tiny_dir)
    _free(monkeypatch, n * 4)  # fp32 weights alone, nothing beside them: bf16 fits
    with pytest.raises(TmixError) as err:
        memfit.check_room("tiny", Path(tiny_dir), 32, "cpu")
    gib = human_size(n * 4)
    assert str(err.value) == (f"model 'tiny' needs ~{gib} of memory for its 32-bit weights and the machine has {gib} "
                              f"free: --dtype bf16 halves it")
    memfit.check_room("tiny", Path(tiny_dir), 16, "cpu")
    _free(monkeypatch, n * 2)
    with pytest.raises(TmixError, match="16-bit weights .* free: a smaller model, or free memory$"):
        memfit.check_room("tiny", Path(tiny_dir), 16, "cpu")
    _free(monkeypatch, None)  # not Linux: nothing known, nothing refused
    memfit.check_room("tiny", Path(tiny_dir), 32, "cpu")


def test_auto_loads_bf16_on_the_cpu_only_when_fp32_cannot_fit(tiny_dir: str, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    import torch

    n = _numbers(tiny_dir)
    _free(monkeypatch, n * 3)
    lm = load_model(tiny_dir, "cpu", "auto", progress=True, threads="1")
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16
    err = capsys.readouterr().err
    assert "in fp32 and" in err and "of memory is free: loading them in bf16" in err and "--dtype fp32 to insist" in err
    with pytest.raises(TmixError, match="32-bit weights"):  # asked for: refused, not changed
        load_model(tiny_dir, "cpu", "fp32", progress=False, threads="1")
    _free(monkeypatch, n * 8)
    assert load_model(tiny_dir, "cpu", "auto", progress=False, threads="1").dtype == torch.float32


def test_the_cli_says_it_in_one_line_before_loading(tiny_dir: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture, tmp_path: Path,
                                                    short_doc: str) -> None:
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    _free(monkeypatch, 1000)
    code, out, err = run(capsys, "ask", short_doc, "Budget?", "--model", tiny_dir, "--device", "cpu",
                         "--max-new-tokens", "8", *TINY)
    assert code == 1 and out == "" and err.strip().splitlines()[-1].startswith("tmix: error: model ")  # not input
    assert "Traceback" not in err
    assert "of memory for its 32-bit weights and the machine has 1000 B free: a smaller model, or free memory" in err
    assert not (tmp_path / "cache" / "kv").exists() or not list((tmp_path / "cache" / "kv").iterdir())


@pytest.mark.parametrize("error,line", [
    ("gpu", "tmix: error: the GPU ran out of memory (tried to allocate 2.00 GiB): a smaller --chunk-size, a shorter "
     "document (--truncate) or --device cpu needs less"),
    ("cpu", "tmix: error: out of memory while prefilling the document (875 tokens): a shorter document (--truncate) "
     "or a smaller model needs less"),
])
def test_running_out_of_memory_is_one_line_and_no_kv_file(tiny_dir: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture, tmp_path: Path,
                                                          short_doc: str, error: str, line: str) -> None:
    import torch

    from tmixcli import generate

    def fail(*args, **kw):
        if error == "gpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                         "of 79.19 GiB of which 1.06 GiB is free. Including non-PyTorch memory, ...")
        raise MemoryError()
    monkeypatch.setattr(generate, "prefill", fail)
    monkeypatch.setenv("TMIX_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run(capsys, "ask", short_doc, "Budget?", "--model", tiny_dir, "--device", "cpu",
                         "--max-new-tokens", "8", *TINY)
    assert code == 1 and out == "" and err.strip().splitlines()[-1] == line, err
    assert "Traceback" not in err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "safetensors" in p.name]


def test_a_gguf_too_large_to_convert_is_refused_before_the_conversion(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The numbers are counted from the GGUF header (no gguf package needed); memory, then disk."""
    from test_model_files import _gguf_with_tensor

    from tmixcli import convert
    from tmixcli.modelcheck import check_gguf

    (tmp_path / "m.gguf").write_bytes(_gguf_with_tensor(4096))
    assert check_gguf(tmp_path / "m.gguf").elements == 4096
    _free(monkeypatch, 20000)  # 4096 x 4 bytes fit, not with the conversion's overhead
    with pytest.raises(TmixError) as err:
        convert.convert_gguf(tmp_path / "m.gguf", tmp_path / "models" / "m", progress=True)
    assert str(err.value) == ("converting m.gguf needs ~25.6 KiB of memory (its 4096 weights in fp32) and the machine "
                              "has 19.5 KiB free: convert it on a larger machine, or use a smaller model")
    assert capsys.readouterr().err == ""  # refused before "converting ..."
    assert list((tmp_path / "models").iterdir()) == []  # its temp folder is gone
    _free(monkeypatch, 10**9)
    monkeypatch.setattr(memfit.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(TmixError, match=r"^converting m.gguf writes ~16.0 KiB of fp32 weights and .*models has "
                                        r"1000 B free: free disk space, or set TMIX_MODELS_DIR to a larger disk$"):
        convert.convert_gguf(tmp_path / "m.gguf", tmp_path / "models" / "m", progress=True)


def test_the_gpu_free_memory_is_judged_too(tiny_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (1000, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TmixError, match=r"^model 'tiny' needs ~.* of memory for its 16-bit weights and the GPU has "
                                        r"1000 B free: a smaller model, or --device cpu$"):
        memfit.check_room("tiny", Path(tiny_dir), 16, "cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TmixError, match="1000 B free: --device-map auto spreads it over the GPUs$"):
        memfit.check_room("tiny", Path(tiny_dir), 16, "cuda", 0)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_a_gpu_load_goes_straight_to_the_gpu(tiny_dir: str) -> None:
    import torch

    lm = load_model(tiny_dir, "cuda", "auto", progress=False)
    assert lm.dtype == torch.bfloat16 and lm.model.device.type == "cuda"
    assert {p.device.type for p in lm.model.parameters()} == {"cuda"}
    assert {b.device.type for b in lm.model.buffers()} <= {"cuda"}
