"""Option values refused in one line before the model loads: seeds, tolerances, TMIX_THREADS, model folders."""

from __future__ import annotations

import pytest

from runcli import run
from tmixcli import cli


@pytest.fixture()
def ferry(tmp_path, monkeypatch) -> str:
    """A one-line document; loading a model for it fails the test."""
    monkeypatch.setattr(cli, "_load", lambda *a, **k: pytest.fail("loaded the model for a run it refuses"))
    path = tmp_path / "ferry.txt"
    path.write_text("The ferry leaves at 07:45 from pier 3.\n")
    return str(path)


def one_error(capsys, *argv: str) -> str:
    """The single stderr line of a run refused with exit 2 and nothing on stdout."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    return err.strip()


@pytest.mark.parametrize("seed", [str(2**64), "99999999999999999999", "-5"])
def test_seed_out_of_range_is_refused_before_the_load(capsys, ferry, seed):
    for command in (["ask", ferry, "Q"], ["chat", ferry]):
        err = one_error(capsys, *command, "--temperature", "0.5", "--seed", seed)
        assert err == f"tmix: error: --seed must be from 0 to 2**64-1 (18446744073709551615), not {seed}"
