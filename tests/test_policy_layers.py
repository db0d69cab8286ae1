"""The policy layer imports only from itself and the layers below it (pricing, errors, task)."""

from __future__ import annotations

import ast
from pathlib import Path

import tierwise.policy

POLICY_DIR = Path(tierwise.policy.__file__).parent
# ARCHITECTURE.md: policy sits above pricing and the ground layer (errors, task, records).
ALLOWED = ("tierwise.policy", "tierwise.pricing", "tierwise.errors", "tierwise.task")
GROUND_RECORDS = "tierwise.records"


def imported_modules(file: Path) -> list[tuple[int, str]]:
    """Every module *file* imports, at any depth (function-level and TYPE_CHECKING included)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_nothing_under_policy_imports_a_higher_layer() -> None:
    files = sorted(POLICY_DIR.glob("*.py"))
    assert files, POLICY_DIR
    offenders = [
        f"{file.name}:{line}: {module}"
        for file in files
        for line, module in imported_modules(file)
        if (module == "tierwise" or module.startswith("tierwise."))
        and not module.startswith((*ALLOWED, GROUND_RECORDS))
    ]
    assert offenders == []


def test_the_walker_sees_function_level_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tierwise.cascade.validators import build_validator\n")
    assert imported_modules(probe) == [(2, "tierwise.cascade.validators")]
