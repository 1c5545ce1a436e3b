"""The key clients find `tmix serve` by: equal settings meet however they are spelled, different ones never do."""

from __future__ import annotations

import importlib.util
import json
import os
from types import SimpleNamespace

import pytest

from tmixcli import serverkey
from tmixcli.paths import DEFAULT_MODEL
from tmixcli.serverkey import server_key


def key(model=None, device="auto", dtype="auto", device_map=None, compile="off", cuda=False) -> str:
    return server_key(model, device, dtype, device_map, compile, cuda)


def test_auto_means_what_it_resolves_to():
    cpu = key()
    assert cpu == key(device="cpu") == key(device="cpu", dtype="fp32") == key(dtype="fp32")
    assert len({cpu, key(dtype="bf16"), key(dtype="fp16"), key(cuda=True)}) == 4
    gpu = key(cuda=True)
    assert gpu == key(device="cuda", dtype="bf16") == key(device="cuda:0", cuda=False) == key(device="cuda")
    assert len({gpu, key(device="cuda:1"), key(cuda=True, dtype="fp32"), key(device="cpu", dtype="bf16")}) == 4
    assert key(compile="auto") == cpu != key(compile="on")  # auto compiles on CUDA only
    assert key(compile="auto", cuda=True) == key(compile="on", cuda=True) != gpu
    assert key(device_map="auto") != cpu


def test_the_default_model_has_one_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("TMIX_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / DEFAULT_MODEL).mkdir(parents=True)
    default = key()
    assert default == key("") == key(DEFAULT_MODEL) == key(str(tmp_path / "models" / DEFAULT_MODEL))
    assert default != key("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_a_model_path_is_the_folder_it_names(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    here = key("m")
    assert here == key("./m") == key(str(tmp_path / "m")) == key("~/m") == key("link") == key("other/../m")
    assert json.loads(here)["model"] == ["path", str(tmp_path / "m")]
    assert here != key("other") and here != key()
    monkeypatch.chdir(tmp_path / "other")
    assert key("m") != here  # no folder m here: a hub id, not the folder of another working folder


def test_which_gpus_are_visible_counts_only_for_cuda(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu, cpu = key(device="cuda"), key(device="cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert key(device="cuda") != gpu and key(device="cpu") == cpu


def _fake_torch(tmp_path, monkeypatch, cuda: str, nodes: bool) -> None:
    """A torch build (its version.py) and the GPU device nodes gpu_here sees."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(f"from typing import Optional\n__version__ = '2.13.0'\n"
                                                    f"cuda: Optional[str] = {cuda}\nhip: Optional[str] = None\n")
    spec = SimpleNamespace(submodule_search_locations=[str(tmp_path / "torch")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "torch" else None)
    monkeypatch.setattr(serverkey.glob, "glob", lambda pattern: ["/dev/nvidia0"] if nodes else [])


@pytest.mark.parametrize("cuda,nodes,visible,expected", [
    ("'12.8'", True, None, True), ("'12.8'", True, "0", True), ("'12.8'", True, "GPU-5e1f", True),
    ("None", True, None, False), ("'12.8'", False, None, False), ("'12.8'", True, "", False),
    ("'12.8'", True, "-1", False)])
def test_gpu_here_without_torch(cuda, nodes, visible, expected, tmp_path, monkeypatch):
    _fake_torch(tmp_path, monkeypatch, cuda, nodes)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert serverkey.gpu_here() is expected
    assert key(cuda=None) == key(cuda=expected)


def test_gpu_here_agrees_with_torch_on_this_machine():
    import torch

    assert serverkey.gpu_here() == torch.cuda.is_available(), os.environ.get("CUDA_VISIBLE_DEVICES")
