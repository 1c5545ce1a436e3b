"""The import graph of tmixcli (function-local imports included): the only cycle left is among the CLI's own
modules, and the library below it never imports the CLI or the server; reading documents pulls in no server."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import tmixcli

PACKAGE = Path(tmixcli.__file__).parent
CLI = ("cli", "serve", "startup", "__main__")  # module name prefixes of the command line and `tmix serve`
COMMANDS = {"bench", "evaluate", "calibrate"}  # commands of their own, above the CLI's shared modules


def _graph() -> dict[str, set[str]]:
    """Each tmixcli module -> the tmixcli modules it imports, anywhere in its code."""
    graph = {}
    for file in sorted(PACKAGE.glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "tmixcli":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tmixcli."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tmixcli.")}
        graph[file.stem] = found & {f.stem for f in PACKAGE.glob("*.py")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = set()
            while not part or node not in part:
                part.add(stack.pop())
            if len(part) > 1:
                found.append(part)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_only_import_cycle_is_within_the_cli():
    for cycle in _cycles(_graph()):
        assert all(name.startswith(CLI) for name in cycle), sorted(cycle)


def test_the_library_imports_neither_the_cli_nor_the_server():
    upward = {module: sorted(name for name in imported if name.startswith(CLI)) for module, imported in
              _graph().items() if not module.startswith(CLI) and module not in COMMANDS}
    assert {module: names for module, names in upward.items() if names} == {}


def test_model_files_are_judged_without_the_kv_modules():
    """weightfiles and kvheader share the safetensors framing (stheader): the models layer reads no KV module."""
    graph = _graph()
    assert not {name for name in graph["weightfiles"] if name.startswith("kv")}
    assert "stheader" in graph["weightfiles"] and "stheader" in graph["kvheader"]
    assert "kvwrite" not in graph["kvstore"]


def test_reading_and_fitting_a_document_imports_no_server(tmp_path):
    doc = tmp_path / "small.txt"
    doc.write_text("The gardener is Kwame Asante.\n")
    code = (f"import sys\nfrom tmixcli.config import Settings\nfrom tmixcli.documents import load_documents\n"
            f"from tmixcli.fit import check_early\ndoc = load_documents([{str(doc)!r}])\n"
            "check_early(None, doc, Settings())\n"
            "print(sorted(m for m in sys.modules if m.startswith('tmixcli.serve')))")
    path = os.pathsep.join(p for p in (str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
