"""End to end: API users and user groups in the database (the users plugin, RPort's
``[api] auth_user_table``), per-function permissions enforced on the routes of every kind with a
real agent (commands run, a tunnel carries bytes), changes that count at the next request
without a restart, sessions ended by a password change, a rename or a deletion, ``PUT /me``,
and the two-factor login with TOTP codes computed here from the secret the server gave.

RPort's messages were taken from OpenRPort 0.9.14 (``/work/shared/peers/openrport``) run with
``auth_user_table`` on SQLite. Each module server runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pyotp
import pytest

from rport.core.confload import ConfigError
from rport.core.config import load_server_config

from ..procs import PY, Agent, Server, running, wait_for, write_toml
from ..services import DATABASES
from ..targets import EchoServer, connect, free_port, recv_exactly
from .test_auth_jwt import assert_error, bearer

SECRET = "users-e2e-jwt-secret-0123456789abcdefghijklmnopqrstuv"
ADMIN = ("admin", "foobaz")
CLIENT = "users-c1"
PERMISSIONS = ("auditlog", "commands", "monitoring", "scheduler", "scripts", "tunnels", "uploads",
               "vault")
FORBIDDEN = "current user should belong to Administrators group to access this resource"


def hashed(password: str) -> str:
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


def db_users_config(tmp: Path, database: dict[str, str], **api: Any) -> dict[str, Any]:
    """A server whose API users are in the database; the first administrator comes from an
    auth file imported at start-up (the documented way from auth_file to the database)."""
    seed = tmp / "api-auth.json"
    seed.write_text(json.dumps([{"username": "admin", "password": hashed("foobaz"),
                                 "groups": ["Administrators"]}]))
    return {"api": {"auth": "", "auth_user_table": "users", "auth_group_table": "groups",
                    "auth_group_details_table": "group_details", "jwt_secret": SECRET,
                    "password_min_length": 8, "max_failed_login": 100_000, **api},
            "plugins": {"users": {"import_auth_file": str(seed)}},
            "database": database}


def database_for(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "postgresql":
        return {"url": request.getfixturevalue("postgresql").create_database()}
    return {}


class Env:
    def __init__(self, server: Server, echo: EchoServer) -> None:
        self.server, self.echo = server, echo

    @property
    def api(self) -> httpx.Client:
        assert self.server.api is not None
        return self.server.api

    def client(self, auth: Any = None, token: str = "") -> httpx.Client:
        return httpx.Client(base_url=self.server.api_url + "/api/v1", timeout=20, auth=auth,
                            headers=bearer(token) if token else {})

    def login(self, user: str, password: str) -> str:
        with self.client() as api:
            resp = api.post("/login", json={"username": user, "password": password})
        assert resp.status_code == 200, resp.text
        assert resp.json()["data"]["two_fa"] is None
        return resp.json()["data"]["token"]


@pytest.fixture(scope="module", params=DATABASES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("users")
    server = Server(tmp / "server", extra=db_users_config(tmp, database_for(request)))
    server.start()
    agent = Agent(tmp / "agent", server, CLIENT)
    with EchoServer() as echo, running(server, [agent]):
        server.wait_connected(CLIENT)
        yield Env(server, echo)
    assert "Traceback" not in server.log(), server.log()[-5000:]


def create_user(env: Env, name: str, password: str, groups: list[str], **extra: Any) -> None:
    resp = env.api.post("/users", json={"username": name, "password": password, "groups": groups,
                                        **extra})
    assert resp.status_code == 201, resp.text


def set_group(env: Env, name: str, *granted: str) -> dict[str, Any]:
    resp = env.api.put(f"/user-groups/{name}", json={"permissions": {p: True for p in granted}})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def errors(resp: httpx.Response, status: int) -> list[tuple[str, str]]:
    assert resp.status_code == status, resp.text
    return [(e["title"], e["detail"]) for e in resp.json()["errors"]]


def wait_done(api: httpx.Client, jid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = api.get(f"/clients/{CLIENT}/commands/{jid}").json()["data"]
        return job if job["status"] != "running" else None
    return wait_for(done, 30, f"job {jid}")


# == the users API =================================================================================

def test_status_and_the_users_api_with_rports_messages(env: Env) -> None:
    status = env.api.get("/status").json()["data"]
    assert status["users_auth_source"] == "DB" and status["group_permissions_enabled"] is True
    assert status["password_min_length"] == 8 and status["two_fa_enabled"] is False
    assert status["two_fa_delivery_method"] == ""
    api = env.api
    assert errors(api.post("/users", json={}), 400) == [("username is required", ""),
                                                       ("password is required", "")]
    assert errors(api.post("/users", json={"username": "ann", "password": "short"}), 400) == [
        ("Your password is too short", "password must be at least 8 characters")]
    assert errors(api.post("/users", json={"username": " ann", "password": "long enough"}), 400) \
        == [("username must not start or end with whitespace", "")]
    assert errors(api.post("/users", json={"username": "ann", "password": "long enough",
                                           "foo": 1}), 400) == [
        ("Invalid JSON data.", 'json: unknown field "foo"')]
    assert errors(api.post("/users", json={"username": "a:b", "password": "long enough"}),
                  400)[0][0] == "username must not contain ':'"
    assert errors(api.post("/users", json={"username": "ann", "password": "x" * 73}),
                  400)[0][0] == "Your password is too long"
    create_user(env, "ann", "ann-password", ["Readers", "Ops"])
    assert errors(api.post("/users", json={"username": "ann", "password": "ann-password"}), 400) \
        == [("Another user with this username already exists", "")]
    users = api.get("/users").json()["data"]
    assert {"username": "ann", "password_expired": False, "groups": ["Ops", "Readers"],
            "two_fa_send_to": ""} in users
    assert all(set(u) == {"username", "password_expired", "groups", "two_fa_send_to"}
               for u in users)  # never a password
    assert errors(api.put("/users/ann", json={}), 400) == [("nothing to change", "")]
    assert errors(api.put("/users/nobody", json={"password": "long enough"}), 404) == [
        ("cannot find user by username 'nobody'", "")]
    assert errors(api.put("/users/ann", json={"username": "admin"}), 400) == [
        ("Another user with this username already exists", "")]
    assert api.put("/users/ann", json={"groups": ["Readers"]}).status_code == 204
    assert api.get("/users").json()["data"][1]["groups"] == ["Readers"]
    assert errors(api.delete("/users/nobody"), 404) == [("cannot find user by username 'nobody'", "")]
    # The last administrator cannot go (nobody could manage users any more).
    assert errors(api.delete("/users/admin"), 400)[0][0] == \
        "at least one user must stay in the Administrators group"
    assert errors(api.put("/users/admin", json={"groups": ["Readers"]}), 400)[0][0] == \
        "at least one user must stay in the Administrators group"
    # A non-administrator manages nothing.
    with env.client(auth=("ann", "ann-password")) as ann:
        for method, path in (("GET", "/users"), ("POST", "/users"), ("PUT", "/users/ann"),
                             ("DELETE", "/users/ann"), ("GET", "/user-groups"),
                             ("PUT", "/user-groups/Readers"), ("GET", "/users/ann/sessions")):
            assert_error(ann.request(method, path, json={}), 403, "ERR_CODE_FORBIDDEN", FORBIDDEN)
    assert api.delete("/users/ann").status_code == 204
    assert_error(env.client(auth=("ann", "ann-password")).get("/me"), 401)


def test_user_groups_and_their_permissions(env: Env) -> None:
    api = env.api
    assert errors(api.put("/user-groups/Dev", json={"permissions": {"commands": True,
                                                                     "bogus": True}}), 400) == [
        ("Invalid JSON data.", "invalid permission: bogus")]
    assert errors(api.put("/user-groups/Dev", json={"permissions": {"commands": "yes"}}), 400)[0][1] \
        == 'json: permission "commands" must be true or false'
    assert errors(api.put("/user-groups/Administrators", json={"permissions": {}}), 400)[0][0] \
        == "the Administrators group has every permission"
    group = set_group(env, "Dev", "commands", "scripts")
    assert group == {"name": "Dev", "permissions": {p: p in ("commands", "scripts")
                                                    for p in PERMISSIONS},
                     "tunnels_restricted": None, "commands_restricted": None}
    assert set_group(env, "Dev", "tunnels")["permissions"]["commands"] is False  # replaced
    assert api.get("/user-groups/Dev").json()["data"]["permissions"]["tunnels"] is True
    # A group nobody set up has no permission; Administrators has them all.
    assert not any(api.get("/user-groups/Nobody").json()["data"]["permissions"].values())
    assert all(api.get("/user-groups/Administrators").json()["data"]["permissions"].values())
    create_user(env, "dan", "dan-password", ["Dev", "Testers"])
    names = [g["name"] for g in api.get("/user-groups").json()["data"]]
    assert {"Administrators", "Dev", "Testers"} <= set(names)
    # Deleting a group takes its members out of it (RPort); Administrators stays.
    assert api.delete("/user-groups/Testers").status_code == 204
    assert api.delete("/user-groups/Never-existed").status_code == 204
    assert errors(api.delete("/user-groups/Administrators"), 400)[0][0] == \
        "the Administrators group cannot be deleted"
    dan = next(u for u in api.get("/users").json()["data"] if u["username"] == "dan")
    assert dan["groups"] == ["Dev"]
    api.delete("/users/dan")


def test_permissions_are_enforced_on_every_kind_of_route_and_change_at_once(env: Env) -> None:
    api = env.api
    assert api.post(f"/clients/{CLIENT}/acl", json={"allowed_user_groups": ["Ops"]}).status_code == 204
    create_user(env, "bob", "bob-password", ["Ops"])
    set_group(env, "Ops")  # no permission at all
    token = env.login("bob", "bob-password")
    with env.client(token=token) as bob:
        me = bob.get("/me").json()["data"]
        assert me["effective_user_permissions"] == dict.fromkeys(PERMISSIONS, False)
        assert me["group_permissions_enabled"] is True and me["groups"] == ["Ops"]
        # Clients: visible (Ops is in its allowed_user_groups), but no function on them.
        assert [c["id"] for c in bob.get("/clients").json()["data"]] == [CLIENT]
        denied = {
            "commands": [bob.post(f"/clients/{CLIENT}/commands", json={"command": "echo hi"}),
                         bob.get(f"/clients/{CLIENT}/commands"), bob.get("/commands"),
                         bob.post("/commands", json={"command": "echo hi",
                                                     "client_ids": [CLIENT]})],
            "tunnels": [bob.put(f"/clients/{CLIENT}/tunnels",
                                params={"remote": f"127.0.0.1:{env.echo.port}"}),
                        bob.get("/tunnels"), bob.delete(f"/clients/{CLIENT}/tunnels/1")],
        }
        for permission, answers in denied.items():
            for resp in answers:
                item = assert_error(resp, 403, "ERR_CODE_PERMISSION_DENIED",
                                    f'user does not have "{permission}" permission')
                assert "effective_user_permissions" in item["detail"]
        # Granted: the same session works at the next request, no restart.
        set_group(env, "Ops", "commands", "tunnels")
        assert bob.get("/me").json()["data"]["effective_user_permissions"]["commands"] is True
        resp = bob.post(f"/clients/{CLIENT}/commands", json={"command": "/usr/bin/echo permitted"})
        assert resp.status_code == 200, resp.text
        job = wait_done(bob, resp.json()["data"]["jid"])
        assert job["status"] == "successful" and job["result"]["stdout"].strip() == "permitted"
        resp = bob.put(f"/clients/{CLIENT}/tunnels", params={
            "local": f"127.0.0.1:{free_port()}", "remote": f"127.0.0.1:{env.echo.port}"})
        assert resp.status_code == 200, resp.text
        tunnel = resp.json()["data"]
        with connect(int(tunnel["lport"])) as sock:
            sock.sendall(b"through bob's tunnel")
            assert recv_exactly(sock, 20) == b"through bob's tunnel"
        # Taken away: refused at the next request, and the tunnel can no longer be managed.
        set_group(env, "Ops", "commands")
        assert_error(bob.delete(f"/clients/{CLIENT}/tunnels/{tunnel['id']}"), 403,
                     "ERR_CODE_PERMISSION_DENIED", 'user does not have "tunnels" permission')
        assert bob.get("/commands").status_code == 200
        # Out of the group: the client is no longer his, whatever the permissions.
        assert api.put("/users/bob", json={"groups": ["Elsewhere"]}).status_code == 204
        assert bob.get("/clients").json()["data"] == []
        assert_error(bob.get(f"/clients/{CLIENT}/commands"), 403)
        assert api.delete(f"/clients/{CLIENT}/tunnels/{tunnel['id']}").status_code == 204
    # An administrator needs no group permission.
    assert api.get("/commands").status_code == 200 and api.get("/tunnels").status_code == 200
    api.delete("/users/bob")


def test_put_me_and_sessions_ended_by_password_rename_and_deletion(env: Env) -> None:
    api = env.api
    create_user(env, "cid", "cid-password", ["Ops"])
    first, second = env.login("cid", "cid-password"), env.login("cid", "cid-password")
    sessions = api.get("/users/cid/sessions").json()["data"]
    assert len(sessions) == 2 and all(s["username"] == "cid" and s["ip_address"] == "127.0.0.1"
                                      for s in sessions)
    with env.client(token=first) as cid:
        assert errors(cid.put("/me", json={"password": "new-cid-password"}), 403) == [
            ("Missing old password.", "")]
        assert errors(cid.put("/me", json={"password": "new-cid-password",
                                           "old_password": "wrong"}), 403) == [
            ("Incorrect old password.", "")]
        assert errors(cid.put("/me", json={"password": "short", "old_password": "cid-password"}),
                      400) == [("Your password is too short", "password must be at least 8 characters")]
        assert errors(cid.put("/me", json={}), 400) == [("nothing to change", "")]
        assert cid.put("/me", json={"password": "new-cid-password",
                                    "old_password": "cid-password"}).status_code == 204
        # The session that changed it goes on; every other one ended.
        assert cid.get("/me").status_code == 200
        assert_error(env.client(token=second).get("/me"), 401)
        assert_error(env.client(auth=("cid", "cid-password")).get("/me"), 401)
        assert env.client(auth=("cid", "new-cid-password")).get("/me").status_code == 200
        # An administrator's password change ends all of them.
        assert api.put("/users/cid", json={"password": "third-password"}).status_code == 204
        assert_error(cid.get("/me"), 401)
    # An expired password: sessions end, and the next login must set a new one.
    token = env.login("cid", "third-password")
    assert api.put("/users/cid", json={"password_expired": True}).status_code == 204
    assert_error(env.client(token=token).get("/me"), 401)
    with env.client() as anon:
        assert_error(anon.post("/login", json={"username": "cid", "password": "third-password"}),
                     401, "ERR_CODE_PASSWORD_EXPIRED",
                     "password has expired, please change your password")
        assert errors(anon.post("/login", json={"username": "cid", "password": "third-password",
                                                "new_password": "short"}), 400)[0][0] == \
            "Your password is too short"
        resp = anon.post("/login", json={"username": "cid", "password": "third-password",
                                         "new_password": "fourth-password"})
        assert resp.status_code == 200, resp.text
    token = env.login("cid", "fourth-password")
    # An API token and the sessions of a renamed user end: the old name is nobody's now.
    with env.client(token=token) as cid:
        resp = cid.post("/me/tokens", json={"scope": "read", "name": "script"})
        api_token = resp.json()["data"]["token"]
        assert env.client(auth=("cid", api_token)).get("/me").status_code == 200
        assert cid.put("/me", json={"username": "cyd"}).status_code == 204
        assert_error(cid.get("/me"), 401)
    assert_error(env.client(auth=("cid", api_token)).get("/me"), 401)
    create_user(env, "cid", "another-password", [])  # a new "cid" inherits nothing
    assert_error(env.client(auth=("cid", api_token)).get("/me"), 401)
    assert api.get("/users/cid/sessions").json()["data"] == []
    # Deletion ends the sessions at once.
    token = env.login("cyd", "fourth-password")
    assert env.client(token=token).get("/me").json()["data"]["username"] == "cyd"
    assert api.delete("/users/cyd").status_code == 204
    assert_error(env.client(token=token).get("/me"), 401)
    assert api.get("/users/cyd/sessions").json()["data"] == []
    # Sessions ended one by one, or all, by an administrator.
    tokens = [env.login("cid", "another-password") for _ in range(2)]
    sid = api.get("/users/cid/sessions").json()["data"][0]["session_id"]
    assert api.delete(f"/users/cid/sessions/{sid}").status_code == 204
    assert_error(api.delete(f"/users/cid/sessions/{sid}"), 404)
    assert len(api.get("/users/cid/sessions").json()["data"]) == 1
    assert api.delete("/users/cid/sessions").status_code == 204
    for token in tokens:
        assert_error(env.client(token=token).get("/me"), 401)
    api.delete("/users/cid")


def test_users_survive_a_restart_and_the_import_adds_nothing_twice(env: Env) -> None:
    create_user(env, "eve", "eve-password", ["Ops"])
    set_group(env, "Ops", "commands")
    env.server.stop()
    env.server.start()
    env.server.wait_connected(CLIENT)
    assert "imported 0 user(s)" in env.server.log()
    with env.client(auth=("eve", "eve-password")) as eve:
        assert eve.get("/me").json()["data"]["effective_user_permissions"]["commands"] is True
    env.api.delete("/users/eve")


# == other users sources ===========================================================================

def test_static_and_file_users_cannot_be_managed(make_server: Any, tmp_path: Path) -> None:
    static = make_server("static")
    assert errors(static.api.get("/users"), 400) == [
        ("server runs on a static user-password pair, please use JSON file or database for user "
         "data", "")]
    assert static.api.get("/status").json()["data"]["users_auth_source"] == "Static Credentials"
    static.stop()
    users = tmp_path / "users.json"
    users.write_text(json.dumps([{"username": "admin", "password": hashed("foobaz"),
                                  "groups": ["Administrators"]},
                                 {"username": "fay", "password": hashed("fay"), "groups": ["Ops"]}]))
    server = make_server("file", extra={"api": {"auth": "", "auth_file": str(users)}})
    assert [u["username"] for u in server.api.get("/users").json()["data"]] == ["admin", "fay"]
    assert errors(server.api.post("/users", json={"username": "x", "password": "y"}), 400)[0][0] \
        == "users cannot be changed through the API"
    with httpx.Client(base_url=server.api_url + "/api/v1", auth=("fay", "fay")) as fay:
        # No group permissions in a file, as in RPort: everything (client access still applies).
        assert all(fay.get("/me").json()["data"]["effective_user_permissions"].values())
        assert fay.get("/commands").status_code == 200
        assert errors(fay.put("/me", json={"password": "new-password", "old_password": "fay"}),
                      400)[0][0] == "users cannot be changed through the API"


def test_database_users_source_config_errors(tmp_path: Path) -> None:
    cases = {
        "api.auth_user_table: set only one of auth, auth_file or auth_user_table":
            {"auth": "admin:x", "auth_user_table": "users", "auth_group_table": "groups"},
        "api.auth_group_table: must be set when auth_user_table is set":
            {"auth_user_table": "users"},
        "api.auth_group_details_table: needs auth_user_table (users in the database)":
            {"auth": "admin:x", "auth_group_details_table": "group_details"},
        "api.totp_enabled: needs the users in the database":
            {"auth": "admin:x", "totp_enabled": True},
    }
    for message, api in cases.items():
        with pytest.raises(ConfigError) as info:
            load_server_config(overrides={"api": api}, environ={})
        assert any(message in problem for problem in info.value.problems), info.value.problems
    # Our tables have RPort's documented names: another name is a start-up error, no traceback.
    server = Server(tmp_path / "people", extra={"api": {
        "auth": "", "auth_user_table": "people", "auth_group_table": "groups"}})
    write_toml(server.conf_path, server.config)
    done = subprocess.run([PY, "-m", "rport.core.cli", "-c", str(server.conf_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert 'api.auth_user_table: the table in rportd\'s database is "users"' in done.stderr


# == two-factor login ==============================================================================

@pytest.fixture(params=DATABASES)
def totp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "server", extra=db_users_config(
        tmp_path, database_for(request), totp_enabled=True, max_failed_login=8,
        totp_account_name="rport-e2e"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert "Traceback" not in server.log(), server.log()[-5000:]


def test_two_factor_login_with_an_authenticator_app(totp_server: Server) -> None:
    server = totp_server
    api = httpx.Client(base_url=server.api_url + "/api/v1", timeout=20)

    def first_step(user: str, password: str) -> tuple[str, dict[str, Any]]:
        resp = api.post("/login", json={"username": user, "password": password})
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        return data["token"], data["two_fa"]

    # Passwords work only at /login now.
    item = assert_error(api.get("/status", auth=ADMIN), 401)
    assert "two-factor login is on" in item["detail"]
    login_token, two_fa = first_step(*ADMIN)
    assert two_fa == {"send_to": "", "delivery_method": "totp_authenticator_app",
                      "totp_key_status": "pending"}
    # The first step's token is good for nothing else...
    for method, path in (("GET", "/status"), ("GET", "/me"), ("GET", "/me/totp-secret"),
                         ("DELETE", "/me/totp-secret"), ("GET", "/users")):
        item = assert_error(api.request(method, path, headers=bearer(login_token)), 401)
        assert "verify-2fa" in item["detail"], item
    # ...but to create the secret, once.
    resp = api.post("/me/totp-secret", headers=bearer(login_token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    secret = body["secret"]
    assert body["data"]["secret"] == secret and len(secret) == 32
    png = base64.b64decode(body["qr"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert body["uri"].startswith("otpauth://totp/rport-e2e:admin?") and f"secret={secret}" in body["uri"]
    assert_error(api.post("/me/totp-secret", headers=bearer(login_token)), 409,
                 "ERR_CODE_ALREADY_EXIST",
                 "cannot create new totP secret when another one already exists")
    code = pyotp.TOTP(secret)
    # Second step: wrong codes and bodies, then the right code.
    verify = "/verify-2fa"
    assert_error(api.post(verify, headers=bearer(login_token),
                          json={"username": "admin", "token": "000000" if code.now() != "000000"
                                else "111111"}), 401, "ERR_CODE_UNAUTHORIZED", "invalid code")
    assert_error(api.post(verify, headers=bearer(login_token), json={"username": "admin"}), 401,
                 title="token is required")
    assert_error(api.post(verify, json={"username": "admin", "token": code.now()}), 400,
                 title="token is required")
    assert_error(api.post(verify, headers=bearer(login_token),
                          json={"username": "admin", "token": code.now(), "x": 1}), 400)
    used = code.now()
    resp = api.post(verify, headers=bearer(login_token), json={"username": "admin", "token": used})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["two_fa"] is None
    token = resp.json()["data"]["token"]
    status_admin = api.get("/status", headers=bearer(token))
    assert status_admin.status_code == 200
    status = status_admin.json()["data"]
    assert status["two_fa_enabled"] is True
    assert status["two_fa_delivery_method"] == "totp_authenticator_app"
    # The first step's token is used up; the real token is not a first step's.
    assert_error(api.post(verify, headers=bearer(login_token),
                          json={"username": "admin", "token": code.now()}), 401)
    assert_error(api.post(verify, headers=bearer(token),
                          json={"username": "admin", "token": code.now()}), 401)
    # A code opens one login only (RFC 6238 §5.2): seen on the wire, it is worth nothing.
    replay_step, _ = first_step(*ADMIN)
    assert_error(api.post(verify, headers=bearer(replay_step),
                          json={"username": "admin", "token": used}), 401,
                 "ERR_CODE_UNAUTHORIZED", "code already used")
    assert "second login step failed for user 'admin' from 127.0.0.1: a code used before" in server.log()
    got = api.get("/me/totp-secret", headers=bearer(token)).json()
    assert got["secret"] == secret
    # Scripts use API tokens, which still work with Basic auth.
    resp = api.post("/me/tokens", headers=bearer(token), json={"scope": "read+write", "name": "ci"})
    assert api.get("/status", auth=("admin", resp.json()["data"]["token"])).status_code == 200

    # A second user: the next login says the secret exists, and that token cannot make another.
    resp = api.post("/users", headers=bearer(token), json={
        "username": "gil", "password": "gil-password", "groups": ["Ops"]})
    assert resp.status_code == 201, resp.text
    gil_step, _ = first_step("gil", "gil-password")
    gil_secret = api.post("/me/totp-secret", headers=bearer(gil_step)).json()["secret"]
    resp = api.post(verify, headers=bearer(gil_step), json={
        "username": "gil", "token": pyotp.TOTP(gil_secret).now()})
    gil = resp.json()["data"]["token"]
    gil_step, two_fa = first_step("gil", "gil-password")
    assert two_fa["totp_key_status"] == "exists"
    assert_error(api.post("/me/totp-secret", headers=bearer(gil_step)), 401)
    # The username must be the login token's.
    assert_error(api.post(verify, headers=bearer(gil_step), json={
        "username": "admin", "token": code.now()}), 401)
    # Deleting the secret (yourself, or an administrator for anyone): set up anew at next login.
    assert api.delete("/me/totp-secret", headers=bearer(gil)).status_code == 204
    assert_error(api.get("/me/totp-secret", headers=bearer(gil)), 404, "ERR_CODE_TOTP_NO_SECRET")
    gil_step, two_fa = first_step("gil", "gil-password")
    assert two_fa["totp_key_status"] == "pending"
    assert_error(api.post(verify, headers=bearer(gil_step), json={
        "username": "gil", "token": "123456"}), 409, "ERR_CODE_TOTP_NO_SECRET")
    assert api.post("/me/totp-secret", headers=bearer(gil_step)).status_code == 200
    assert api.delete("/users/gil/totp-secret", headers=bearer(token)).status_code == 204
    assert_error(api.delete("/users/nobody/totp-secret", headers=bearer(token)), 404)

    # Wrong codes count as failed logins: after max_failed_login (8) the address is banned,
    # and even the right code is refused.
    admin_step, _ = first_step(*ADMIN)
    wrong = "000000" if code.now() != "000000" else "111111"
    for _ in range(8):
        assert_error(api.post(verify, headers=bearer(admin_step),
                              json={"username": "admin", "token": wrong}), 401, title="invalid code")
    item = assert_error(api.post(verify, headers=bearer(admin_step),
                                 json={"username": "admin", "token": code.now()}), 401)
    assert "too many failed logins" in item["detail"]
    assert "second login step failed for user 'admin'" in server.log()
    api.close()


def test_a_wrong_code_makes_the_user_wait(make_server: Any, tmp_path: Path) -> None:
    """RPort's user_login_wait applies to the second step too (429 right after a wrong code)."""
    server = make_server(extra=db_users_config(tmp_path, {}, totp_enabled=True,
                                               user_login_wait="1h"))
    with httpx.Client(base_url=server.api_url + "/api/v1", timeout=20) as api:
        step = api.post("/login", json={"username": "admin", "password": "foobaz"}).json()["data"]["token"]
        secret = api.post("/me/totp-secret", headers=bearer(step)).json()["secret"]
        right = pyotp.TOTP(secret).now()
        wrong = "000000" if right != "000000" else "111111"
        assert_error(api.post("/verify-2fa", headers=bearer(step),
                              json={"username": "admin", "token": wrong}), 401, title="invalid code")
        assert_error(api.post("/verify-2fa", headers=bearer(step),
                              json={"username": "admin", "token": right}), 429,
                     "ERR_CODE_TOO_MANY_REQUESTS")
