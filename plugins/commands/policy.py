"""Which commands an agent runs: RPort's ``[remote-commands]`` allow/deny rules.

``A`` = some allow pattern matches the command (a search, not anchored: write ``^`` yourself),
``D`` = some deny pattern matches. ``order = ['allow', 'deny']``: A and not D (an empty allow
list denies everything). ``order = ['deny', 'allow']``: A or not D. Any other order: denied.
The answer says why, so that a refused command's 409 explains itself.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable


class PolicyError(ValueError):
    """Every mistake found in the rules, one ``remote-commands.<key>: ...`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True, slots=True)
class CommandPolicy:
    allow: tuple[re.Pattern[str], ...]
    deny: tuple[re.Pattern[str], ...]
    order: tuple[str, ...]

    @classmethod
    def build(cls, allow: Iterable[str], deny: Iterable[str], order: Iterable[str]) -> "CommandPolicy":
        """The policy; raises :class:`PolicyError` listing every invalid pattern and the order."""
        problems: list[str] = []

        def compile_all(patterns: Iterable[str], key: str) -> tuple[re.Pattern[str], ...]:
            out = []
            for p in patterns:
                try:
                    out.append(re.compile(p))
                except re.error as exc:
                    problems.append(f"remote-commands.{key}: invalid pattern {p!r}: {exc}")
            return tuple(out)
        order = tuple(order)
        if order not in (("allow", "deny"), ("deny", "allow")):
            problems.append("remote-commands.order: must be ['allow', 'deny'] or ['deny', 'allow']")
        policy = cls(compile_all(allow, "allow"), compile_all(deny, "deny"), order)
        if problems:
            raise PolicyError(problems)
        return policy

    def check(self, command: str) -> str | None:
        """None if ``command`` may run, else why not."""
        allowed_by = next((p.pattern for p in self.allow if p.search(command)), None)
        denied_by = next((p.pattern for p in self.deny if p.search(command)), None)
        if self.order == ("allow", "deny"):
            if allowed_by is None:
                return "it matches no allow pattern (order allow,deny; full paths are required)"
            if denied_by is not None:
                return f"it matches the deny pattern '{denied_by}' (order allow,deny)"
            return None
        if allowed_by is None and denied_by is not None:
            return f"it matches the deny pattern '{denied_by}' and no allow pattern (order deny,allow)"
        return None
