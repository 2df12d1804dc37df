"""Generates the hook reference (docs/hooks.md) from the hookspec modules, so that it always has
each hook's exact signature, its documentation and the built-in plugins that implement it.

``python -m rport.core.hookdoc > docs/hooks.md``; a test fails when the file is out of date.
"""

from __future__ import annotations

import inspect
import sys
from types import ModuleType

from importlib import metadata

HEADER = """# Hook reference

Generated from `core/hookspecs.py` and `agent/hookspecs.py` by
`python -m rport.core.hookdoc > docs/hooks.md` (a test checks that this file is current).
See the [plugin author's guide](plugins.md) for how to write a plugin.

Every hook may return a value or an awaitable (the core awaits it) unless it says it must not
block. Implement only the parameters you need: pluggy passes a hook implementation the subset of
arguments it names.
"""


def _users(group: str) -> dict[str, list[str]]:
    """hook name -> built-in plugins (of this distribution) implementing it."""
    users: dict[str, list[str]] = {}
    for ep in metadata.entry_points(group=group):
        if not ep.value.startswith("rport.plugins."):
            continue
        module = ep.load()
        for name, obj in vars(module).items():
            if name.startswith("rport_") and callable(obj) and hasattr(obj, "rport_impl"):
                users.setdefault(name, []).append(ep.name)
    return users


def _section(title: str, group: str, specs: ModuleType) -> list[str]:
    users = _users(group)
    lines = [f"## {title} (entry-point group `{group}`)", ""]
    for name, fn in vars(specs).items():
        if not (name.startswith("rport_") and callable(fn)):
            continue
        sig = str(inspect.signature(fn)).replace("'", "")
        used = ", ".join(f"`{u}`" for u in sorted(users.get(name, []))) or "none yet"
        lines += [f"### `{name}{sig}`", "", inspect.getdoc(fn) or "", "",
                  f"Built-in plugins implementing it: {used}.", ""]
    return lines


def render() -> str:
    from rport.agent import hookspecs as agent_specs
    from rport.core import hookspecs as server_specs

    lines = [HEADER]
    lines += _section("Server hooks", "rport.server", server_specs)
    lines += _section("Agent hooks", "rport.agent", agent_specs)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
