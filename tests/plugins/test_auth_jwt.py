"""End to end: auth_jwt with a real rportd and real rport agents (rport-api.md §0, §1.1, §1.6):
login both ways, Bearer tokens on every plugin's routes (and on the seed's tunnel example with
real curl), expiry, logout, API tokens and their scopes, users and groups from an auth file, the
clients-auth API with agents that connect with a new credential and are refused after its
deletion, bans for API users, addresses and agents, the API over HTTPS with a test CA, and a sweep
of malformed Authorization headers and tokens that must all be 401s.

Waits are on conditions (log lines, polled endpoints), never on fixed sleeps; the one wait on the
clock is for a token to outlive its (two-second) lifetime. Deterministic expiry and extension
with an injected clock are in test_auth_jwt_units.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
import trustme
from rport.plugins.auth_jwt.sessions import signing_key

from ..procs import Agent, Server, wait_for
from ..services import DATABASES, both_databases
from ..targets import EchoServer, HttpFileServer

SECRET = "e2e-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ADMIN = ("admin", "foobaz")
CLIENT = "jwt-c1"
FORBIDDEN = "current user should belong to Administrators group to access this resource"

needs_curl = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                                reason="curl and jq are installed by .ci/run")


# -- helpers ---------------------------------------------------------------------------------------

def sh(cmd: str, timeout: float = 60) -> str:
    return subprocess.run(["bash", "-c", cmd], check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def anon(server: Server, **kwargs: Any) -> httpx.Client:
    """An API client without credentials (the test adds headers per request)."""
    return httpx.Client(base_url=server.api_url + "/api/v1", timeout=10, **kwargs)


def assert_error(resp: httpx.Response, status: int, code: str | None = None,
                 title: str | re.Pattern[str] | None = None) -> dict[str, str]:
    """The standard envelope: one item with code, title and detail, all strings."""
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    body = resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    (item,) = body["errors"]
    assert set(item) == {"code", "title", "detail"} and all(isinstance(v, str) for v in item.values())
    assert item["code"], item
    if code is not None:
        assert item["code"] == code, item
    if isinstance(title, re.Pattern):
        assert title.search(item["title"]), item
    elif title is not None:
        assert item["title"] == title, item
    return item


def assert_unauthorized(resp: httpx.Response) -> dict[str, str]:
    item = assert_error(resp, 401, "ERR_CODE_UNAUTHORIZED")
    assert item["title"] in ("unauthorized", "auth is required"), item
    return item


def login(server: Server, user: str = "admin", password: str = "foobaz", **params: Any) -> str:
    with anon(server) as api:
        resp = api.get("/login", auth=(user, password), params=params)
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert set(data) == {"token", "two_fa"} and data["two_fa"] is None
    return data["token"]


def hashed(password: str, prefix: str = "$2y$") -> str:
    return prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


def users_file(path: Path, users: dict[str, tuple[str, list[str]]]) -> Path:
    path.write_text(json.dumps([{"username": name, "password": hashed(pw), "groups": groups}
                                for name, (pw, groups) in users.items()]))
    return path


def refused_in_log(server: Server, auth_id: str, since: int = 0) -> bool:
    return f"refused: authentication failed for id {auth_id!r}" in server.log()[since:]


# -- fixtures --------------------------------------------------------------------------------------

class Env:
    """A server (static agent credential user1:1234, API user admin) with one connected agent."""

    def __init__(self, server: Server, agent: Agent) -> None:
        self.server, self.agent = server, agent

    @property
    def api(self) -> httpx.Client:
        assert self.server.api is not None
        return self.server.api


@pytest.fixture(scope="module", params=DATABASES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Once on the embedded SQLite, once on PostgreSQL: sessions and tokens live in the store."""
    tmp = tmp_path_factory.mktemp("auth_jwt")
    database = ({"url": request.getfixturevalue("postgresql").create_database()}
                if request.param == "postgresql" else {})
    # A high failure limit: the sweeps below send hundreds of bad credentials from 127.0.0.1.
    server = Server(tmp / "server", extra={"api": {"jwt_secret": SECRET, "max_failed_login": 100_000},
                                           "database": database}).start()
    agent = Agent(tmp / "agent", server, CLIENT)
    try:
        server.wait_connected(CLIENT)
        yield Env(server, agent)
    finally:
        agent.stop()
        server.stop()
        assert "Traceback" not in server.log(), server.log()[-5000:]


# == login, bearer, me ============================================================================

