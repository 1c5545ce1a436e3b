"""Run a test file's `--interp` entry point under TRITON_INTERPRET=1 in a subprocess (Triton kernels on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def interpreter_results(test_file: str) -> dict:
    """The JSON object the file's `--interp` run prints on its last line. Skipped where CUDA is: there the same cases
    run compiled (the GPU tests), and triton 3.6's interpreter fails on numpy 2 scalars."""
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the kernels are tested compiled on the GPU instead of under TRITON_INTERPRET")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, test_file, "--interp"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
