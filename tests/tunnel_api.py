"""The tunnel API as the tunnel and proxy tests use it: create, list, delete, and the error
envelope they check."""

from __future__ import annotations

import re
from typing import Any

import httpx

from .procs import Server, wait_for

TUNNEL_FIELDS = {"id", "name", "protocol", "lhost", "lport", "lport_random", "owner", "rhost", "rport",
                 "scheme", "acl", "idle_timeout_minutes", "auto_close", "http_proxy", "host_header",
                 "auth_user", "auth_password", "tunnel_url", "created_at"}


def put(server: Server, client_id: str, **params: Any) -> httpx.Response:
    """PUT /clients/{id}/tunnels; keyword names use _ for - (idle_timeout_minutes=...) except
    the ones RPort spells with underscores (check_port, http_proxy, host_header, auth_*)."""
    keep = {"check_port", "http_proxy", "host_header", "auth_user", "auth_password"}
    query = {(k if k in keep else k.replace("_", "-")): str(v) for k, v in params.items()}
    assert server.api is not None
    return server.api.put(f"/clients/{client_id}/tunnels", params=query)


def created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    tunnel = resp.json()["data"]
    assert set(tunnel) == TUNNEL_FIELDS
    return tunnel


def assert_error(resp: httpx.Response, status: int, code: str, title: str | re.Pattern[str],
                 detail: str | re.Pattern[str] | None = None) -> dict[str, str]:
    """The standard envelope: one item with code, title and detail, all strings."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errors"}, body
    (item,) = body["errors"]
    assert set(item) == {"code", "title", "detail"} and all(isinstance(v, str) for v in item.values())
    assert item["code"] == code, item
    if isinstance(title, re.Pattern):
        assert title.fullmatch(item["title"]), item
    else:
        assert item["title"] == title, item
    if isinstance(detail, re.Pattern):
        assert detail.search(item["detail"]), item
    elif detail is not None:
        assert item["detail"] == detail, item
    return item


def all_tunnels(server: Server) -> list[dict[str, Any]]:
    assert server.api is not None
    resp = server.api.get("/tunnels")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def tunnels_of(server: Server, client_id: str) -> list[dict[str, Any]]:
    client = server.client(client_id)
    assert client is not None
    return client["tunnels"]


def tunnel_ids(server: Server, client_id: str) -> set[str]:
    return {t["id"] for t in all_tunnels(server) if t["client_id"] == client_id}


def delete(server: Server, client_id: str, tunnel_id: str, **params: Any) -> httpx.Response:
    assert server.api is not None
    return server.api.delete(f"/clients/{client_id}/tunnels/{tunnel_id}",
                             params={k: str(v) for k, v in params.items()})


def delete_once_idle(server: Server, client_id: str, tunnel_id: str) -> None:
    """DELETE without force, retried while a just-closed connection is still being torn down
    (the server counts a connection until both directions of its relay are finished)."""
    def attempt() -> bool:
        resp = delete(server, client_id, tunnel_id)
        assert resp.status_code in (204, 409), resp.text
        return resp.status_code == 204
    wait_for(attempt, 10, f"tunnel {tunnel_id} to have no connection left", interval=0.05)


def delete_all(server: Server, client_id: str) -> None:
    if server.api is None or not server.proc or not server.proc.alive():
        return
    for tunnel in all_tunnels(server):
        if tunnel["client_id"] == client_id:
            delete(server, client_id, tunnel["id"], force=1)