def test_login_both_ways_and_bearer_on_every_plugins_routes(env: Env) -> None:
    base = env.server.api_url + "/api/v1"
    with anon(env.server) as api:
        tokens = [login(env.server)]
        resp = api.post("/login", json={"username": "admin", "password": "foobaz"})
        assert resp.status_code == 200, resp.text
        tokens.append(resp.json()["data"]["token"])
        resp = api.post("/login", data={"username": "admin", "password": "foobaz"})  # a form
        assert resp.status_code == 200, resp.text
        tokens.append(resp.json()["data"]["token"])
        assert len(set(tokens)) == 3

        # Every plugin's routes take the token.
        paths = ["/status", "/clients", f"/clients/{CLIENT}", "/tunnels", f"/clients/{CLIENT}/commands",
                 "/commands", "/client-groups", "/client-tags", "/me", "/me/tokens", "/clients-auth",
                 "/openapi.json"]
        for token in tokens:
            for path in paths:
                resp = api.get(path, headers=bearer(token))
                assert resp.status_code == 200, (path, resp.text)
        me = api.get("/me", headers=bearer(tokens[0])).json()["data"]
        assert me == {"username": "admin", "groups": ["Administrators"], "password_expired": False,
                      "two_fa_send_to": "", "effective_user_permissions": dict.fromkeys(
                          ("auditlog", "commands", "monitoring", "scheduler", "scripts", "tunnels",
                           "uploads", "vault"), True),
                      "effective_extended_permissions": {"tunnels_restricted": None,
                                                         "commands_restricted": None},
                      "group_permissions_enabled": False}
        resp = api.post("/client-groups", headers=bearer(tokens[1]),
                        json={"id": "jwt-group", "params": {"client_id": [CLIENT]}})
        assert resp.status_code == 201, resp.text
        assert api.delete("/client-groups/jwt-group", headers=bearer(tokens[2])).status_code == 204
        # The scheme's case does not matter.
        assert api.get("/me", headers={"Authorization": f"bearer {tokens[0]}"}).status_code == 200

        # Login errors.
        assert_error(api.get("/login"), 401, "ERR_CODE_UNAUTHORIZED", "auth is required")
        assert_error(api.get("/login", auth=("admin", "nope")), 401, "ERR_CODE_UNAUTHORIZED", "unauthorized")
        assert_error(api.get("/login", headers={"Authorization": "Basic !!!"}), 401, "ERR_CODE_UNAUTHORIZED")
        assert_error(api.post("/login", json={"username": "admin", "password": "nope"}), 401)
        assert_error(api.post("/login", data={"username": "admin"}), 401, title="auth is required")
        assert_error(api.post("/login", content=b"username=admin", headers={"Content-Type": "text/plain"}),
                     400, title="unsupported content type: text/plain")
        assert_error(api.post("/login", json={"username": "admin", "password": "foobaz", "x": 1}),
                     400, title="Invalid JSON data.")
        assert_error(api.get("/login", auth=ADMIN, params={"token-lifetime": 7776001}), 400,
                     title="requested token lifetime exceeds max allowed 7776000")
        for bad in ("soon", "-1", " 5", "\u0663"):  # ASCII digits only, as Go's Atoi
            assert_error(api.get("/login", auth=ADMIN, params={"token-lifetime": bad}), 400)
        assert api.get("/login", auth=ADMIN, params={"token-lifetime": "+60"}).status_code == 200
        assert api.get("/login", auth=ADMIN, params={"token-lifetime": 7776000}).status_code == 200
        assert api.get("/login", auth=ADMIN, params={"token-lifetime": 0}).status_code == 200

    # The docs' way: curl with -u, the token picked with jq.
    if shutil.which("curl") and shutil.which("jq"):
        token = sh(f"curl -s -u admin:foobaz {base}/login | jq -r .data.token").strip()
        out = json.loads(sh(f'curl -s -H "Authorization: Bearer {token}" {base}/me'))
        assert out["data"]["username"] == "admin"
        out = json.loads(sh(f"curl -s -X POST -d username=admin -d password=foobaz {base}/login"))
        assert out["data"]["token"]
    log = env.server.log()
    assert "login failed for user 'admin' from 127.0.0.1" in log


