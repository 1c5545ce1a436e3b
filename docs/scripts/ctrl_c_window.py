"""Ctrl-C at 0, 2, 4, ... ms after starting `SCRIPT ask notes.txt Who?`: how many runs end in Python's traceback, in
one line ("tmix: interrupted", exit 130), or killed by SIGINT (before Python set its handler: silent, exit 130).

Usage: python docs/scripts/ctrl_c_window.py SCRIPT [REPEATS] [UP_TO_MS]   (SCRIPT: a `tmix` console script)
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "sample_docs" / "notes.txt"


def outcome(script: str, delay_ms: int) -> str:
    proc = subprocess.Popen([script, "ask", str(DOC), "Who?", "--no-cache"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay_ms / 1000)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate()[1].decode(errors="replace")
    if "Traceback" in err or "KeyboardInterrupt" in err:
        return "traceback"
    if proc.returncode == 130 and err.strip() == "tmix: interrupted":
        return "one line"
    return "killed by SIGINT" if proc.returncode == -signal.SIGINT else f"exit {proc.returncode}"


def main() -> None:
    script = sys.argv[1]
    repeats, up_to = (int(a) for a in (sys.argv[2:] + ["3", "80"])[:2])
    counts, tracebacks = collections.Counter(), collections.Counter()
    for _ in range(repeats):
        for delay in range(0, up_to, 2):
            kind = outcome(script, delay)
            counts[kind] += 1
            tracebacks[delay] += kind == "traceback"
    print(dict(counts), "tracebacks by delay (ms):", {d: n for d, n in sorted(tracebacks.items()) if n})


if __name__ == "__main__":
    main()
