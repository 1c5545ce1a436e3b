"""Memory that runs out, under `ulimit -v` or for want of RAM: one line naming the step it cut short (importing
torch, loading the model, prefilling the document), the limit and advice that fits the step; exit 1, never a
traceback, never the wording of a damaged model file."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runcli import TINY, run
from runcli import short_doc as short_doc  # the fixture (the alias tells ruff it is used)

from tmixcli import oom

MMAP_FAILED = ("unable to mmap 538090408 bytes from file </m/model.safetensors>: Cannot allocate memory (12)")


def _limited(limit: int):
    """A preexec_fn that gives the child process an address-space limit of `limit` bytes (ulimit -v)."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def _torch_alloc_error() -> RuntimeError:
    """The error torch raises where the CPU allocator gets no memory (its own message, not a copy)."""
    try:
        torch.empty(1 << 60, dtype=torch.uint8)
    except RuntimeError as err:
        return err
    pytest.skip("this machine allocated 1 EiB")


def test_allocation_failures_are_told_from_other_errors(tmp_path, monkeypatch):
    assert oom.is_oom(_torch_alloc_error())
    for err in (MemoryError(), MemoryError("Cannot allocate memory (os error 12)"), RuntimeError(MMAP_FAILED),
                OSError(errno.ENOMEM, "Cannot allocate memory"),
                ImportError("libtorch_cpu.so: failed to map segment from shared object")):
        assert oom.is_oom(err), err
    for err in (RuntimeError("shape '[1, 2]' is invalid"), OSError(errno.ENOENT, "No such file or directory"),
                ImportError("No module named 'gguf'"), ValueError("memory")):
        assert not oom.is_oom(err), err
    try:
        raise RuntimeError("could not load the weights") from MemoryError()
    except RuntimeError as err:
        assert oom.is_oom(err)  # the error it was raised from counts
    (tmp_path / "heavy_mod.py").write_text("raise MemoryError\n")  # an import that runs out of memory
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import heavy_mod  # noqa: F401
    except MemoryError as err:
        assert oom.unplaced(err).startswith("out of memory while importing torch and transformers")
    assert oom.unplaced(MemoryError()).startswith("out of memory while running the model")


def test_an_import_that_fails_under_a_limit_is_put_down_to_it(monkeypatch):
    """An import that ran out of memory can leave a half-made module whose next import fails without a word on
    memory ("cannot import name ..."): under `ulimit -v` that is said as the likely cause, with the error."""
    half = ImportError("cannot import name 'NP_SUPPORTED_MODULES' from 'torch._dynamo.utils'")
    monkeypatch.setattr(oom.resource, "getrlimit", lambda which: (1 << 30, resource.RLIM_INFINITY))
    assert oom.failed_import(half) and not oom.failed_import(RuntimeError("x"))
    assert oom.unplaced(half) == (
        "importing torch and transformers failed under this process's address-space limit (1.0 GiB, ulimit -v), most "
        "likely for want of memory: raise that limit (ImportError: cannot import name 'NP_SUPPORTED_MODULES' from "
        "'torch._dynamo.utils')")
    assert str(oom.error("prefilling the document", oom.DOCUMENT_ADVICE, "875 tokens")) == (
        "out of memory while prefilling the document (875 tokens; this process's address space is limited to 1.0 GiB "
        "by ulimit -v): a shorter document (--truncate) or a smaller model needs less, or raise that limit")
    monkeypatch.setattr(oom.resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert not oom.failed_import(half)


def test_a_limit_too_low_for_torch_is_one_line_before_its_import(tiny_dir, short_doc):
    """Under ~640 MiB torch's import can crash in native code (OpenBLAS, std::bad_alloc) with no line after it:
    refused first. `tmix cache` and `text`, which never import torch, still run."""
    argv = [sys.executable, "-m", "tmixcli"]
    res = subprocess.run([*argv, "ask", short_doc, "Who?", "--model", tiny_dir, *TINY], capture_output=True,
                         text=True, preexec_fn=_limited(400 << 20), timeout=120)
    assert res.returncode == 1 and res.stdout == "", res.stderr
    assert res.stderr == ("tmix: error: this process's address space is limited to 400.0 MiB by ulimit -v, less than "
                          "importing torch takes (over 640.0 MiB): raise that limit\n")
    res = subprocess.run([*argv, "cache", "ls"], capture_output=True, text=True, preexec_fn=_limited(400 << 20),
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("no KV files in "), res.stderr


_LOAD_UNDER_LIMIT = """
import resource, sys
import torch, tokenizers, transformers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
from tmixcli import cli, models, opening

def address_space():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

resource.setrlimit(resource.RLIMIT_AS, (address_space() + (300 << 20), resource.RLIM_INFINITY))
cli.main(sys.argv[1:])
"""


@pytest.mark.model
def test_weights_past_the_limit_are_a_load_step_line(short_doc):
    """The default model (513 MiB of fp32 weights) with 300 MiB of address space left after the imports: its load
    runs out, whichever allocation fails (safetensors' mmap, a tensor), and says so, exit 1 (it was exit 2, as if the
    model file were damaged, or blamed the document)."""
    res = subprocess.run([sys.executable, "-c", _LOAD_UNDER_LIMIT, "ask", short_doc, "Who?", "--no-cache",
                          "--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "2", "-q"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1 and res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("tmix: error: out of memory while loading model 'smollm2-135m-instruct' (its 32-bit "
                                 "weights take ~513.1 MiB; this process's address space is limited to "), res.stderr
    assert res.stderr.endswith(" by ulimit -v): a smaller model needs less, or raise that limit\n"), res.stderr


@pytest.mark.parametrize("raised", [MemoryError("Cannot allocate memory (os error 12)"), RuntimeError(MMAP_FAILED)])
def test_a_load_that_runs_out_is_not_a_damaged_model(capsys, monkeypatch, tiny_dir, short_doc, raised):
    """safetensors' MemoryError and its mmap RuntimeError, as seen under `ulimit -v` 1.2 and 2 GB."""
    import transformers

    def out_of_memory(*args, **kw):
        raise raised
    monkeypatch.setattr(oom, "address_limit", lambda: None)  # the test run's own limit, if any, is not the point
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", out_of_memory)
    code, out, err = run(capsys, "ask", short_doc, "Who?", "--model", tiny_dir, "--device", "cpu", "--dtype", "fp32",
                         "--max-new-tokens", "8", *TINY)
    name = Path(tiny_dir).name
    assert code == 1 and out == "", err
    assert err.strip().splitlines()[-1].startswith(f"tmix: error: out of memory while loading model '{name}' (its "
                                                   "32-bit weights take ~"), err
    assert err.strip().endswith("): --dtype bf16 (half the memory) or a smaller model needs less"), err


def test_a_prefill_that_runs_out_names_the_document_step(capsys, monkeypatch, tiny_dir, short_doc):
    """torch's own allocation error during the prefill (a traceback before): the prefill step, the document advice."""
    from tmixcli import generate

    def prefill(*args, **kw):
        raise _torch_alloc_error()
    monkeypatch.setattr(oom, "address_limit", lambda: None)
    monkeypatch.setattr(generate, "prefill", prefill)
    code, out, err = run(capsys, "ask", short_doc, "Who?", "--model", tiny_dir, "--max-new-tokens", "8", *TINY)
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("tmix: error: out of memory while prefilling the document (875 tokens): a "
                                            "shorter document (--truncate) or a smaller model needs less"), err
