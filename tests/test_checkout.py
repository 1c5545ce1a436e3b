"""The tests run this checkout's code, kernels included, in-process and in the processes they start, whichever
checkout the venv's editable install points at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tmix_kernels_is_this_checkouts():
    import tmix_kernels
    import tmix_kernels.blockwise
    import tmixcli

    for module in (tmix_kernels, tmix_kernels.blockwise, tmixcli):
        assert Path(module.__file__).resolve().is_relative_to(ROOT), \
            f"{module.__name__} comes from {module.__file__}, not this checkout ({ROOT})"


def test_a_started_process_imports_this_checkouts_kernels(tmp_path):
    probe = "import tmix_kernels.blockwise as b, tmixcli.attention as a; print(b.__file__); print(a.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr
    for file in done.stdout.split():
        assert Path(file).resolve().is_relative_to(ROOT), f"the process imported {file}, not this checkout's"
