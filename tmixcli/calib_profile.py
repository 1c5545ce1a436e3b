"""Calibration profiles: where a model's profile is saved, written atomically and read back (the user's saved one,
else a shipped one), and when one is too short to keep."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tmixcli.config import default_start_layer, triangle_span
from tmixcli.errors import TmixError
from tmixcli.sizes import kilo


def min_save_length(n_init: int, n_local: int, last_n: int) -> int:
    """The shortest eval length whose profile is saved and used: below it the triangle leaves out too little."""
    return 2 * triangle_span(n_init, n_local, last_n)


def short_note(length: int, n_init: int, n_local: int, last_n: int) -> str | None:
    """Why a profile calibrated at `length` tokens is not saved, or None when it is long enough."""
    least = min_save_length(n_init, n_local, last_n)
    if length >= least:
        return None
    return (f"at {length} tokens the triangle leaves out too little to stand for long documents "
            f"(a saved profile needs --length {least} or more)")


def profile_label(profile: dict) -> str:
    """How the status line names a profile: "calibrated profile at 6K tokens, shipped with tmix"."""
    length = (profile.get("settings") or {}).get("length")
    at = f" at {kilo(length)} tokens" if isinstance(length, int) else ""
    return f"calibrated profile{at}" + (", shipped with tmix" if profile.get("source") == "shipped" else "")


def profile_path(fingerprint: str, create: bool = False) -> Path:
    """Where this model's saved profile is; create=True makes its folder (TmixError when it cannot be made)."""
    from tmixcli.paths import cache_subdir

    return cache_subdir("profiles", create) / f"{fingerprint[:24]}.json"


def save_profile(profile: dict) -> Path:
    """Write the profile atomically (temp file in the same dir, then os.replace); TmixError when it cannot be."""
    path = profile_path(profile["fingerprint"], create=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise TmixError(_cannot_save(path.parent, err)) from None
        raise
    return path


def keep_profile(profile: dict) -> None:
    """Save the profile, recording its path; or, when it cannot be saved, why (the report still shows the result)."""
    try:
        profile["path"] = str(save_profile(profile))
    except TmixError as err:
        profile["save_error"] = str(err)


def without_saved(fingerprint: str, model_type: str, num_layers: int) -> dict:
    """The start layer runs of this model take once its saved profile is deleted, and where it comes from: the shipped
    profile, else the default (the paper's start layer, else half the layers)."""
    shipped = _read_profile(BUILTIN_DIR / f"{fingerprint[:24]}.json", fingerprint)
    if shipped is not None:
        return {"start_layer": shipped["start_layer"], "source": profile_label(dict(shipped, source="shipped"))}
    return {"start_layer": default_start_layer(model_type, num_layers), "source": "default"}


def check_profile_folder() -> None:
    """Refuse a profiles folder where no profile can be written before calibrating, not after (a trial temp file)."""
    from tmixcli.paths import cache_subdir

    folder = cache_subdir("profiles")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".profile-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise TmixError(_cannot_save(folder, err)) from None


def _cannot_save(folder: Path, err: OSError) -> str:
    return f"cannot save the calibration profile in {folder}: {err.strerror or err}"


BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"  # shipped profiles (the embedded default model)


def load_profile(fingerprint: str) -> dict | None:
    """This model's profile: the user's saved one, else a shipped one; None when missing or invalid.

    The result's "source" says which ("saved" or "shipped")."""
    for source, path in (("saved", profile_path(fingerprint)), ("shipped", BUILTIN_DIR / f"{fingerprint[:24]}.json")):
        data = _read_profile(path, fingerprint)
        if data is not None:
            return dict(data, source=source)
    return None


def _read_profile(path: Path, fingerprint: str) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    if not isinstance(data.get("start_layer"), int) or isinstance(data["start_layer"], bool):
        return None
    return None if _too_short(data) else data


def _too_short(data: dict) -> bool:
    """A profile calibrated at a length under `min_save_length` (saved by an older tmix): not used."""
    length, params = (data.get("settings") or {}).get("length"), data.get("params") or {}
    try:
        return isinstance(length, int) and short_note(length, params["n_init"], params["n_local"],
                                                      params["last_n"]) is not None
    except (KeyError, TypeError):
        return False
