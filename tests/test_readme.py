"""The README's Options section names exactly the commands that take each option."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from tmixcli.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = ("ask", "prefill", "chat", "serve", "text")
ELSEWHERE = {"--kv", "--keep-history", "--output", "-o", "--stop", "--stop-repeats", "--question"}  # one command's own


def option_names(command: str) -> set[str]:
    """Every flag `tmix COMMAND` takes, as typed."""
    params = typer.main.get_command(app).commands[command].params
    return {name for p in params for name in (*p.opts, *p.secondary_opts) if name.startswith("-")}


def readme_groups() -> list[tuple[set[str], set[str]]]:
    """(commands, flags) of each group of the README's Options section: a line "Name (`cmd`, ...):", its bullets."""
    section = README.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in section.split("\n\n") if b.strip()]
    groups = []
    for head, bullets in zip(blocks, blocks[1:]):
        if head.endswith(":") and bullets.startswith("- "):
            named = re.search(r"\(([^;)]*)", head)
            assert named, f"the group {head!r} does not say which commands take its options"
            commands = set(re.findall(r"`(\w+)`", named[1]))
            spans = re.findall(r"`([^`]*)`", bullets)
            groups.append((commands, {f for span in spans for f in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", span)}))
    return groups


def test_readme_option_groups_name_the_commands_that_take_them():
    groups = readme_groups()
    assert len(groups) >= 5
    listed: set[str] = set()
    for commands, flags in groups:
        assert commands and flags
        for flag in flags:
            assert {c for c in COMMANDS if flag in option_names(c)} == commands, flag
        listed |= flags
    every = set().union(*(option_names(c) for c in COMMANDS))
    assert every - listed == ELSEWHERE


def test_readme_layout_names_every_module():
    """Every tmixcli module is named in the README's "Repository layout" (it went stale twice without this check)."""
    section = README[README.index("- `tmixcli/`"):README.index("- `kernels/`")]
    words = set(re.findall(r"[a-z_0-9]+", section))
    folder = Path(__file__).resolve().parents[1] / "tmixcli"
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
    assert sorted(modules - words) == []
