"""What an Office reader met but could not read (charts without data, embedded files), counted for one status line
per kind, as the PDF reader names the pages it could not read."""

from __future__ import annotations

from collections import Counter

_SAID = {  # kind -> (what one is called, why it was left out)
    "chart": ("chart", "no text or data tmix can read"),
    "diagram": ("SmartArt diagram", "no data part to read"),
    "object": ("embedded object", "tmix cannot read"),
}


class LeftOut:
    """The things one document's reader left out: each with its kind (a key of _SAID), what it is ("Excel sheet")
    and where it sits (`where`, set by the reader as it goes: "slide 3"; "" where the format has no places)."""

    def __init__(self) -> None:
        self.where = ""
        self._found: list[tuple[str, str, str]] = []  # (kind, what, where)

    def add(self, kind: str, what: str = "") -> None:
        """Count one thing of `kind` left out at the current place."""
        self._found.append((kind, what, self.where))

    def notes(self, label: str) -> tuple[str, ...]:
        """The status lines: "left out 2 embedded objects of minutes.docx that tmix cannot read: 1 Excel sheet, 1
        PDF", "left out 1 chart of deck.pptx (slide 3): no text or data tmix can read"."""
        notes = []
        for kind, (name, why) in _SAID.items():
            found = [(what, where) for k, what, where in self._found if k == kind]
            if not found:
                continue
            places = list(dict.fromkeys(where for _, where in found if where))
            at = f" ({_places(places)})" if places else ""
            whats = Counter(what for what, _ in found if what)
            listed = ", ".join(f"{n} {what}{'s' if n > 1 else ''}" for what, n in whats.items())
            many = "s" if len(found) > 1 else ""
            if kind == "object":
                notes.append(f"left out {len(found)} {name}{many} of {label}{at} that {why}: {listed}")
            else:
                notes.append(f"left out {len(found)} {name}{many} of {label}{at}: {why}")
        return tuple(notes)


def _places(places: list[str]) -> str:
    """"slide 3", "slides 2, 5" (the first 8 named) from "slide 2", "slide 5"."""
    words = [p.split(" ", 1) for p in places]
    if len({w[0] for w in words}) != 1 or any(len(w) != 2 for w in words):
        return ", ".join(places)
    shown = [w[1] for w in words[:8]] + (["..."] if len(words) > 8 else [])
    return f"{words[0][0]}{'s' if len(words) > 1 else ''} {', '.join(shown)}"
