"""A document that grew: `tmix ask` starting from the KV file of its earlier version vs a fresh prefill.

Usage: python docs/scripts/grown_doc.py WORK_DIR   (default model; rows -> WORK_DIR/rows.jsonl)
Version 1 is sample_docs/report.md without its last 15% of lines; version 2 is the whole file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Who is the chief executive officer of the company?"


def ask(work: Path, cache: str) -> dict:
    env = {**os.environ, "TMIX_CACHE_DIR": str(work / cache), "TMIX_SERVE": "off"}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "tmixcli", "ask", "report.md", QUESTION, "--max-new-tokens", "24",
                          "--json"], cwd=work, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    row = json.loads(res.stdout)
    row["wall_s"] = round(time.perf_counter() - start, 2)
    return row


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lines = (ROOT / "sample_docs" / "report.md").read_text().splitlines(keepends=True)
    (work / "report.md").write_text("".join(lines[: int(len(lines) * 0.85)]))
    rows = [{"run": "version 1, cold", **ask(work, "cache")}]
    (work / "report.md").write_text("".join(lines))
    rows.append({"run": "version 2, from version 1's KV file", **ask(work, "cache")})
    rows.append({"run": "version 2, fresh cache (one-shot prefill)", **ask(work, "fresh")})
    keys = ("run", "document_tokens", "reused_tokens", "prefill_s", "ttft_s", "wall_s", "answer")
    for r in rows:
        print(json.dumps({k: r[k] for k in keys}))
    (work / "rows.jsonl").write_text("".join(json.dumps({k: r[k] for k in keys}) + "\n" for r in rows))


if __name__ == "__main__":
    main()
