"""Time and peak memory of reading a big generated .docx and .html (text far past the default model's cap), the page
from stdin too: refused, and kept in part with --truncate, each in a fresh process; for a kept part, whether the
document's sha256 is the file's and the kept text's own sha256 (to compare across versions).

Usage: python docs/scripts/big_office.py WORK_DIR [MB_OF_TEXT]   (default 100; one JSON line per run on stdout)
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

WORDS = ("the company revenue growth market quarter board director strategy customer product service region annual "
         "report shareholders energy fund capital investment risk").split()
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
RUN = """
import hashlib, json, re, sys, time
from tmixcli.documents import load_document
from tmixcli.errors import TmixError
from tmixcli.textcap import Budget, files_cap
start = time.perf_counter()
try:
    doc = load_document(sys.argv[1], budget=Budget(sys.argv[2] == "truncate", lambda: files_cap(None)))
    outcome, digests = f"{len(doc.text)} characters kept", [doc.sha256, hashlib.sha256(doc.text.encode()).hexdigest()]
except TmixError as err:
    outcome, digests = str(err)[:90], None
seconds = time.perf_counter() - start
peak = int(re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1)) >> 10
print(json.dumps({"file": sys.argv[1], "mode": sys.argv[2], "seconds": round(seconds, 2), "peak_rss_mib": peak,
                  "outcome": outcome, "digests": digests}))
"""


def paragraphs(mb: int):
    """Paragraphs of random words, about `mb` MB of text in all."""
    rng, size = random.Random(0), 0
    while size < mb * 1_000_000:
        text = " ".join(rng.choice(WORDS) for _ in range(60)) + "."
        size += len(text) + 1
        yield text


def build(work: Path, mb: int) -> list[Path]:
    docx, html = work / f"big{mb}.docx", work / f"big{mb}.html"
    with zipfile.ZipFile(docx, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(f'<w:document xmlns:w="{W_NS}"><w:body>'.encode())
            for text in paragraphs(mb):
                f.write(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>".encode())
            f.write(b"</w:body></w:document>")
    with html.open("w") as f:
        f.write("<!doctype html><html><body>")
        for text in paragraphs(mb):
            f.write(f"<p>{text}</p>\n")
        f.write("</body></html>")
    return [docx, html]


def main() -> None:
    work, mb = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100
    work.mkdir(parents=True, exist_ok=True)
    for path in build(work, mb):
        whole = hashlib.sha256(path.read_bytes()).hexdigest()
        for mode, source in (("refuse", str(path)), ("truncate", str(path))) + \
                (("refuse", "-"), ("truncate", "-")) * (path.suffix == ".html"):  # the page on stdin too
            with path.open("rb") as stdin:
                out = subprocess.run([sys.executable, "-c", RUN, source, mode], stdin=stdin, capture_output=True,
                                     text=True)
            try:
                row = json.loads(out.stdout)
            except ValueError:
                print(out.stderr.strip()[-300:], flush=True)
                continue
            row["file"] = path.name if source != "-" else f"stdin < {path.name}"
            digests = row.pop("digests")
            if digests:  # the document's sha256 (its KV cache key) against the file's, and the kept text's
                row.update(sha256_is_the_files=digests[0] == whole, text_sha256=digests[1][:16])
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
