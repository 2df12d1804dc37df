"""Who is calling the API: the result of authentication, shared by every auth plugin."""

from __future__ import annotations

import attrs

ADMINISTRATORS = "Administrators"


@attrs.frozen
class User:
    username: str
    groups: tuple[str, ...] = ()
    via: str = ""  # the plugin that authenticated the request, e.g. "auth_basic"
    scopes: tuple[str, ...] = ("read+write",)

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups
