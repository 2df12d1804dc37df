"""auth_jwt's logic in one process, with an injected clock: login sessions (expiry, extension,
revocation, every kind of bad token), API tokens, agent credentials in a file or the store, the
core's scope check, and a real in-process server whose session clock the test moves."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable

import bcrypt
import httpx
import jwt
import pytest
import sqlalchemy as sa
from rport.core.api.routing import check_scopes
from rport.core.config import load_server_config
from rport.core.errors import ApiError
from rport.core.server import create_server
from rport.core.store import Store
from rport.core.users import User
from rport.plugins.auth_basic.credentials import CredentialTable, Entry
from rport.plugins.auth_jwt.apitokens import ApiTokens, TokenConflict, looks_like_token
from rport.plugins.auth_jwt.clientsauth import DB, FILE, STATIC, ClientsAuth
from rport.plugins.auth_jwt.sessions import Sessions, TokenError, signing_key
from rport.plugins.auth_jwt.tables import SCHEMA

from ..services import DATABASES

SECRET = "unit-test-secret-0123456789abcdefghijklmnop"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Db:
    """A real store (SQLite in a file, or a fresh PostgreSQL database) with auth_jwt's tables,
    opened by :func:`run` in the test's event loop."""

    def __init__(self, url: str, path: Path) -> None:
        self.store = Store(url, path)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.store.run(fn, *args)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return await self.store.run(lambda conn: [tuple(r) for r in conn.execute(sa.text(sql))])


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    url = request.getfixturevalue("postgresql").create_database() if request.param == "postgresql" else ""
    return Db(url, tmp_path / "rportd.db")


def run(coro: Any, db: Db | None = None) -> Any:
    """Run a test's coroutine, with ``db``'s store open meanwhile."""
    async def main() -> Any:
        if db is None:
            return await coro
        await db.store.open({"auth_jwt": SCHEMA})
        try:
            return await coro
        finally:
            await db.store.close()
    return asyncio.run(main())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NONE_HEADER = b64url(b'{"alg":"none","typ":"JWT"}')


# -- sessions --------------------------------------------------------------------------------------

def test_session_is_extended_while_used_and_expires_when_idle(db: Db) -> None:
    clock = Clock()
    sessions = Sessions(db.run, SECRET, clock=clock)

    async def main() -> None:
        await sessions.open()
        token = await sessions.create("alice", 60, address="10.0.0.1")
        info = await sessions.validate(token)
        assert info.username == "alice" and info.scopes == ("read+write",)
        assert info.expires_at == clock.now + 60
        # Used every 50 s, it outlives its first expiry by far.
        for _ in range(5):
            clock.advance(50)
            info = await sessions.validate(token)
            assert info.expires_at == clock.now + 60
        # Idle for its lifetime, it is gone, and stays gone.
        clock.advance(60)
        with pytest.raises(TokenError, match="token expired"):
            await sessions.validate(token)
        with pytest.raises(TokenError, match="revoked or unknown"):
            await sessions.validate(token)
        assert await sessions.count() == 0
    run(main(), db)


def test_extension_never_shortens_a_session(db: Db) -> None:
    clock = Clock()
    sessions = Sessions(db.run, SECRET, clock=clock)

    async def main() -> None:
        await sessions.open()
        token = await sessions.create("bob", 3600)
        clock.advance(10)
        assert (await sessions.validate(token)).expires_at == clock.now + 3600
        clock.advance(3599)
        assert (await sessions.validate(token)).expires_at == clock.now + 3600
    run(main(), db)


def test_revocation_and_purge(db: Db) -> None:
    clock = Clock()
    sessions = Sessions(db.run, SECRET, clock=clock)

    async def main() -> None:
        await sessions.open()
        keep = await sessions.create("carol", 100)
        drop = await sessions.create("carol", 100)
        short = await sessions.create("carol", 5)
        assert await sessions.count("carol") == 3
        assert await sessions.revoke(sessions.decode(drop)["sessionID"])
        assert not await sessions.revoke(sessions.decode(drop)["sessionID"])
        with pytest.raises(TokenError, match="revoked"):
            await sessions.validate(drop)
        clock.advance(10)
        assert await sessions.purge() == 1
        with pytest.raises(TokenError):
            await sessions.validate(short)
        await sessions.validate(keep)
    run(main(), db)


