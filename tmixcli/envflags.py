"""On/off switches set by TMIX_* environment variables, refused in one line naming the variable when mistyped."""

from __future__ import annotations

import os

from tmixcli.errors import TmixError

ON = ("1", "on", "yes", "true")
OFF = ("0", "off", "no", "false")
SWITCHES = ("TMIX_SERVE", "TMIX_CPU_STEP", "TMIX_CUDA_GRAPHS")  # each on unless set to an off value


def switch(name: str) -> bool:
    """Whether the switch `name` is on (unset or empty: on); TmixError naming it for a value that is neither."""
    value = os.environ.get(name, "")
    word = value.strip().lower()
    if word in ("", *ON):
        return True
    if word in OFF:
        return False
    raise TmixError(f"{name} must be on or off (1/0, yes/no, true/false), not {value!r}")


def check_switches() -> None:
    """Refuse a mistyped TMIX_SERVE, TMIX_CPU_STEP or TMIX_CUDA_GRAPHS before any work."""
    for name in SWITCHES:
        switch(name)
