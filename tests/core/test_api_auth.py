"""API authentication against a real rportd: malformed and wrong credentials, the ban after
repeated failures, bcrypt users files, and the OpenAPI document matching the routes served."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator

import bcrypt
import httpx
import pytest

from ..procs import Server

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def assert_unauthorized(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 401, (resp.request.headers.get("authorization"), resp.text)
    assert resp.headers["www-authenticate"].lower().startswith("basic")
    body = resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    (item,) = body["errors"]
    assert set(item) == {"code", "title", "detail"}, item
    assert item["code"] and item["title"] == "unauthorized", item
    return item


BAD_HEADERS: dict[str, str | None] = {
    "none": None,
    "empty": "",
    "scheme only": "Basic",
    "not base64": "Basic !!!",
    "no colon": "Basic " + b64(b"nocolon"),
    "not utf-8": "Basic " + b64(b"admin:\xff\xfe"),
    "wrong password": "Basic " + b64(b"admin:wrong"),
    "empty password": "Basic " + b64(b"admin:"),
    "unknown user": "Basic " + b64(b"mallory:foobaz"),
    "case of user": "Basic " + b64(b"Admin:foobaz"),
    "bearer garbage": "Bearer garbage",
    "digest": "Digest x",
}


def test_bad_authorization_headers(make_server: Callable[..., Server]) -> None:
    # A high failure limit, so that every header reaches the auth plugin (no ban in between).
    server = make_server(extra={"api": {"max_failed_login": 1000}})
    with httpx.Client(base_url=server.api_url + "/api/v1", timeout=10) as api:
        for label, header in BAD_HEADERS.items():
            headers = {} if header is None else {"Authorization": header}
            for path in ("/status", "/clients", "/clients/whoever", "/openapi.json"):
                item = assert_unauthorized(api.get(path, headers=headers))
                assert "too many" not in item["detail"], (label, item)
            assert_unauthorized(api.delete("/clients/whoever", headers=headers))
        assert api.get("/status", auth=("admin", "foobaz")).status_code == 200
    log = server.log()
    assert "Traceback" not in log and "failed" in log  # failures are logged, nothing crashed


def test_repeated_failures_ban_the_address(make_server: Callable[..., Server]) -> None:
    server = make_server(extra={"api": {"ban_time": "1h"}})  # max_failed_login: default 5
    good = ("admin", "foobaz")
    with httpx.Client(base_url=server.api_url + "/api/v1", timeout=10) as api:
        # Four failures, then a success: the count starts again.
        for _ in range(4):
            assert_unauthorized(api.get("/status", auth=("admin", "nope")))
        assert api.get("/status", auth=good).status_code == 200
        for _ in range(4):
            assert_unauthorized(api.get("/status", auth=("admin", "nope")))
        assert api.get("/status", auth=good).status_code == 200
        # Requests without any credentials are not failed logins.
        for _ in range(6):
            assert_unauthorized(api.get("/status"))
        assert api.get("/status", auth=good).status_code == 200

        # Five failures in a row, of any kind, ban 127.0.0.1 even with the right password;
        # an X-Forwarded-For header changes nothing (it would let a caller spread its failures
        # over made-up addresses, or get another address banned).
        for i in range(3):
            assert_unauthorized(api.get("/status", auth=("admin", "nope"),
                                        headers={"X-Forwarded-For": f"10.9.9.{i}"}))
        assert_unauthorized(api.get("/status", headers={"Authorization": "Basic !!!"}))
        assert_unauthorized(api.get("/clients", auth=("mallory", "x")))
        for path in ("/status", "/clients"):
            resp = api.get(path, auth=good)
            item = assert_unauthorized(resp)
            assert "too many failed logins from 127.0.0.1" in item["detail"]
            retry_after = int(resp.headers["retry-after"])
            assert 3000 < retry_after <= 3600
            assert f"try again in {retry_after}s" in item["detail"]  # the same figure
    assert "10.9.9." not in server.log()  # failures are logged under the socket's address
    assert server.proc.alive()


def test_bcrypt_users_file(make_server: Callable[..., Server], tmp_path: Path) -> None:
    def hashed(password: str, prefix: str) -> str:
        value = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        assert value.startswith("$2b$")
        return prefix + value[4:]

    users = [
        {"username": "alice", "password": hashed("alice-pw", "$2b$"), "groups": ["Administrators"]},
        {"username": "bob", "password": hashed("bob-pw", "$2y$"), "groups": ["Administrators"]},
        {"username": "carol", "password": hashed("carol-pw", "$2a$")},
        {"username": "dave", "password": "plain-pw", "groups": []},
    ]
    users_file = tmp_path / "api-auth.json"
    users_file.write_text(json.dumps(users))
    server = make_server(extra={"api": {"auth": "", "auth_file": str(users_file),
                                        "max_failed_login": 1000}})
    with httpx.Client(base_url=server.api_url + "/api/v1", timeout=10) as api:
        for name in ("alice", "bob", "carol"):
            resp = api.get("/status", auth=(name, f"{name}-pw"))
            assert resp.status_code == 200, (name, resp.text)
            assert resp.json()["data"]["users_auth_source"] == "File"
            # A cached success does not make other passwords work.
            assert_unauthorized(api.get("/status", auth=(name, f"{name}-PW")))
            assert api.get("/status", auth=(name, f"{name}-pw")).status_code == 200
        assert api.get("/status", auth=("dave", "plain-pw")).status_code == 200
        assert_unauthorized(api.get("/status", auth=("dave", "plain")))
        # A hash is not a password, and the static user of the other servers does not exist here.
        assert_unauthorized(api.get("/status", auth=("alice", users[0]["password"])))
        assert_unauthorized(api.get("/status", auth=("admin", "foobaz")))


def _generic_not_found(resp: httpx.Response) -> bool:
    if resp.status_code != 404:
        return False
    errors = resp.json().get("errors", [])
    return bool(errors) and errors[0]["title"] == "not found" and errors[0]["detail"] == (
        f"{resp.request.method} {resp.request.url.path}")


@pytest.fixture(scope="module")
def every_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with every built-in plugin loaded and its API users in the database (the users
    plugin then answers every route, not RPort's 400 of a static user)."""
    root = tmp_path_factory.mktemp("openapi")
    seed = root / "api-auth.json"
    seed.write_text(json.dumps([{"username": "admin", "password": "foobaz",
                                 "groups": ["Administrators"]}]))
    server = Server(root / "server", extra={
        "api": {"auth": "", "auth_user_table": "users", "auth_group_table": "groups",
                "auth_group_details_table": "group_details", "max_failed_login": 1000},
        "plugins": {"users": {"import_auth_file": str(seed)}}}).start()
    try:
        yield server
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_openapi_document_matches_routes(every_plugin: Server) -> None:
    server = every_plugin
    api = server.api
    resp = api.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert "Errors" in doc["components"]["schemas"]
    ops: dict[tuple[str, str], dict[str, Any]] = {
        (path, method.upper()): op for path, item in doc["paths"].items() for method, op in item.items()}

    for key in [("/api/v1/status", "GET"), ("/api/v1/clients", "GET"),
                ("/api/v1/clients/{client_id}", "GET"), ("/api/v1/clients/{client_id}", "DELETE"),
                ("/api/v1/openapi.json", "GET")]:
        assert key in ops, sorted(ops)
    operation_ids = [op["operationId"] for op in ops.values()]
    assert all(operation_ids) and len(set(operation_ids)) == len(operation_ids)
    for (path, method), op in ops.items():
        assert path.startswith("/api/v1/"), path
        assert op["summary"].strip(), (path, method)
        assert op["responses"], (path, method)
        declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, path
    client_get = ops[("/api/v1/clients/{client_id}", "GET")]
    assert {p["name"] for p in ops[("/api/v1/clients", "GET")]["parameters"]} >= {
        "sort", "page[limit]", "page[offset]"}
    assert client_get["operationId"] != ops[("/api/v1/clients/{client_id}", "DELETE")]["operationId"]
    assert set(client_get["responses"]) == {"200", "400", "401", "403", "404"}
    assert "$ref" in client_get["responses"]["404"]["content"]["application/json"]["schema"]
    acl = ops[("/api/v1/clients/{client_id}/acl", "POST")]
    body = acl["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["allowed_user_groups"] and "204" in acl["responses"]

    # Every documented operation is served: no generic "unknown route" 404, no 405; calls with a
    # dummy id reach the handler (which says which client it did not find).
    paths = {path for path, _ in ops}
    with httpx.Client(timeout=10) as anonymous:
        for (path, method), op in ops.items():
            url = server.api_url + path.replace("{client_id}", "nope-openapi")
            url = "/".join("dummy" if seg.startswith("{") else seg for seg in url.split("/"))
            resp = api.request(method, url)
            assert not _generic_not_found(resp), (method, path, resp.text)
            # (a 405 of the route itself, e.g. clients-auth writes on a read-only source, is
            # not the router's "method not allowed")
            assert (resp.status_code != 405
                    or resp.json()["errors"][0]["code"] != "ERR_CODE_METHOD_NOT_ALLOWED"), (method, path)
            assert resp.status_code < 500, (method, path, resp.text)
            if "default" not in op["responses"]:  # a route that lists its codes lists this one
                assert str(resp.status_code) in op["responses"], (method, path, resp.status_code)
            if path == "/api/v1/clients/{client_id}":
                assert resp.status_code == 404, (method, path, resp.text)
                assert "nope-openapi" in resp.json()["errors"][0]["title"], resp.text
            if op["security"]:
                assert_unauthorized(anonymous.request(method, url))
        # ...and the methods it does not document are not served on those paths.
        for path in paths:
            url = server.api_url + "/".join("dummy" if seg.startswith("{") else seg
                                            for seg in path.split("/"))
            for method in METHODS:
                if (path, method) not in ops:
                    resp = api.request(method, url)
                    assert resp.status_code == 405, (method, path, resp.status_code, resp.text)
    assert api.get("/clients/nope-openapi").json()["errors"][0]["title"] == \
        'client with id "nope-openapi" not found'
    assert _generic_not_found(api.get("/not-documented"))


def test_openapi_declares_every_body_and_status_code(every_plugin: Server) -> None:
    """Issue 16: every route is in the served document with its request body and all its
    status codes. Statically: declared responses (no "200 or an error" placeholder) with a
    success code; a POST, PUT or PATCH declares its body, or says it takes none
    (``body=False``); a JSON body comes with its 400 and 413. Then each body-taking route is
    sent a malformed body and an oversized one: the code it answers is a declared one."""
    api = every_plugin.api
    loaded = {p["name"] for p in api.get("/plugins").json()["data"]}
    assert loaded == {ep.name for ep in entry_points(group="rport.server")}, loaded
    doc = api.get("/openapi.json").json()
    problems = []
    bodies: list[tuple[str, str, dict[str, Any]]] = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path} ({op['operationId']})"
            codes = set(op["responses"])
            if "default" in codes or not any(c.startswith("2") for c in codes):
                problems.append(f"{where}: its status codes are not declared")
            if method in ("post", "put", "patch") and "requestBody" not in op \
                    and not op.get("x-rport-no-body"):
                problems.append(f"{where}: no request body declared (body=False if none)")
            if "requestBody" in op:
                bodies.append((method, path, op))
                if "application/json" in op["requestBody"]["content"] and \
                        not {"400", "413"} <= codes:
                    problems.append(f"{where}: a JSON body without its 400 and 413")
            if op.get("x-rport-agent") and not {"502", "504"} <= codes:
                problems.append(f"{where}: an agent route without the cluster's 502 and 504")
    assert not problems, "\n".join(problems)

    oversized = b'{"x": "' + b"x" * (64 << 10) + b'"}'
    for method, path, op in bodies:
        url = "/".join("dummy" if seg.startswith("{") else seg for seg in path.split("/"))
        url = every_plugin.api_url + url
        for content in (b"{", oversized):
            resp = api.request(method, url, content=content,
                               headers={"content-type": "application/json"})
            assert resp.status_code < 500, (method, path, resp.text)
            assert str(resp.status_code) in op["responses"], \
                (method, path, resp.status_code, resp.text, sorted(op["responses"]))


