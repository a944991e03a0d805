"""core's rooms import one way (docs/design.md, "Layering"), read from the source, not assumed.

network -> {inputs, distributed, stats} -> passes -> judgement -> core's top-level modules
(compare, inspection, results). A room imports only rooms below it; rooms of one rank do not
import each other; core imports no backend, no CLI, no report and no framework.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "bncheck" / "core"
TOP = "(top)"
RANK = {"network": 0, "inputs": 1, "distributed": 1, "stats": 1, "passes": 2, "judgement": 3,
        TOP: 4}
# What core never imports: the layers above it, and the frameworks only backends may load.
FORBIDDEN = ("bncheck.cli", "bncheck.report", "bncheck.backends", "bncheck.rewriting",
             "bncheck.api", "typer", "rich", "torch", "onnx", "onnxruntime", "keras",
             "tensorflow", "tf2onnx")


def _room(module: str) -> str:
    """The room of a ``bncheck.core...`` module name."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[2] in RANK else TOP


def _imports(source: str) -> list[str]:
    """Every module a source imports, at any depth (imports inside functions count)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            # ``from bncheck.core.x import y`` may name a module y.
            out += [f"{node.module}.{a.name}" for a in node.names
                    if node.module.startswith("bncheck.core")]
    return out


def violations(importer: str, source: str) -> list[str]:
    """The rule's breaches in ``source``, the module ``importer`` (a dotted name)."""
    mine = _room(importer)
    found = []
    for name in _imports(source):
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
            found.append(f"{importer} imports {name}")
        elif name.startswith("bncheck.core.") and name.count(".") >= 2:
            theirs = _room(name)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                found.append(f"{importer} ({mine}) imports {name} ({theirs})")
    return found


def _modules() -> list[tuple[str, Path]]:
    return [("bncheck.core." + ".".join(p.relative_to(CORE).with_suffix("").parts), p)
            for p in sorted(CORE.rglob("*.py"))]


def test_every_room_imports_only_rooms_below_it() -> None:
    found = [v for name, path in _modules() for v in violations(name, path.read_text())]
    assert not found, "\n".join(found)


def test_every_module_lives_in_a_room_or_is_an_orchestrator() -> None:
    top = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    assert top == {"compare", "inspection", "results"}
    for room in RANK:
        if room != TOP:
            assert (CORE / room / "__init__.py").read_text().startswith('"""'), room


@pytest.mark.parametrize(("importer", "source"), [
    ("bncheck.core.stats.batchsize", "from bncheck.core.judgement.verdict import decide"),
    ("bncheck.core.network.layers", "def f():\n    from bncheck.core.passes import runner\n"),
    ("bncheck.core.inputs.data", "import bncheck.core.stats.taps"),
    ("bncheck.core.judgement.verdict", "from bncheck.core.compare import compare"),
    ("bncheck.core.passes.runner", "import torch"),
    ("bncheck.core.compare", "from bncheck.report.console import stdout_console"),
])
def test_the_rule_catches_an_upward_import(importer: str, source: str) -> None:
    assert violations(importer, source)


def test_the_rule_allows_downward_and_same_room_imports() -> None:
    assert not violations("bncheck.core.judgement.verdict",
                          "from bncheck.core.stats.batchsize import BatchSizeSource\n"
                          "from bncheck.core.judgement.findings import Finding\n"
                          "import numpy as np\n")
