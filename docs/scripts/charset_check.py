"""How tmix reads text files in legacy encodings, on real text found on this machine: translations of the system's
gettext catalogs (Western European in Windows-1252, Central European in Windows-1250 / ISO-8859-2, UTF-16 without a
byte-order mark or any ASCII, legacy CJK, Cyrillic and Thai codecs), chardet's labelled test files where installed,
and a scan of system files. One JSON line per check, with counts of each outcome.

Usage: python docs/scripts/charset_check.py [FILES_TO_SCAN] [CHARDET_TESTS_DIR]   (default 20000 and none)
"""

from __future__ import annotations

import gettext
import glob
import json
import os
import random
import re
import sys
from collections import Counter

from tmixcli.errors import TmixError

try:
    from tmixcli.textfile import text_file
except ImportError:  # tmixcli before documents.py was split (56f24ac): the same reader, under its old name
    from tmixcli.documents import _text_file as text_file

WESTERN = ("fr de es pt pt_BR da nb nn sv is fi it ca nl et ga gl eu af oc br fo gd sq id ms en_GB cy eo tr vi lt lv "
           "az ku uz").split()
CENTRAL = "cs sk pl hu sl hr ro bs sr@latin".split()
UNSPACED = "zh_CN zh_TW ja th".split()
SPACED = "ru uk bg el ar he hi ko ka hy am".split()
LEGACY = {"ja": ["cp932", "euc_jp"], "zh_CN": ["gbk", "gb18030"], "zh_TW": ["big5"], "ko": ["cp949"],
          "ru": ["koi8_r", "cp1251", "iso8859_5", "cp866"], "el": ["cp1253"], "he": ["cp1255"], "ar": ["cp1256"],
          "th": ["tis_620"]}


def catalogs(langs: set[str]) -> dict[str, list[str]]:
    """Translated messages of 20 characters or more per language, format placeholders dropped."""
    out: dict[str, list[str]] = {}
    for mo in sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo")):
        lang = mo.split("/")[-3]
        if lang not in langs:
            continue
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, ValueError, UnicodeError):
            continue
        for key, text in catalog.items():
            key = key[0] if isinstance(key, tuple) else key
            if key and isinstance(text, str) and text != key:
                text = re.sub(r"%[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]|\{[^}]*\}|_", "", text).strip()
                if len(text) >= 20:
                    out.setdefault(lang, []).append(text)
    for lang, texts in out.items():
        random.Random(lang).shuffle(texts)
    return out


def outcome(raw: bytes) -> str:
    """How tmix reads `raw` as a text file."""
    try:
        _, note = text_file(raw, "x")
    except TmixError as err:
        return "refused (Central European)" if "Central European" in str(err) else "refused"
    if note is None:
        return "UTF-8"
    return "UTF-16" if "byte-order" in note else "Windows-1252" if "Windows-1252 (" in note else "UTF-8 + stray bytes"


def chunks(texts: list[str], codec: str, size: int, most: int = 400) -> list[bytes]:
    """Up to `most` pieces of about `size` bytes of `texts` (one per line) in `codec`, skipping what it cannot encode
    (Romanian ș, ț as the ş, ţ of the 8-bit codecs)."""
    out, piece = [], b""
    for text in texts:
        text = text.translate(str.maketrans("șțȘȚ", "şţŞŢ"))
        try:
            piece += (text + "\n").encode(codec)
        except UnicodeEncodeError:
            continue
        if len(piece) >= size:
            out.append(piece)
            piece = b""
        if len(out) == most:
            break
    return out


def emit(check: str, **fields) -> None:
    print(json.dumps({"check": check, **fields}, ensure_ascii=False), flush=True)


def main() -> None:
    scan = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    texts = catalogs(set(WESTERN + CENTRAL + UNSPACED + SPACED))
    for size in (600, 4000):
        for lang in WESTERN + CENTRAL:
            for codec in ("cp1252",) if lang in WESTERN else ("cp1250", "iso8859_2"):
                got = Counter(outcome(raw) for raw in chunks(texts.get(lang, []), codec, size))
                got.pop("UTF-8", None)  # pieces with no letter outside ASCII
                emit("8-bit", lang=lang, codec=codec, bytes=size, **got)
    for lang in UNSPACED + SPACED:
        bare = re.sub(r"[\x00-\x7f]", "", "".join(texts.get(lang, [])))  # no space, digit or newline
        rng = random.Random(lang)
        for n in (16, 32, 100, 1000, 3000):
            for codec in ("utf-16-le", "utf-16-be"):
                got: Counter[str] = Counter()
                for _ in range(40):
                    at = rng.randrange(max(1, len(bare) - n))
                    text = bare[at:at + n]
                    try:
                        read = text_file(text.encode(codec), "x")[0] == text
                    except TmixError:
                        read = False
                    got["read right" if read else "not read"] += 1
                emit("UTF-16 without BOM or ASCII", lang=lang, codec=codec, chars=n, **got)
    for lang, codecs in LEGACY.items():
        for codec in codecs:
            for size in (20, 100, 600, 4000):
                got = Counter(outcome(raw) for raw in chunks(texts.get(lang, []), codec, size, most=100))
                emit("legacy", lang=lang, codec=codec, bytes=size, **got)
    if len(sys.argv) > 2:
        for label in sorted(os.listdir(sys.argv[2])):
            folder = os.path.join(sys.argv[2], label)
            if os.path.isdir(folder):
                emit("chardet", label=label, **Counter(outcome(open(os.path.join(folder, name), "rb").read())
                                                       for name in sorted(os.listdir(folder))))
    files = [os.path.join(d, n) for root in ("/usr/share", "/usr/lib", "/etc") for d, _, names in os.walk(root)
             for n in names if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n))]
    random.Random(1).shuffle(files)
    got, named = Counter(), []
    for path in files[:scan]:
        try:
            with open(path, "rb") as f:
                raw = f.read(256 << 10)
        except OSError:
            continue
        got[kind := outcome(raw) if raw else "empty"] += 1
        if kind in ("UTF-16", "refused (Central European)", "Windows-1252"):
            named.append(f"{kind}: {path}")
    emit("scan", files=sum(got.values()), **got, named=named)


if __name__ == "__main__":
    main()
