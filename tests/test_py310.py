"""pyproject admits Python 3.10: the regular expressions tmix compiles use no syntax that came with 3.11
(possessive quantifiers `*+ ++ ?+ }+`, atomic groups `(?>...)`), which 3.10 refuses only when the module loads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

_SOURCES = sorted((Path(__file__).parent.parent / "tmixcli").rglob("*.py"))
_NEW_SYNTAX = re.compile(r"(?<!\\)(?:[*+?}]\+|\(\?>)")


def _patterns(path: Path) -> list[str]:
    """The string first arguments of the module's `re.*(...)` calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        func = getattr(node, "func", None)
        if (isinstance(node, ast.Call) and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "re" and node.args):
            arg = node.args[0]
            parts = [arg] if isinstance(arg, ast.Constant) else getattr(arg, "values", [])
            found += [part.value for part in parts if isinstance(part, ast.Constant) and isinstance(part.value, str)]
    return found


@pytest.mark.parametrize("path", _SOURCES, ids=lambda p: p.name)
def test_no_regex_syntax_newer_than_python_310(path):
    bad = [p for p in _patterns(path) if _NEW_SYNTAX.search(p.replace("\\\\", ""))]
    assert not bad, f"{path.name}: Python 3.11-only regex syntax in {bad}"
