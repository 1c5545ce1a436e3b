"""Whether an option came from its environment variable (TMIX_MODEL, TMIX_THREADS) or the command line is told by
click's parameter source, so it holds where the app is invoked without tmix's main (CliRunner, the app run
directly), which never sets the arguments main sees."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tmixcli import cli_options
from tmixcli.cli import app
from tmixcli.errors import TmixError

COMMANDS = (("ask", "{doc}", "Who?"), ("prefill", "{doc}"), ("chat", "{doc}"), ("serve",), ("text", "{doc}",
            "--truncate"), ("bench", "--lengths", "1k"), ("eval",), ("calibrate",))


@pytest.fixture()
def doc(tmp_path, monkeypatch) -> str:
    """A one-line document, in a folder without `./nope`; tmix's main has not run (no arguments of its own)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_options, "ARGV", [])
    path = tmp_path / "small.txt"
    path.write_text("The gardener is Kwame Asante.\n")
    return str(path)


def _error(*argv: str) -> str:
    """The TmixError of `tmix argv` run by CliRunner on the app itself (its message), or '' where none was raised."""
    result = CliRunner().invoke(app, list(argv))
    return str(result.exception) if isinstance(result.exception, TmixError) else ""


def test_a_model_given_on_the_command_line_is_not_called_tmix_model(doc, monkeypatch):
    monkeypatch.setenv("TMIX_MODEL", "./nope")
    for command in COMMANDS:
        argv = [a.format(doc=doc) for a in command]
        assert _error(*argv, "--model", "./nope") == "model directory not found: ./nope", argv
        assert _error(*argv) == "model directory not found: ./nope (TMIX_MODEL)", argv


def test_threads_named_by_where_the_value_came_from(doc, monkeypatch):
    assert _error("ask", doc, "Who?", "--threads", "abc").startswith("--threads must be 'auto' or a number")
    monkeypatch.setenv("TMIX_THREADS", "abc")
    assert _error("ask", doc, "Who?").startswith("TMIX_THREADS must be 'auto' or a number")
    assert _error("eval").startswith("TMIX_THREADS must be 'auto' or a number")  # eval has no --threads


def test_text_refuses_max_new_tokens_without_truncate(doc):
    assert _error("text", doc, "--max-new-tokens", "5") == ("--max-new-tokens only changes what --truncate keeps: "
                                                            "give it with --truncate")
    result = CliRunner().invoke(app, ["text", doc])
    assert result.exit_code == 0 and "Kwame Asante" in result.stdout


def test_bench_arch_leaves_tmix_model_alone_without_main(doc, monkeypatch):
    """--arch builds its own model: an exported TMIX_MODEL gives way to it (137c1bb), a --model given does not."""
    monkeypatch.setenv("TMIX_MODEL", "./nope")
    err = _error("bench", "--arch", "no-such-arch", "--lengths", "1k")
    assert "no-such-arch" in err and "TMIX_MODEL" not in err and "not both" not in err, err
    assert _error("bench", "--arch", "no-such-arch", "--model", "./nope") == "give either --model or --arch, not both"
