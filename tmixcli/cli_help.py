"""How `--help` shows arguments: by their metavar alone ("FILE... QUESTION"), as options are, not with typer's type
("<list[str]>") after them nor its braces around a required one in the usage line."""

from __future__ import annotations

import os
from collections.abc import Sequence

from typer.core import TyperArgument, TyperCommand, TyperGroup


class PlainArgument(TyperArgument):
    """A typer argument shown as its metavar (which says how many it takes), in brackets where it is optional."""

    def display_type_rich(self, ctx: object) -> None:
        return None

    def _usage_display_name(self) -> str:
        name = self.metavar or self.name.upper() + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    def get_usage_pieces(self, ctx: object) -> list[str]:
        """The usage line's piece (typer 0.27 builds it from make_metavar, with braces; 0.29 from the name above)."""
        return [self._usage_display_name()]


def plain_arguments(command: TyperCommand | TyperGroup) -> None:
    """Make every argument of `command` and of its subcommands a PlainArgument."""
    for param in command.params:
        if type(param) is TyperArgument:
            param.__class__ = PlainArgument
    for sub in getattr(command, "commands", {}).values():
        plain_arguments(sub)


def option_after_dashes(group: TyperGroup, args: Sequence[str]) -> str | None:
    """Why an argument after `--` that spells an option of its command is refused (`tmix ask -- -dash.md Q --json`:
    --json would be taken as the question, Q as a missing file), unless a file has that name; None for none."""
    if "--" not in args:
        return None
    command, name = group, []
    for arg in args[:args.index("--")]:
        sub = getattr(command, "commands", {}).get(arg) if not arg.startswith("-") else None
        if sub is None:
            if hasattr(command, "commands"):
                continue
            break
        command = sub
        name.append(arg)
    options = [opt for p in command.params if p.param_type_name == "option" for opt in p.opts + p.secondary_opts]
    for arg in args[args.index("--") + 1:]:
        if any(arg == opt or (opt.startswith("--") and arg.startswith(opt + "=")) for opt in options) and \
                not os.path.lexists(arg):
            usage = " ".join(PlainArgument._usage_display_name(p) for p in command.params
                             if p.param_type_name == "argument")
            return (f"{arg} comes after --, where it is read as {usage}, not as an option: put the options before "
                    f"-- (tmix {' '.join(name)} [OPTIONS] -- {usage})")
    return None
