"""Which clients an API user may see and act on: RPort's per-client access for non-admins.

An administrator sees every client. Any other user sees a client when one of the user's groups
is in the client's ``allowed_user_groups`` (set with ``POST /clients/{id}/acl``) or in a group
that a plugin adds for it through ``rport_client_user_groups`` (the targeting plugin adds the
``allowed_user_groups`` of the client groups the client belongs to).

The router checks every route whose path has ``{client_id}`` before the route runs (so a
plugin's client routes are protected without doing anything); list routes filter with
:func:`visible_clients`, and routes that act on clients found otherwise (multi-client
commands) call :func:`check_client_access`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from .clients import Client
from .errors import ApiError
from .plugins import call_each_sync
from .users import User

if TYPE_CHECKING:
    from .server import RportServer

ACCESS_DENIED_CODE = "ERR_CODE_CLIENT_ACCESS_DENIED"


def client_user_groups(server: "RportServer", client: Client) -> set[str]:
    """The user groups that may see ``client``: its own ``allowed_user_groups`` and those the
    plugins add (kept by the registry until the client or a plugin's data changes)."""
    return set(server.clients.user_groups(client))


def uncached_client_user_groups(server: "RportServer", client: Client) -> set[str]:
    """:func:`client_user_groups` computed afresh (the registry's source)."""
    groups = set(client.allowed_user_groups or ())
    for _plugin, extra in call_each_sync(server.hook.rport_client_user_groups, server=server,
                                         client=client):
        if extra:
            groups.update(str(g) for g in extra)
    return groups


def can_access_client(server: "RportServer", user: User, client: Client) -> bool:
    """True if ``user`` may see and use ``client``."""
    if user.is_admin:
        return True
    return not server.clients.user_groups(client).isdisjoint(user.groups)


def visible_clients(server: "RportServer", user: User,
                    clients: Iterable[Client] | None = None) -> list[Client]:
    """The clients (by default every known one) that ``user`` may see, in their order."""
    clients = server.clients if clients is None else clients
    if user.is_admin:
        return list(clients)
    return [c for c in clients if can_access_client(server, user, c)]


def access_denied(client_ids: Iterable[str]) -> ApiError:
    """RPort's 403 for clients the caller may not use."""
    return ApiError(403, f"Access denied to client(s) with ID(s): {', '.join(client_ids)}",
                    code=ACCESS_DENIED_CODE)


def check_client_access(server: "RportServer", user: User, clients: Iterable[Client]) -> None:
    """Raise RPort's 403, naming every client in ``clients`` that ``user`` may not use."""
    if user.is_admin:
        return
    denied = [c.id for c in clients if not can_access_client(server, user, c)]
    if denied:
        raise access_denied(denied)


def parse_allowed_user_groups(body: Any) -> list[str] | None:
    """The ``allowed_user_groups`` of a ``POST /clients/{id}/acl`` body (None clears it)."""
    if not isinstance(body, dict) or "allowed_user_groups" not in body:
        raise ApiError(400, "Invalid client ACL.", code="ERR_CODE_INVALID_CLIENT_ACL",
                       detail='the body must be a JSON object with "allowed_user_groups"')
    groups = body["allowed_user_groups"]
    if groups is None:
        return None
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
        raise ApiError(400, "Invalid client ACL.", code="ERR_CODE_INVALID_CLIENT_ACL",
                       detail='"allowed_user_groups" must be a list of non-empty strings, or null')
    return list(dict.fromkeys(groups))  # in order, without repeats