RPORT_PERMISSIONS = (  # RPort's api_router.go: the per-function permission of each path
    ("/clients/{client_id}/commands", "commands"), ("/commands", "commands"),
    ("/library/commands", "commands"),
    ("/clients/{client_id}/scripts", "scripts"), ("/scripts", "scripts"),
    ("/library/scripts", "scripts"),
    ("/clients/{client_id}/tunnels", "tunnels"), ("/tunnels", "tunnels"),
    ("/schedules", "scheduler"), ("/files", "uploads"), ("/auditlog", "auditlog"),
)


def test_every_route_declares_rports_permission(every_plugin: Server) -> None:
    """Each route needs the permission RPort's router gives its path (x-rport-permission), and
    no other: client attributes, groups, tags, users and the rest need none (administrators'
    routes check the group instead)."""
    doc = every_plugin.api.get("/openapi.json").json()
    wrong = []
    for path, item in doc["paths"].items():
        route = path.removeprefix("/api/v1")
        expected = next((perm for prefix, perm in RPORT_PERMISSIONS
                         if route == prefix or route.startswith(prefix + "/")), None)
        for method, op in item.items():
            if op.get("x-rport-permission") != expected:
                wrong.append(f"{method.upper()} {route}: {op.get('x-rport-permission')!r}, "
                             f"RPort: {expected!r}")
    assert not wrong, "\n".join(wrong)
