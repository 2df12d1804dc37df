"""Hooks the tunnels plugin offers to other plugins (added through ``rport_add_hookspecs``)."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rport")


@hookspec
def rport_tunnel_acl(server: Any, acl: str) -> Any:
    """Parse a tunnel's ``acl`` parameter. Return an object with ``allows(ip: str) -> bool``
    (checked on every accepted connection, before anything reaches the agent), None when this
    plugin does not handle ACLs, or raise ``ApiError(400)`` for an invalid ACL.
    Result rule: the first non-None object is used; when every plugin returns None (the ACL
    plugin is disabled) a tunnel that asks for an ACL is refused, never opened to everyone."""
