"""Files embedded in an Office document (OLE objects, Word's imported parts): a Word, PowerPoint or OpenDocument file
or an HTML page is read where it sits, one level deep; any other is counted for a status line (LeftOut)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable

from tmixcli.errors import TmixError
from tmixcli.htmlcodec import decode_html
from tmixcli.htmltext import html_text
from tmixcli.leftout import LeftOut
from tmixcli.ziputil import member

_PACKAGES = (".docx", ".docm", ".dotx", ".pptx", ".pptm", ".ppsx", ".odt")  # read by the ZIP document readers
_PAGES = (".htm", ".html", ".xhtml")
_KINDS = (("excel.chart", "Excel chart"), ("excel", "Excel sheet"), ("word", "Word document"),
          ("powerpoint", "PowerPoint file"), ("equation", "equation"), ("acroexch", "PDF"), ("acrobat", "PDF"),
          ("visio", "Visio drawing"), ("package", "attached file"), ("msgraph", "chart"), ("paint", "picture"),
          ("pbrush", "picture"), ("opendocument", "OpenDocument file"), ("soffice", "OpenDocument file"))
MOST_READ = 16  # embedded documents read at most in one document; the others are counted as left out


class Embeds:
    """The embedded files of one document as its reader meets them; `read(raw, label)` gives the text of an
    embedded Word, PowerPoint or OpenDocument file (None: none is read). `left` counts what is not read."""

    def __init__(self, read: Callable[[bytes, str], str] | None = None) -> None:
        self.left = LeftOut()
        self._read = read
        self._inside = False  # reading an embedded file: its own embedded files are not read
        self._done = 0

    def object(self, zf: zipfile.ZipFile, part: str | None, prog_id: str, label: str) -> list[str]:
        """An OLE object's lines, under "Embedded Word document:" (its file `part`, None where it is linked or
        missing; `prog_id` names its program: "Excel.Sheet.12"), or none, counted as left out."""
        what = kind(prog_id)
        text = self._text(zf, part, label, _PACKAGES)
        if text is None:
            self.left.add("object", what)
            return []
        return [f"Embedded {what}:", *text.split("\n")] if text.strip() else []

    def imported(self, zf: zipfile.ZipFile, part: str | None, label: str) -> list[str]:
        """The lines of a part Word shows as its own text (w:altChunk: an HTML page or a Word file), or none,
        counted as left out."""
        text = self._text(zf, part, label, _PACKAGES + _PAGES)
        if text is None:
            suffix = (part or "").rsplit("/", 1)[-1].rpartition(".")[2].upper()
            self.left.add("object", f"imported {suffix} file" if suffix else "imported file")
            return []
        return text.split("\n")

    def _text(self, zf: zipfile.ZipFile, part: str | None, label: str, suffixes: tuple[str, ...]) -> str | None:
        """The text of embedded file `part` where it has one of `suffixes` and can be read; else None."""
        if (part is None or part not in zf.namelist() or not part.lower().endswith(suffixes) or self._inside
                or self._read is None or self._done >= MOST_READ):
            return None
        name = f"{label} ({part})"
        where, self._inside = self.left.where, True
        try:
            raw = member(zf, part, label)
            self._done += 1
            return html_text(decode_html(raw, name)) if part.lower().endswith(_PAGES) else self._read(raw, name)
        except TmixError:  # a damaged or unreadable embedded file leaves out that file, not the document
            return None
        finally:
            self.left.where, self._inside = where, False


def kind(prog_id: str) -> str:
    """What an OLE program id stands for: "Excel sheet" for "Excel.Sheet.12"; an unknown one as itself."""
    low = prog_id.lower()
    return next((name for start, name in _KINDS if low.startswith(start)), f"{prog_id} object" if prog_id
                else "object")
