"""Office Math (OMML, what Word's equation editor writes) as linear text: "Q=F/(p-v)", "x^2", "a_i", "sqrt(x)"."""

from __future__ import annotations

from xml.etree import ElementTree

from tmixcli.ooxml import M, W

_BRACKETS = {"(": ")", "[": "]", "{": "}", "|": "|"}


def math_text(element: ElementTree.Element) -> str:
    """The linear text of an equation element (m:oMath, m:oMathPara or any part of one); the equations of an
    m:oMathPara go on lines of their own."""
    tag = element.tag[len(M):] if element.tag.startswith(M) else ""
    if element.tag in (f"{M}t", f"{W}t"):
        return element.text or ""
    if element.tag in (f"{W}del", f"{W}moveFrom") or tag == "r" and element.find(f"{W}rPr/{W}vanish") is not None:
        return ""  # deleted, moved away or hidden
    if tag == "oMathPara":
        return "\n".join(math_text(e) for e in element.iter(f"{M}oMath"))
    if tag == "f":
        return f"{group(_part(element, 'num'))}/{group(_part(element, 'den'))}"
    if tag in ("sSup", "sSub", "sSubSup", "sPre"):
        scripts = "".join(f"{mark}{group(_part(element, name))}" for name, mark in (("sub", "_"), ("sup", "^"))
                          if element.find(f"{M}{name}") is not None)
        return scripts + _part(element, "e") if tag == "sPre" else _part(element, "e") + scripts
    if tag == "rad":
        degree = _part(element, "deg")
        return f"root({degree})({_part(element, 'e')})" if degree else f"sqrt({_part(element, 'e')})"
    if tag == "d":
        return _delimited(element)
    if tag == "nary":
        sign = _property(element, "chr", "\u222b")
        scripts = "".join(f"{mark}{group(_part(element, name))}" for name, mark in (("sub", "_"), ("sup", "^"))
                          if _part(element, name))
        return f"{sign}{scripts} {_part(element, 'e')}"
    if tag == "func":
        name, argument = _part(element, "fName"), _part(element, "e")
        return name + (argument if argument.startswith("(") else f" {argument}")
    if tag in ("limLow", "limUpp"):
        return f"{_part(element, 'e')}{'_' if tag == 'limLow' else '^'}{group(_part(element, 'lim'))}"
    if tag == "eqArr":
        return "; ".join(math_text(e) for e in element.findall(f"{M}e"))
    if tag == "m":
        rows = (", ".join(math_text(e) for e in row.findall(f"{M}e")) for row in element.findall(f"{M}mr"))
        return f"[{'; '.join(rows)}]"
    if tag == "acc":
        return _part(element, "e") + _property(element, "chr", "\u0302")
    if tag == "phant" and _property(element, "show", "1") in ("0", "off", "false"):
        return ""
    return "".join(math_text(child) for child in element if not child.tag.endswith("Pr"))


def _part(element: ElementTree.Element, name: str) -> str:
    """The linear text of the child m:`name` (an argument such as m:num or m:e); "" when it has none."""
    found = element.find(f"{M}{name}")
    return math_text(found) if found is not None else ""


def _property(element: ElementTree.Element, name: str, default: str) -> str:
    """The m:val of a property in the element's m:...Pr (m:chr of an m:nary, ...), else `default`."""
    for child in element:
        if child.tag.endswith("Pr"):
            found = child.find(f"{M}{name}")
            if found is not None:
                return found.get(f"{M}val", default)
    return default


def _delimited(element: ElementTree.Element) -> str:
    """An m:d: its arguments between its brackets ("(" and ")" unless it says otherwise), split by its separator."""
    begin, end = _property(element, "begChr", "("), _property(element, "endChr", ")")
    separator = _property(element, "sepChr", "|")
    return begin + separator.join(math_text(e) for e in element.findall(f"{M}e")) + end


def group(text: str) -> str:
    """`text` in parentheses where a fraction or a script would otherwise read wrong ("p-v" as "(p-v)")."""
    if len(text) <= 1 or text.isdigit() or text.isalpha() and len(text) <= 3 or _enclosed(text):
        return text
    return f"({text})"


def _enclosed(text: str) -> bool:
    """Whether `text` is one bracketed group: "(a+b)" but not "(a)+(b)"."""
    opening = text[0]
    closing = _BRACKETS.get(opening)
    if closing is None or not text.endswith(closing):
        return False
    if closing == opening:
        return text.count(opening) == 2
    depth = 0
    for char in text[:-1]:
        depth += (char == opening) - (char == closing)
        if depth == 0:
            return False
    return True
