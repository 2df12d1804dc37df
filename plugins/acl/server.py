"""acl, server side: implements the tunnels plugin's ``rport_tunnel_acl`` hook."""

from __future__ import annotations

from typing import Any

from rport.core.plugin import ApiError, hookimpl

from .rules import AclError, parse_acl


@hookimpl(optionalhook=True)  # specified by the tunnels plugin, if loaded
def rport_tunnel_acl(server: Any, acl: str) -> Any:
    try:
        return parse_acl(acl)
    except AclError as exc:
        raise ApiError(400, f"Invalid ACL: {exc}", code="ERR_CODE_INVALID_ACL") from None
