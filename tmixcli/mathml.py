"""MathML (what OpenDocument formulas hold) as linear text, written as Word's equations are (omml): "Q=F/(p-v)",
"x^(n+1)", "a_i", "sqrt(2)"."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from tmixcli.omml import group

MATHML = "{http://www.w3.org/1998/Math/MathML}"
_TOKENS = {"mi", "mn", "mo", "mtext", "ms"}
_UNSEEN = {"annotation", "annotation-xml", "mphantom", "none", "mprescripts", "maligngroup", "malignmark"}
_OPERATORS = set("\u2211\u220f\u2210\u222b\u222c\u222d\u222e\u22c3\u22c2")  # sums, products, integrals, ...


def mathml_text(element: ElementTree.Element) -> str:
    """The linear text of a MathML element (a math:math or any part of one); a formula's annotations (its
    StarMath source) are left out."""
    tag = element.tag[len(MATHML):] if element.tag.startswith(MATHML) else ""
    parts = [e for e in element if e.tag[len(MATHML):] not in _UNSEEN]
    if tag in _TOKENS:
        text = "".join(element.itertext())
        return " ".join(text.split()) if tag != "mtext" else re.sub(r"\s+", " ", text)
    if tag in _UNSEEN:
        return ""
    if tag == "semantics":
        return mathml_text(parts[0]) if parts else ""
    if tag == "mfrac" and len(parts) == 2:
        return f"{group(mathml_text(parts[0]))}/{group(mathml_text(parts[1]))}"
    if tag == "msqrt":
        return f"sqrt({_row(parts)})"
    if tag == "mroot" and len(parts) == 2:
        return f"root({mathml_text(parts[1])})({mathml_text(parts[0])})"
    scripts = {"msub": "_", "msup": "^", "msubsup": "_^", "munder": "_", "mover": "^", "munderover": "_^"}
    if tag in scripts and len(parts) == len(scripts[tag]) + 1:
        base = mathml_text(parts[0])
        if tag == "mover" and element.get("accent") == "true":
            return base + mathml_text(parts[1])
        text = base + "".join(f"{mark}{group(mathml_text(e))}" for mark, e in zip(scripts[tag], parts[1:]))
        return f"{text} " if base in _OPERATORS else text
    if tag == "mfenced":
        separator = element.get("separators", ",").strip()[:1]
        return element.get("open", "(") + separator.join(mathml_text(e) for e in parts) + element.get("close", ")")
    if tag == "mtable":
        rows = (", ".join(mathml_text(cell) for cell in row) for row in parts)
        return f"[{'; '.join(rows)}]"
    if tag == "mspace":
        return " "
    return _row(parts).strip()


def _row(parts: list[ElementTree.Element]) -> str:
    """Elements one after the other."""
    return "".join(mathml_text(e) for e in parts)
