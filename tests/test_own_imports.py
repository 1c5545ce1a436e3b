"""A broken import inside tmix's own modules fails loudly: never a missing command nor a silently dropped profile."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from runcli import ROOT


@pytest.mark.parametrize(("command", "module"), [("bench", "bench_report"), ("eval", "eval_run"),
                                                  ("calibrate", "calib_run")])
def test_a_command_whose_module_breaks_on_import_is_an_error_not_a_missing_command(command, module):
    probe = (f"import runpy, sys\nsys.modules['tmixcli.{module}'] = None  # its import fails\n"
             f"sys.argv = ['tmix', '{command}', '--help']\nrunpy.run_module('tmixcli', run_name='__main__')\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env=os.environ.copy(), timeout=300)
    assert res.returncode != 0 and "no such command" not in res.stderr, res.stderr
    assert f"import of tmixcli.{module} halted" in res.stderr, res.stderr


def test_a_broken_profile_module_is_an_error_not_a_run_without_the_calibrated_start_layer(monkeypatch):
    from tmixcli.config import Settings
    from tmixcli.opening import resolve_attention

    lm = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(model_type="llama", num_hidden_layers=4)))
    monkeypatch.setitem(sys.modules, "tmixcli.calib_profile", None)  # its import fails
    with pytest.raises(ImportError, match="tmixcli.calib_profile"):
        resolve_attention(lm, Settings())
