"""Warm `tmix ask` on a 250-page PDF with and without the document index, alone and through `tmix serve`.

Usage: python docs/scripts/warm_big_pdf.py WORK_DIR [PAGES]   (default model, CPU; rows -> WORK_DIR/rows.jsonl)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from fpdf import FPDF

WORDS = ("the company revenue growth market quarter board director strategy customer product service region annual "
         "report shareholders energy fund capital investment risk").split()
QUESTION = "What is this report about?"


def build_pdf(path: Path, pages: int) -> None:
    rng = random.Random(0)
    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for _ in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 5, "\n".join(" ".join(rng.choice(WORDS) for _ in range(14)) + "." for _ in range(45)))
    pdf.output(str(path))


def tmix(args: list[str], env: dict, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "tmixcli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    return time.perf_counter() - start, res


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pages = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    build_pdf(work / "big.pdf", pages)
    env = {**os.environ, "TMIX_CACHE_DIR": str(work / "cache"), "TMIX_SERVE": "off"}
    secs, res = tmix(["prefill", "big.pdf", "--truncate", "--quiet"], env, work)
    print(f"cold prefill: {secs:.1f} s")
    ask = ["ask", "big.pdf", QUESTION, "--truncate", "--max-new-tokens", "16", "--json"]
    rows = []

    def measure(how: str, run_env: dict) -> None:
        for rep in range(3):
            for index in (False, True):
                if not index:
                    for f in (work / "cache" / "docs").glob("*.json"):
                        f.unlink()  # the document is read and tokenized again, as before the index
                secs, res = tmix(ask, run_env, work)
                out = json.loads(res.stdout)
                rows.append({"how": how, "index": index, "rep": rep, "wall_s": round(secs, 3),
                             "ttft_s": out["ttft_s"], "cache_hit": out["cache_hit"], "answer": out["answer"]})
                print(json.dumps(rows[-1]))

    measure("alone", env)
    served_env = {k: v for k, v in env.items() if k != "TMIX_SERVE"}
    server = subprocess.Popen([sys.executable, "-m", "tmixcli", "serve"], cwd=work, env=served_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not list((work / "cache" / "serve").glob("*.sock")):
            time.sleep(0.2)
        tmix(ask, served_env, work)  # the server's first request loads what it needs
        measure("served", served_env)
    finally:
        server.terminate()
        server.wait(30)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
