"""Where tmix keeps its files: $TMIX_CACHE_DIR, default ~/.cache/tmix."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root (converted default model, KV files, calibration profiles); created on demand."""
    root = Path(os.environ.get("TMIX_CACHE_DIR") or Path.home() / ".cache" / "tmix").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
