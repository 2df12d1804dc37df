"""API tokens for scripts (RPort's ``/me/tokens``): ``<prefix>_<uuid>`` used as the password of
HTTP Basic auth, each limited to a scope. Only a SHA-256 of the token is stored (table
``api_tokens`` of the store): the token has 122 random bits, so a slow hash would add nothing but
latency to every call. The token itself is shown once, when it is created.

Plain logic: the store runner and the clock are injected, as in :mod:`.sessions`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
import time
import uuid
from typing import Any

import attrs
import sqlalchemy as sa

from .sessions import Clock, Runner
from .tables import api_tokens

SCOPES = ("read", "read+write", "clients-auth")
PREFIX_LENGTH = 8
MAX_NAME = 249
TOKEN_RE = re.compile(r"([A-Za-z0-9]{8})_([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})")
_ALPHABET = string.ascii_letters + string.digits

class TokenConflict(Exception):
    """Another token of the user has this name."""


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def parse_time(value: str) -> float:
    """An RFC 3339 date-time (``2025-01-31T12:00:00Z``; no zone means UTC) as Unix seconds;
    ValueError otherwise."""
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(password: str) -> bool:
    return TOKEN_RE.fullmatch(password) is not None


@attrs.frozen
class ApiToken:
    username: str
    prefix: str
    name: str
    scope: str
    created_at: float
    expires_at: float
    last_used: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "name": self.name, "scope": self.scope,
                "created_at": rfc3339(self.created_at), "expires_at": rfc3339(self.expires_at),
                "last_used_at": rfc3339(self.last_used)}


_COLUMNS = [api_tokens.c[name] for name in ("username", "prefix", "name", "scope", "created_at",
                                              "expires_at", "last_used")]


class ApiTokens:
    def __init__(self, run: Runner, *, clock: Clock = time.time) -> None:
        self._run = run
        self.clock = clock

    async def open(self) -> None:
        """Nothing to do: the table is the plugin's migration's."""

    async def create(self, username: str, name: str, scope: str, expires_at: float) -> tuple[ApiToken, str]:
        """A new token; returns it and its secret value (never stored in clear)."""
        now = self.clock()
        try:
            return await self._run(_create, username, name, scope, now, expires_at)
        except sa.exc.IntegrityError:  # the same name, created at the same time elsewhere
            raise TokenConflict(name) from None

    async def list(self, username: str) -> list[ApiToken]:
        return await self._run(_list, username)

    async def get(self, username: str, prefix: str) -> ApiToken | None:
        return await self._run(_get, username, prefix)

    async def update(self, username: str, prefix: str, *, name: str | None = None,
                     expires_at: float | None = None) -> ApiToken | None:
        """Rename or re-date a token; None if the user has no such token."""
        try:
            return await self._run(_update, username, prefix, name, expires_at)
        except sa.exc.IntegrityError:
            raise TokenConflict(name) from None

    async def delete(self, username: str, prefix: str) -> bool:
        return await self._run(_delete, username, prefix)

    async def delete_all(self, username: str) -> int:
        """Delete every token of ``username`` (a deleted or renamed user); how many."""
        return await self._run(_delete_all, username)

    async def check(self, username: str, value: str) -> ApiToken | str | None:
        """The token ``value`` of ``username``: the token if it is valid, a reason (str) if it
        is this user's token but expired, None if it is not one of the user's tokens."""
        match = TOKEN_RE.fullmatch(value)
        if match is None:
            return None
        return await self._run(_check, username, match.group(1), hash_token(value), self.clock())


# -- in the store's transaction ---------------------------------------------------------------------

def _one(username: str, prefix: str) -> Any:
    return (api_tokens.c.username == username) & (api_tokens.c.prefix == prefix)


def _name_taken(conn: sa.Connection, username: str, name: str, prefix: str = "") -> bool:
    return conn.execute(sa.select(api_tokens.c.prefix).where(
        api_tokens.c.username == username, api_tokens.c.name == name,
        api_tokens.c.prefix != prefix)).first() is not None


def _create(conn: sa.Connection, username: str, name: str, scope: str, now: float,
            expires_at: float) -> tuple[ApiToken, str]:
    if _name_taken(conn, username, name):
        raise TokenConflict(name)
    while True:
        prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH))
        if conn.execute(sa.select(api_tokens.c.prefix).where(_one(username, prefix))).first() is None:
            break
    value = f"{prefix}_{uuid.uuid4()}"
    conn.execute(api_tokens.insert().values(
        username=username, prefix=prefix, name=name, scope=scope, created_at=now,
        expires_at=expires_at, last_used=None, token_hash=hash_token(value)))
    return ApiToken(username, prefix, name, scope, now, expires_at), value


def _list(conn: sa.Connection, username: str) -> list[ApiToken]:
    rows = conn.execute(sa.select(*_COLUMNS).where(api_tokens.c.username == username)
                        .order_by(api_tokens.c.created_at, api_tokens.c.prefix))
    return [ApiToken(*row) for row in rows]


def _get(conn: sa.Connection, username: str, prefix: str) -> ApiToken | None:
    row = conn.execute(sa.select(*_COLUMNS).where(_one(username, prefix))).first()
    return ApiToken(*row) if row else None


def _update(conn: sa.Connection, username: str, prefix: str, name: str | None,
            expires_at: float | None) -> ApiToken | None:
    if name is not None and _name_taken(conn, username, name, prefix):
        raise TokenConflict(name)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    if expires_at is not None:
        values["expires_at"] = expires_at
    if values:
        conn.execute(api_tokens.update().where(_one(username, prefix)).values(**values))
    return _get(conn, username, prefix)


def _delete(conn: sa.Connection, username: str, prefix: str) -> bool:
    return conn.execute(api_tokens.delete().where(_one(username, prefix))).rowcount > 0


# Built once (every request with an API token checks it).
def _delete_all(conn: sa.Connection, username: str) -> int:
    return conn.execute(api_tokens.delete().where(api_tokens.c.username == username)).rowcount


_TOKEN = sa.select(*_COLUMNS, api_tokens.c.token_hash).where(
    api_tokens.c.username == sa.bindparam("user"), api_tokens.c.prefix == sa.bindparam("pre"))
_USED = api_tokens.update().where(
    api_tokens.c.username == sa.bindparam("user"), api_tokens.c.prefix == sa.bindparam("pre")
).values(last_used=sa.bindparam("now"))


def _check(conn: sa.Connection, username: str, prefix: str, digest: str,
           now: float) -> ApiToken | str | None:
    row = conn.execute(_TOKEN, {"user": username, "pre": prefix}).first()
    if row is None or not hmac.compare_digest(row[-1], digest):
        return None
    token = ApiToken(*row[:-1])
    if token.expires_at <= now:
        return f"API token {prefix} expired at {rfc3339(token.expires_at)}"
    if token.last_used is None or now - token.last_used >= 1:
        conn.execute(_USED, {"user": username, "pre": prefix, "now": now})
    return attrs.evolve(token, last_used=now)
