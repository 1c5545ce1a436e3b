"""How `--help` shows arguments: by their metavar alone ("FILE... QUESTION"), as options are, not with typer's type
("<list[str]>") after them nor its braces around a required one in the usage line."""

from __future__ import annotations

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
