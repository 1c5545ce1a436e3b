"""What `--help`, `--version` and usage errors say: plain metavars for every argument and option (no typer type names),
and a hint for a document whose name starts with '-'."""

from __future__ import annotations

import re

import pytest
import typer

from runcli import run
from tmixcli import cli


def command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of the app, as the words that name it (`()` the app itself, `("cache", "rm")`, ...)."""
    subs = getattr(command, "commands", {})
    return [path, *[p for name, sub in subs.items() for p in command_paths(sub, (*path, name))]]


COMMANDS = command_paths(typer.main.get_command(cli.app))


def test_every_command_is_scanned():
    names = {" ".join(p) for p in COMMANDS}
    assert {"ask", "prefill", "chat", "serve", "bench", "eval", "calibrate", "cache ls", "cache info", "cache rm",
            "cache clear", "cache prune"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tmix")
def test_help_names_no_types(capsys, path):
    """No `<list[str]>`, `<int>` or `{FILE}`: arguments and options show plain metavars (FILE... QUESTION, N)."""
    code, out, err = run(capsys, *path, "--help")
    assert code == 0 and out.startswith("Usage: tmix"), err
    assert not re.search(r"<[\w\[\]|, .]+>", out) and "{" not in out and "}" not in out, out


def test_usage_lines_read_as_the_readme_writes_them(capsys):
    usages = {" ".join(p): run(capsys, *p, "--help")[1].splitlines()[0] for p in COMMANDS}
    assert usages["ask"] == "Usage: tmix ask [OPTIONS] FILE... QUESTION"
    assert usages["prefill"] == "Usage: tmix prefill [OPTIONS] FILE..."
    assert usages["chat"] == "Usage: tmix chat [OPTIONS] [FILE...]"
    assert usages["cache rm"] == "Usage: tmix cache rm [OPTIONS] KEY..."
    assert usages["cache info"] == "Usage: tmix cache info [OPTIONS] PATH_OR_KEY"
    assert "--max-size SIZE" in run(capsys, "cache", "prune", "--help")[1]


def test_a_document_named_like_an_option_gets_a_hint(capsys, monkeypatch, tmp_path):
    """`tmix ask -dash.md Q`: click reads -d as an option; the line says how to give that file instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-dash.md").write_text("The project lead is Ingrid.\n")
    code, out, err = run(capsys, "ask", "-dash.md", "Who is the project lead?")
    assert code == 2 and out == ""
    assert err == ("tmix: error: no such option: -d; a file whose name starts with '-' must be written ./-dash.md "
                   "(or put -- before it, after all the options)\n"), err
    code, _, err = run(capsys, "ask", "notes.md", "Q?", "--bogus")
    assert code == 2 and err == "tmix: error: no such option: --bogus (see 'tmix ask --help')\n", err


def test_version(capsys):
    from tmixcli import __version__

    code, out, err = run(capsys, "--version")
    assert code == 0 and out.strip() == f"tmix {__version__}" and not err


@pytest.mark.parametrize("argv", [[], ["cache"]])
def test_bare_command_prints_help(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and "Usage: tmix" in out + err and "Traceback" not in err