def test_bad_tokens_are_token_errors(db: Db) -> None:
    clock = Clock()
    sessions = Sessions(db.run, SECRET, clock=clock)

    async def main() -> list[str]:
        await sessions.open()
        good = await sessions.create("dave", 60)
        header, payload, signature = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        key = signing_key(SECRET)
        forged_claims = {**claims, "username": "admin"}
        bad = {
            "empty": "",
            "one part": "abc",
            "two parts": "x.y",
            "three garbage parts": "a.b.c",
            "not base64": "!!!.###.$$$",
            "truncated": good[:-5],
            "signature dropped": f"{header}.{payload}.",
            "tampered payload": f"{header}.{b64url(json.dumps(forged_claims).encode())}.{signature}",
            "other secret": jwt.encode(claims, signing_key("another secret entirely, long enough!!"),
                                       algorithm="HS256"),
            "raw secret as key": jwt.encode(claims, SECRET, algorithm="HS256"),
            "alg none": f"{NONE_HEADER}.{payload}.",
            "alg HS512": jwt.encode(claims, key + key, algorithm="HS512"),
            "payload not an object": jwt.api_jws.encode(b"[1,2,3]", key, algorithm="HS256"),
            "payload not json": jwt.api_jws.encode(b"\xff\xfe", key, algorithm="HS256"),
            "missing sessionID": jwt.encode({k: v for k, v in claims.items() if k != "sessionID"}, key),
            "scopes not a list": jwt.encode({**claims, "scopes": "read+write"}, key),
            "username not a string": jwt.encode({**claims, "username": 7}, key),
            "jti differs": jwt.encode({**claims, "jti": "other"}, key),
            "unknown session": jwt.encode({**claims, "sessionID": "nope", "jti": "nope"}, key),
            "session of another user": jwt.encode({**claims, "username": "admin"}, key),
            "non-ascii": "é.é.é",
            "huge": "a" * 100_000,
        }
        reasons = []
        for label, token in bad.items():
            with pytest.raises(TokenError) as info:
                await sessions.validate(token)
            reasons.append(f"{label}: {info.value}")
        await sessions.validate(good)  # none of this harmed the real session
        return reasons
    reasons = run(main(), db)
    assert any("wrong signature" in r for r in reasons), reasons


# -- API tokens ------------------------------------------------------------------------------------

def test_api_tokens(db: Db) -> None:
    clock = Clock()
    tokens = ApiTokens(db.run, clock=clock)

    async def main() -> None:
        await tokens.open()
        token, value = await tokens.create("alice", "backup script", "read", clock.now + 100)
        assert looks_like_token(value) and value.startswith(token.prefix + "_")
        assert len(token.prefix) == 8 and token.prefix.isalnum()
        stored = await db.rows("SELECT * FROM api_tokens")
        assert value not in json.dumps(stored)  # only a hash is kept
        found = await tokens.check("alice", value)
        assert found is not None and not isinstance(found, str) and found.scope == "read"
        assert await tokens.check("bob", value) is None  # another user's name
        assert await tokens.check("alice", value[:-1] + ("0" if value[-1] != "0" else "1")) is None
        assert await tokens.check("alice", "password") is None
        with pytest.raises(TokenConflict):
            await tokens.create("alice", "backup script", "read+write", clock.now + 100)
        other, _ = await tokens.create("bob", "backup script", "read+write", clock.now + 100)
        assert [t.prefix for t in await tokens.list("alice")] == [token.prefix]
        # Re-dated, renamed, expired, deleted.
        updated = await tokens.update("alice", token.prefix, name="nightly", expires_at=clock.now + 10)
        assert updated is not None and updated.name == "nightly"
        assert await tokens.update("alice", other.prefix, name="x") is None
        clock.advance(10)
        expired = await tokens.check("alice", value)
        assert isinstance(expired, str) and "expired" in expired
        assert await tokens.delete("alice", token.prefix)
        assert not await tokens.delete("alice", token.prefix)
        assert await tokens.check("alice", value) is None
    run(main(), db)


# -- agent credentials -----------------------------------------------------------------------------

def test_clients_auth_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"agent1": "pw-one"}))
    os.chmod(path, 0o640)
    hashed = bcrypt.hashpw(b"pw-three", bcrypt.gensalt(4)).decode()

    async def main() -> None:
        table = CredentialTable({"agent1": Entry("pw-one")}, FILE)
        auth = ClientsAuth.for_config("", str(path), table, run=None)  # type: ignore[arg-type]
        assert auth.source == FILE and auth.writable
        assert await auth.add("agent2", "pw-two")
        assert await auth.add("agent3", hashed)  # a bcrypt hash is kept as given
        assert not await auth.add("agent1", "other")
        assert json.loads(path.read_text()) == {"agent1": "pw-one", "agent2": "pw-two", "agent3": hashed}
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the file keeps its mode
        assert await table.check("agent2", "pw-two") and await table.check("agent3", "pw-three")
        assert await auth.delete("agent2")
        assert not await auth.delete("agent2")
        assert not await table.check("agent2", "pw-two")
        assert json.loads(path.read_text()) == {"agent1": "pw-one", "agent3": hashed}
        assert [p.name for p in tmp_path.iterdir()] == ["clients.json"]  # no temporary file left
        assert await auth.check_agent("agent1", "pw-one") is None  # auth_basic's to answer
    run(main())


