"""No module imports from a package above it (ARCHITECTURE's layering), type-only imports included.

A lower layer importing a higher one is how a loop gets copied instead of extended: the records
every layer passes around live on the ground, the cascade and the ledger are siblings that meet
through the ``LedgerSink`` protocol, and the gateway drives the cascade instead of re-running
its attempts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tierwise

SRC = Path(tierwise.__file__).resolve().parent

#: Bottom (0) to top. A module may import its own layer or below; siblings on one layer that
#: must not import each other are listed in SIBLINGS.
LAYERS: dict[str, int] = {
    "errors": 0,
    "task": 0,
    "records": 0,
    "pricing": 1,
    "policy": 2,
    "routing": 3,
    "providers": 4,
    "cascade": 5,
    "ledger": 5,
    "testing": 6,
    "evaluation": 7,
    "learning": 7,
    "reports": 7,
    "orchestration": 7,
    "analytics": 7,
    "gateway": 8,
    "demo": 8,
    "demo_plan": 8,
    "cli": 9,
}
SIBLINGS = {("cascade", "ledger"), ("ledger", "cascade")}
#: The curated public API and the ``python -m tierwise`` entry point sit above everything; only
#: the CLI may import the top package (for ``__version__``).
TOP = {"__init__", "__main__"}


def _package(module: Path) -> str:
    return module.relative_to(SRC).parts[0].removesuffix(".py")


def _imports(module: Path) -> list[tuple[int, str]]:
    """(line, imported tierwise package) for every import in *module*, wherever it is."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tierwise":  # the curated API itself, or a subpackage by name
                names = [a.name if a.name in LAYERS else "__init__" for a in node.names]
            elif node.module.startswith("tierwise."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("tierwise.")]
        found.extend((node.lineno, n) for n in names)
    return found


def test_every_package_has_a_layer() -> None:
    packages = {_package(m) for m in SRC.rglob("*.py")} - TOP
    assert packages <= set(LAYERS), f"place these in LAYERS: {sorted(packages - set(LAYERS))}"


def test_no_module_imports_a_higher_layer() -> None:
    wrong: list[str] = []
    for module in sorted(SRC.rglob("*.py")):
        own = _package(module)
        if own in TOP:
            continue
        for line, imported in _imports(module):
            if imported == own or (imported in TOP and own == "cli"):
                continue
            if imported in TOP:
                wrong.append(f"{module.relative_to(SRC)}:{line}: {own} imports the top package")
            elif imported not in LAYERS:
                wrong.append(f"{module.relative_to(SRC)}:{line}: unknown package {imported!r}")
            elif LAYERS[imported] > LAYERS[own] or (own, imported) in SIBLINGS:
                wrong.append(f"{module.relative_to(SRC)}:{line}: {own} imports {imported}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker finds imports inside functions and TYPE_CHECKING blocks too."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tierwise.gateway.call import Call\n"
        "def f():\n    import tierwise.cli\n"
    )
    assert _imports(module) == [(3, "gateway"), (5, "cli")]
