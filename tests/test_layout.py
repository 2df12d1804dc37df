"""The platform's layout rules: one root package, plugins use only the public plugin API,
and the hook reference in docs/ is current."""

from __future__ import annotations

import ast
from pathlib import Path

from rport.core.hookdoc import render

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"rport.core.plugin", "rport.agent.plugin"}


def test_hook_reference_is_current() -> None:
    doc = (ROOT / "docs" / "hooks.md").read_text()
    assert doc == render(), "docs/hooks.md is stale: run python -m rport.core.hookdoc > docs/hooks.md"


def test_builtin_plugins_import_only_the_public_plugin_api() -> None:
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.startswith(("rport.core", "rport.agent")) and name not in PUBLIC:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_no_generic_top_level_packages_installed() -> None:
    import importlib.util

    for generic in ("core", "agent", "plugins"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or "rport" not in str(spec.origin or ""), generic