def test_clients_auth_in_the_store(db: Db) -> None:
    generated = CredentialTable({"rport": Entry("generated")}, STATIC)

    async def main() -> None:
        auth = ClientsAuth.for_config("", "", generated, db.run)
        assert auth.source == DB and auth.writable
        await auth.load()
        assert auth.items() == []
        assert not await auth.add("rport", "xyz")  # auth_basic's generated id is taken
        assert await auth.add("agent9", "secret9")
        assert await auth.check_agent("agent9", "secret9") is True
        assert await auth.check_agent("agent9", "wrong") is False
        assert await auth.check_agent("rport", "generated") is None
        again = ClientsAuth.for_config("", "", generated, db.run)  # a restart
        await again.load()
        assert again.items() == [{"id": "agent9", "password": "secret9"}]
        assert await again.delete("agent9")
        assert await again.check_agent("agent9", "secret9") is None
        assert await db.rows("SELECT COUNT(*) FROM clients_auth") == [(0,)]
    run(main(), db)


def test_single_static_credential_is_read_only() -> None:
    table = CredentialTable({"user1": Entry("1234")}, STATIC)
    auth = ClientsAuth.for_config("user1:1234", "", table, run=None)  # type: ignore[arg-type]
    assert not auth.writable and auth.items() == [{"id": "user1", "password": "1234"}]


# -- the core's scope check ------------------------------------------------------------------------

@pytest.mark.parametrize(("scopes", "method", "path", "allowed"), [
    (("read+write",), "DELETE", "/clients/{client_id}", True),
    (("read",), "GET", "/clients", True),
    (("read",), "HEAD", "/status", True),
    (("read",), "PUT", "/clients/{client_id}/tunnels", False),
    (("read",), "POST", "/me/tokens", False),
    (("read",), "DELETE", "/logout", False),
    (("clients-auth",), "POST", "/clients-auth", True),
    (("clients-auth",), "DELETE", "/clients-auth/{client_auth_id}", True),
    (("clients-auth",), "GET", "/clients", False),
    (("clients-auth",), "GET", "/clients-authx", False),
    (("read", "clients-auth"), "GET", "/status", True),
    ((), "GET", "/status", False),
])
def test_scopes(scopes: tuple[str, ...], method: str, path: str, allowed: bool) -> None:
    user = User("u", scopes=scopes)
    if allowed:
        check_scopes(user, method, path)
    else:
        with pytest.raises(ApiError) as info:
            check_scopes(user, method, path)
        assert info.value.status == 403 and info.value.items[0].code == "ERR_CODE_TOKEN_SCOPE"
        assert "allows" in info.value.items[0].title


# -- a real server in this process, with the sessions' clock in the test's hands --------------------

def test_expiry_on_a_real_server_with_an_injected_clock(tmp_path: Path) -> None:
    async def main() -> None:
        config = load_server_config(overrides={
            "server": {"address": "127.0.0.1:0", "auth": "user1:1234", "data_dir": str(tmp_path / "data")},
            "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz", "jwt_secret": SECRET},
        })
        server = create_server(config)
        await server.start()
        try:
            clock = Clock(time.time())
            service = server.state["auth_jwt"]
            service.sessions.clock = clock
            service.tokens.clock = clock
            async with httpx.AsyncClient(base_url=f"http://{server.api_address}/api/v1", timeout=10) as api:
                resp = await api.get("/login", params={"token-lifetime": 300}, auth=("admin", "foobaz"))
                token = resp.json()["data"]["token"]
                bearer = {"Authorization": f"Bearer {token}"}
                for _ in range(3):  # used every 299 s: extended each time
                    clock.advance(299)
                    assert (await api.get("/me", headers=bearer)).status_code == 200
                clock.advance(300)
                resp = await api.get("/me", headers=bearer)
                assert resp.status_code == 401 and resp.json()["errors"][0]["detail"] == "token expired"

                resp = await api.post("/me/tokens", auth=("admin", "foobaz"), json={
                    "scope": "read", "name": "short",
                    "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now + 60))})
                value = resp.json()["data"]["token"]
                assert (await api.get("/status", auth=("admin", value))).status_code == 200
                clock.advance(120)
                resp = await api.get("/status", auth=("admin", value))
                assert resp.status_code == 401 and "expired" in resp.json()["errors"][0]["detail"]
        finally:
            await server.stop()
    run(main())