@needs_curl
def test_seed_tunnel_example_with_a_bearer_token(env: Env, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    content = os.urandom(8).hex() + "\nthrough a tunnel opened with a Bearer token\n"
    (root / "hello.txt").write_text(content)
    base = env.server.api_url
    with HttpFileServer(root) as http:
        # The seed's example (docs "On-demand tunnels"), its token from /login.
        out = sh(f'RPORT_SERVER={base}; CLIENT_ID={CLIENT}; '
                 f'TOKEN=$(curl -s -u admin:foobaz "$RPORT_SERVER/api/v1/login" | jq -r .data.token); '
                 f'curl -s -X PUT -G "$RPORT_SERVER/api/v1/clients/$CLIENT_ID/tunnels" '
                 f'-d remote=127.0.0.1:{http.port} -d scheme=http -d acl=127.0.0.1 '
                 f'-d idle-timeout-minutes=5 -d check_port=1 '
                 f'-H "Authorization: Bearer $TOKEN" -H "accept: application/json" '
                 f'-H "Content-Type: application/json" | jq')
        tunnel = json.loads(out)["data"]
        assert tunnel["rport"] == str(http.port) and tunnel["acl"] == "127.0.0.1"
        assert tunnel["idle_timeout_minutes"] == 5 and tunnel["owner"] == "admin"
        assert sh(f"curl -s --fail --max-time 20 http://127.0.0.1:{tunnel['lport']}/hello.txt") == content
        token = login(env.server)
        with anon(env.server) as api:
            listed = api.get("/tunnels", headers=bearer(token)).json()["data"]
            assert [t["id"] for t in listed if t["client_id"] == CLIENT] == [tunnel["id"]]
            resp = api.delete(f"/clients/{CLIENT}/tunnels/{tunnel['id']}", params={"force": 1},
                              headers=bearer(token))
            assert resp.status_code == 204, resp.text


# == expiry and logout ==============================================================================

def test_logout_revokes_the_token_at_once(env: Env) -> None:
    first, second = login(env.server), login(env.server)
    with anon(env.server) as api:
        assert api.get("/me", headers=bearer(first)).status_code == 200
        assert api.delete("/logout", headers=bearer(first)).status_code == 204
        item = assert_unauthorized(api.get("/me", headers=bearer(first)))
        assert "revoked" in item["detail"]
        assert_unauthorized(api.delete("/logout", headers=bearer(first)))
        assert api.get("/me", headers=bearer(second)).status_code == 200  # other sessions live on
        # Basic credentials have no session to end.
        assert_error(api.delete("/logout", auth=ADMIN), 400, "ERR_CODE_INVALID_REQUEST")
    assert "user admin logged out" in env.server.log()


def test_a_token_expires_when_idle_for_its_lifetime(env: Env) -> None:
    token = login(env.server, **{"token-lifetime": 2})
    with anon(env.server) as api:
        assert api.get("/me", headers=bearer(token)).status_code == 200
        idle_from = time.monotonic()  # this use extended the session to now + 2 s, at most
        wait_for(lambda: time.monotonic() - idle_from > 3, 10, "the token's lifetime to pass")
        item = assert_unauthorized(api.get("/me", headers=bearer(token)))
        assert item["detail"] == "token expired"
        assert "revoked" in assert_unauthorized(api.get("/me", headers=bearer(token)))["detail"]


# == API tokens and scopes ==========================================================================

def test_api_tokens_and_their_scopes(env: Env) -> None:
    api = env.api
    created = {}
    for scope in ("read", "read+write", "clients-auth"):
        resp = api.post("/me/tokens", json={"scope": scope, "name": f"script {scope}"})
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert data["scope"] == scope and re.fullmatch(r"[A-Za-z0-9]{8}_[0-9a-f-]{36}", data["token"])
        assert data["token"].startswith(data["prefix"] + "_") and data["expires_at"]
        created[scope] = data
    listed = api.get("/me/tokens").json()["data"]
    assert {t["prefix"] for t in listed} >= {d["prefix"] for d in created.values()}
    assert all("token" not in t for t in listed)  # shown once, at creation

    read, write, cauth = (("admin", created[s]["token"]) for s in ("read", "read+write", "clients-auth"))
    with anon(env.server) as client:
        # read: GET only.
        for path in ("/status", "/clients", "/tunnels", "/me", "/client-groups"):
            assert client.get(path, auth=read).status_code == 200, path
        item = assert_error(client.put(f"/clients/{CLIENT}/tunnels", params={"remote": "127.0.0.1:22"}, auth=read),
                            403, "ERR_CODE_TOKEN_SCOPE")
        assert "only GET and HEAD" in item["title"]
        assert_error(client.post("/me/tokens", json={"scope": "read", "name": "x"}, auth=read), 403)
        assert_error(client.delete(f"/clients/{CLIENT}", auth=read), 403)
        assert_error(client.post("/client-groups", json={"id": "g"}, auth=read), 403)
        # read+write: everything.
        with EchoServer() as echo:
            resp = client.put(f"/clients/{CLIENT}/tunnels", params={"remote": f"127.0.0.1:{echo.port}"},
                              auth=write)
            assert resp.status_code == 200, resp.text
            tunnel_id = resp.json()["data"]["id"]
            resp = client.delete(f"/clients/{CLIENT}/tunnels/{tunnel_id}", params={"force": 1}, auth=write)
            assert resp.status_code == 204
        # clients-auth: only /clients-auth.
        assert client.get("/clients-auth", auth=cauth).status_code == 200
        assert client.get("/clients-auth/user1", auth=cauth).status_code == 200
        item = assert_error(client.get("/status", auth=cauth), 403, "ERR_CODE_TOKEN_SCOPE")
        assert "/api/v1/clients-auth" in item["title"]
        assert_error(client.get(f"/clients/{CLIENT}", auth=cauth), 403)
        # A token is its user's only: another name, or a changed character, is no login.
        assert_unauthorized(client.get("/status", auth=("someone", created["read"]["token"])))
        wrong = created["read"]["token"][:-1] + ("0" if created["read"]["token"][-1] != "0" else "1")
        assert_unauthorized(client.get("/status", auth=("admin", wrong)))

    # Rename and re-date; delete: it stops working at once.
    prefix = created["read"]["prefix"]
    resp = api.put(f"/me/tokens/{prefix}", json={"name": "renamed", "expires_at": "2099-01-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["name"] == "renamed" and resp.json()["data"]["expires_at"] == "2099-01-01T00:00:00Z"
    assert api.delete(f"/me/tokens/{prefix}").status_code == 204
    with anon(env.server) as client:
        assert_unauthorized(client.get("/status", auth=read))
    assert_error(api.delete(f"/me/tokens/{prefix}"), 404, "ERR_CODE_NOT_FOUND")
    assert_error(api.put("/me/tokens/nonexist", json={"name": "x"}), 404, "ERR_CODE_NOT_FOUND")

    # Validation.
    assert_error(api.post("/me/tokens", json={"scope": "admin", "name": "x"}), 400, title="missing or invalid scope.")
    assert_error(api.post("/me/tokens", json={"scope": "read"}), 400, title="missing or invalid name.")
    assert_error(api.post("/me/tokens", json={"scope": "read", "name": "x" * 250}), 400)
    assert_error(api.post("/me/tokens", json={"scope": "read", "name": "old", "expires_at": "2001-01-01T00:00:00Z"}),
                 400, title="invalid expires_at.")
    assert_error(api.post("/me/tokens", json={"scope": "read", "name": "old", "expires_at": "tomorrow"}), 400)
    assert_error(api.post("/me/tokens", json={"scope": "read", "name": "script read+write"}), 409,
                 "ERR_CODE_ALREADY_EXIST")
    assert_error(api.post("/me/tokens", json={"scope": "read", "name": "x", "extra": 1}), 400,
                 title="Invalid JSON data.")
    for data in created.values():
        api.delete(f"/me/tokens/{data['prefix']}")


# == users and groups ===============================================================================

def test_users_and_groups_from_the_auth_file(make_server: Any, tmp_path: Path) -> None:
    path = users_file(tmp_path / "users.json", {"boss": ("boss-pw", ["Administrators"]),
                                                "alice": ("alice-pw", ["Users", "Berlin"])})
    server = make_server(extra={"api": {"auth": "", "auth_file": str(path), "jwt_secret": SECRET}})
    alice = login(server, "alice", "alice-pw")
    boss = login(server, "boss", "boss-pw")
    with anon(server) as api:
        me = api.get("/me", headers=bearer(alice)).json()["data"]
        assert me["username"] == "alice" and me["groups"] == ["Users", "Berlin"]
        assert api.get("/me", headers=bearer(boss)).json()["data"]["groups"] == ["Administrators"]
        # A known user without the right: 403 with RPort's message, with a token or a password.
        for creds in ({"headers": bearer(alice)}, {"auth": ("alice", "alice-pw")}):
            for method, path, body in [("GET", "/clients-auth", None), ("GET", "/clients-auth/user1", None),
                                       ("POST", "/clients-auth", {"id": "new1", "password": "pw-new"}),
                                       ("DELETE", "/clients-auth/user1", None),
                                       ("POST", "/client-groups", {"id": "g1"}),
                                       ("PUT", "/client-groups/g1", {"id": "g1"}),
                                       ("DELETE", "/client-groups/g1", None)]:
                resp = api.request(method, path, json=body, **creds)
                assert_error(resp, 403, "ERR_CODE_FORBIDDEN", FORBIDDEN)
            # ...and what the reference allows non-admins.
            for path in ("/status", "/clients", "/client-groups", "/tunnels", "/me", "/me/tokens"):
                assert api.get(path, **creds).status_code == 200, path
        resp = api.post("/me/tokens", headers=bearer(alice), json={"scope": "clients-auth", "name": "ca"})
        assert_error(resp, 403, "ERR_CODE_FORBIDDEN",
                     "current user should belong to Administrators group to create a token with this scope")
        resp = api.post("/me/tokens", headers=bearer(alice), json={"scope": "read", "name": "mine"})
        assert resp.status_code == 200
        token = resp.json()["data"]["token"]
        assert api.get("/me", auth=("alice", token)).json()["data"]["groups"] == ["Users", "Berlin"]
        assert_error(api.get("/clients-auth", auth=("alice", token)), 403, "ERR_CODE_FORBIDDEN", FORBIDDEN)
        assert_unauthorized(api.get("/me", auth=("boss", token)))  # alice's token, not boss's
        # Administrators may do everything.
        assert api.get("/clients-auth", headers=bearer(boss)).status_code == 200
        assert api.put("/client-groups/g1", headers=bearer(boss), json={"id": "g1"}).status_code == 204
        # The static user of the other servers does not exist here.
        assert_unauthorized(api.get("/login", auth=ADMIN))


# == clients-auth with real agents ==================================================================

def test_clients_auth_in_the_auth_file_with_a_real_agent(make_server: Any, make_agent: Any,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "clients-auth.json"
    path.write_text(json.dumps({"user1": "1234"}))
    server = make_server(extra={"server": {"auth": "", "auth_file": str(path)},
                                "api": {"jwt_secret": SECRET}})
    token = login(server)
    with anon(server, headers=bearer(token)) as api:
        status = api.get("/status").json()["data"]
        assert (status["clients_auth_source"], status["clients_auth_mode"]) == ("File", "Read Write")
        assert api.get("/clients-auth").json() == {"data": [{"id": "user1", "password": "1234"}],
                                                   "meta": {"count": 1}}
        # Validation, with RPort's codes.
        for body, title in [({"password": "pw-long"}, "Invalid or missing ID."),
                            ({"id": "ab", "password": "pw-long"}, "Invalid or missing ID."),
                            ({"id": "new:x", "password": "pw-long"}, "Invalid or missing ID."),
                            # an id DELETE /clients-auth/{id} could not reach
                            ({"id": "agent/9", "password": "pw-long"}, "Invalid or missing ID."),
                            ({"id": "new\nline", "password": "pw-long"}, "Invalid or missing ID."),
                            ({"id": "newagent"}, "Invalid or missing password."),
                            ({"id": "newagent", "password": "pw"}, "Invalid or missing password.")]:
            assert_error(api.post("/clients-auth", json=body), 400, "ERR_CODE_INVALID_REQUEST", title)
        assert_error(api.post("/clients-auth", content=b""), 400, title="Missing body with json data.")
        assert_error(api.post("/clients-auth", json={"id": "user1", "password": "other"}), 409,
                     "ERR_CODE_ALREADY_EXIST", 'Client Auth with ID "user1" already exist.')

        assert api.post("/clients-auth", json={"id": "newagent", "password": "new-secret"}).status_code == 201
        assert json.loads(path.read_text()) == {"user1": "1234", "newagent": "new-secret"}
        assert api.get("/clients-auth/newagent").json()["data"] == {"id": "newagent", "password": "new-secret"}
        assert api.get("/clients-auth", params={"filter[id]": "new*"}).json()["data"] == [
            {"id": "newagent", "password": "new-secret"}]
        assert_error(api.get("/clients-auth/nope"), 404, "ERR_CODE_CLIENT_AUTH_NOT_FOUND",
                     'Client Auth with ID "nope" not found')

        # An agent connects with the new credential at once.
        agent = make_agent(server, "agent-new", auth="newagent:new-secret")
        assert server.client("agent-new")["client_auth_id"] == "newagent"

        # Deleting it: refused while a client uses it, unless forced.
        assert_error(api.delete("/clients-auth/newagent"), 409, "ERR_CODE_CLIENT_AUTH_HAS_CLIENT",
                     "Client Auth expected to have no active or disconnected bound client(s), got 1.")
        assert_error(api.delete("/clients-auth/newagent", params={"force": "maybe"}), 400,
                     "ERR_CODE_INVALID_REQUEST")
        since = len(server.log())
        assert api.delete("/clients-auth/newagent", params={"force": 1}).status_code == 204
        assert server.client("agent-new") is None  # disconnected and deleted
        assert json.loads(path.read_text()) == {"user1": "1234"}
        wait_for(lambda: refused_in_log(server, "newagent", since), what="the agent to be refused")
        assert agent.proc.alive()  # it keeps trying, and keeps being refused
        assert server.client("agent-new") is None
        agent.stop()  # before its failures get 127.0.0.1 banned ([server] max_failed_login)
        assert_error(api.delete("/clients-auth/newagent"), 404, "ERR_CODE_CLIENT_AUTH_NOT_FOUND",
                     'Client Auth with ID="newagent" not found.')

        # Added credentials survive a restart (they are in the file).
        assert api.post("/clients-auth", json={"id": "second", "password": "second-pw"}).status_code == 201
    server.stop()
    server.start()
    make_agent(server, "agent-second", auth="second:second-pw")
    with anon(server, headers=bearer(token)) as api:  # the session outlived the restart too
        assert [c["id"] for c in api.get("/clients-auth").json()["data"]] == ["second", "user1"]


@both_databases
def test_clients_auth_in_the_store_with_a_real_agent(make_server: Any, make_agent: Any) -> None:
    # Neither auth nor auth_file: auth_basic generates a bootstrap credential and the API keeps
    # the others in the store.
    server = make_server(extra={"server": {"auth": ""}, "api": {"jwt_secret": SECRET}})
    api = server.api
    assert api is not None
    status = api.get("/status").json()["data"]
    assert (status["clients_auth_source"], status["clients_auth_mode"]) == ("DB", "Read Write")
    assert api.get("/clients-auth").json()["data"] == []
    assert_error(api.post("/clients-auth", json={"id": "rport", "password": "whatever"}), 409,
                 "ERR_CODE_ALREADY_EXIST")  # the generated id is taken
    assert api.post("/clients-auth", json={"id": "dbagent", "password": "db-secret"}).status_code == 201
    agent = make_agent(server, "agent-db", auth="dbagent:db-secret")

    # Kept across a restart; the agent reconnects by itself.
    server.stop()
    server.start()
    server.wait_connected("agent-db")
    api = server.api
    assert api is not None
    assert api.get("/clients-auth").json()["data"] == [{"id": "dbagent", "password": "db-secret"}]

    since = len(server.log())
    assert api.delete("/clients-auth/dbagent", params={"force": "true"}).status_code == 204
    assert server.client("agent-db") is None
    wait_for(lambda: refused_in_log(server, "dbagent", since), what="the agent to be refused")
    assert agent.proc.alive() and server.client("agent-db") is None
    agent.stop()  # before its failures get 127.0.0.1 banned ([server] max_failed_login)
    # A wrong password for a stored id is refused (auth_jwt's veto), the right one accepted.
    assert api.post("/clients-auth", json={"id": "dbagent2", "password": "right-pw"}).status_code == 201
    since = len(server.log())
    wrong = make_agent(server, "agent-wrong", auth="dbagent2:wrong-pw", wait=False)
    wait_for(lambda: refused_in_log(server, "dbagent2", since), what="the wrong password to be refused")
    wrong.stop()
    make_agent(server, "agent-right", auth="dbagent2:right-pw")


def test_clients_auth_with_a_single_static_credential_is_read_only(env: Env) -> None:
    api = env.api
    status = api.get("/status").json()["data"]
    assert (status["clients_auth_source"], status["clients_auth_mode"]) == ("Static Credentials", "Read Only")
    assert api.get("/clients-auth").json()["data"] == [{"id": "user1", "password": "1234"}]
    for resp in (api.post("/clients-auth", json={"id": "another", "password": "pw-another"}),
                 api.delete("/clients-auth/user1", params={"force": 1}),
                 api.delete("/clients-auth/no-such-id")):  # read-only first, as RPort
        assert_error(resp, 405, "ERR_CODE_CLIENT_AUTH_SINGLE", "Client authentication is enabled only for a single user.")
    assert env.server.client(CLIENT)["connection_state"] == "connected"


# == brute force ====================================================================================

def test_failed_logins_ban_the_address_not_the_user(make_server: Any, tmp_path: Path) -> None:
    """RPort's rules: an address is banned after max_failed_login failures in a row; a user name
    only waits user_login_wait (2 s) after a failure, so that an attacker cannot lock its owner
    out from everywhere."""
    path = users_file(tmp_path / "users.json", {"admin": ("foobaz", ["Administrators"]),
                                                "alice": ("alice-pw", []), "bob": ("bob-pw", []),
                                                "carol": ("carol-pw", [])})
    server = make_server(extra={"api": {"auth": "", "auth_file": str(path), "jwt_secret": SECRET,
                                        "max_failed_login": 3, "ban_time": "1h",
                                        "user_login_wait": "2s"}})

    def source(ip: str) -> httpx.Client:
        return anon(server, transport=httpx.HTTPTransport(local_address=ip))

    def after_the_wait(client: httpx.Client, user: str, password: str) -> httpx.Response:
        """Retried while the user name waits (429), as a script honouring Retry-After would."""
        return wait_for(lambda: (r := client.get("/login", auth=(user, password))).status_code
                        != 429 and r, what=f"{user}'s wait to end")

    with source("127.0.0.2") as attacker, source("127.0.0.3") as other:
        # Five wrong passwords for admin from one address (each after the user's wait)...
        for _ in range(5):
            wait_for(lambda: attacker.get("/login", auth=("admin", "guess")).status_code == 401
                     or None, what="a failed login for admin")
        # ... ban that address, for every user, even with the right password, over every route:
        item = assert_unauthorized(attacker.get("/login", auth=("bob", "bob-pw")))
        assert "too many failed logins from 127.0.0.2" in item["detail"]
        assert int(attacker.get("/login", auth=("bob", "bob-pw")).headers["retry-after"]) > 3000
        assert_unauthorized(attacker.post("/login", json={"username": "bob", "password": "bob-pw"}))
        assert_unauthorized(attacker.get("/status", auth=("bob", "bob-pw")))
        # ... and admin still logs in from elsewhere.
        resp = after_the_wait(other, "admin", "foobaz")
        assert resp.status_code == 200, resp.text
        assert other.get("/me", headers=bearer(resp.json()["data"]["token"])).status_code == 200

        # A failed login makes the user name wait a moment, from every address: RPort's 429.
        assert_unauthorized(other.get("/status", auth=("carol", "guess")))
        for resp in (other.get("/login", auth=("carol", "carol-pw")),
                     other.get("/status", auth=("carol", "carol-pw"))):
            item = assert_error(resp, 429, "ERR_CODE_TOO_MANY_REQUESTS",
                                "too many requests, please try later")
            assert "a login for user 'carol' failed just now" in item["detail"]
            assert 1 <= int(resp.headers["retry-after"]) <= 2
        assert after_the_wait(other, "carol", "carol-pw").status_code == 200

    with anon(server) as home:  # 127.0.0.1 never failed
        assert home.get("/login", auth=("admin", "foobaz")).status_code == 200
    log = server.log()
    assert "login failed for user 'admin' from 127.0.0.2" in log
    assert "login refused for user 'bob' from 127.0.0.2: too many failed logins from there" in log
    assert "API authentication failed from 127.0.0.3" in log
    assert "Traceback" not in log


def test_failed_agent_logins_are_banned(make_server: Any, make_agent: Any) -> None:
    server = make_server(extra={"server": {"max_failed_login": 2, "ban_time": "1h",
                                           "client_login_wait": "0.1s"},
                                "api": {"jwt_secret": SECRET}})
    guesser = make_agent(server, "guesser", auth="user1:guess", wait=False)
    wait_for(lambda: server.log().count("refused: authentication failed for id 'user1'") == 2,
             what="two failed agent logins")
    # The second failure is a ban, and the server tells the agent how long it lasts.
    wait_for(lambda: re.search(r"reconnecting in 3[56]\d\d(\.\d+)?s", guesser.log()), what="the ban's wait")
    # Banned: the right password from the same address is refused too.
    since = len(server.log())
    make_agent(server, "honest", auth="user1:1234", wait=False)
    wait_for(lambda: "too many failed logins from 127.0.0.1" in server.log()[since:],
             what="the honest agent to be refused")
    assert server.client("honest") is None


# == HTTPS ==========================================================================================

def test_the_api_over_https_with_a_test_ca(make_server: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "api.crt", tmp_path / "api.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=i > 0)
    # No jwt_secret: a random one, with a warning.
    server = make_server(extra={"api": {"cert_file": str(cert_file), "key_file": str(key_file)}})
    assert "[api] jwt_secret is not set: login tokens are signed with a random secret" in server.log()
    assert server.api_url.startswith("https://127.0.0.1:")
    base = server.api_url + "/api/v1"
    verify = ssl.create_default_context(cafile=str(ca_file))
    with httpx.Client(base_url=base, verify=verify, timeout=10) as api:
        resp = api.get("/login", auth=ADMIN)
        assert resp.status_code == 200
        token = resp.json()["data"]["token"]
        assert api.get("/me", headers=bearer(token)).json()["data"]["username"] == "admin"
        assert api.get("/status", headers=bearer(token)).status_code == 200
    with httpx.Client(base_url=base, timeout=10) as untrusting:  # the system's CAs only
        with pytest.raises(httpx.ConnectError):
            untrusting.get("/status")
    if shutil.which("curl"):
        out = sh(f'curl -s --cacert {ca_file} -H "Authorization: Bearer {token}" {base}/me')
        assert json.loads(out)["data"]["username"] == "admin"


# == the sweep: every bad credential is a 401 =======================================================

def _forged(claims: dict[str, Any], key: bytes | str, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_malformed_authorization_headers_and_tokens_are_401s(env: Env) -> None:
    good = login(env.server)
    revoked = login(env.server)
    expiring = login(env.server, **{"token-lifetime": 1})
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    key = signing_key(SECRET)
    with anon(env.server) as api:
        assert api.delete("/logout", headers=bearer(revoked)).status_code == 204
        idle_from = time.monotonic()
        unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        tampered = base64.urlsafe_b64encode(json.dumps({**claims, "username": "root"}).encode()).rstrip(b"=").decode()
        deleted_session = _forged({**claims, "sessionID": "deleted", "jti": "deleted"}, key)
        sweep: dict[str, str | bytes] = {
            "basic not base64": "Basic !!!",
            "basic no colon": "Basic " + b64(b"admin"),
            "basic not utf-8": "Basic " + b64(b"admin:\xff"),
            "basic wrong password": "Basic " + b64(b"admin:nope"),
            "bearer only": "Bearer",
            "bearer x.y": "Bearer x.y",
            "bearer a.b.c": "Bearer a.b.c",
            "bearer garbage": "Bearer garbage",
            "bearer non-ascii": "Bearer é.é.é".encode("latin-1"),
            "bearer huge": "Bearer " + "a" * 8000,
            "truncated": "Bearer " + good[:-3],
            "signature removed": f"Bearer {header}.{payload}.",
            "tampered payload": f"Bearer {header}.{tampered}.{signature}",
            "another secret": "Bearer " + _forged(claims, signing_key("not the server's secret at all!!")),
            "raw secret as key": "Bearer " + _forged(claims, SECRET),
            "alg none": f"Bearer {unsigned}.{payload}.",
            "alg HS512": "Bearer " + _forged(claims, key + key, "HS512"),
            "claims missing": "Bearer " + _forged({"username": "admin"}, key),
            "claims mistyped": "Bearer " + _forged({**claims, "scopes": "read+write"}, key),
            "deleted session": "Bearer " + deleted_session,
            "revoked": "Bearer " + revoked,
            "basic with a token as password": "Basic " + b64(f"admin:{good}".encode()),
            "token as basic credential": "Basic " + good,
        }
        paths = [("GET", "/status"), ("GET", "/me"), ("GET", f"/clients/{CLIENT}"), ("GET", "/tunnels"),
                 ("PUT", f"/clients/{CLIENT}/tunnels"), ("DELETE", "/logout"), ("POST", "/me/tokens"),
                 ("GET", "/clients-auth"), ("GET", "/client-groups"), ("GET", "/commands")]
        for label, value in sweep.items():
            for method, path in paths:
                resp = api.request(method, path, headers={"Authorization": value})
                item = assert_unauthorized(resp)
                assert resp.headers["www-authenticate"].lower().startswith("basic"), label
                assert "too many" not in item["detail"], (label, item)
        # Expired: idle for longer than its one-second lifetime.
        wait_for(lambda: time.monotonic() - idle_from > 2, 10, "the short token's lifetime to pass")
        assert assert_unauthorized(api.get("/me", headers=bearer(expiring)))["detail"] == "token expired"
        # Through all of this the real token kept working.
        assert api.get("/me", headers=bearer(good)).status_code == 200
        # A user removed since login: not possible without a restart; a session of an unknown user
        # (forged with the right key) is refused as well.
        assert_unauthorized(api.get("/me", headers=bearer(
            _forged({**claims, "username": "ghost"}, key))))
    assert env.server.proc is not None and env.server.proc.alive()
    log = env.server.log()
    assert "Traceback" not in log and "ERR_CODE_INTERNAL" not in log
