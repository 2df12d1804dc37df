"""Login sessions: an HS256 JWT names a session kept server-side (table ``api_sessions`` of
the store). As in RPort the token itself has no ``exp``: the session expires, is extended while it
is used (to at least now + its lifetime) and is deleted at logout, so revocation is immediate.

Plain logic: the store is the server's ``store.run`` (``await run(fn, *args)`` calls
``fn(sqlalchemy_connection, *args)`` in one transaction) and the clock any ``() -> float`` of Unix
seconds, so tests inject both.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Awaitable, Callable

import attrs
import jwt
import sqlalchemy as sa

from .tables import api_sessions

Runner = Callable[..., Awaitable[Any]]
"""``await run(fn, *args)``: ``fn(conn, *args)`` in one transaction of the store."""
Clock = Callable[[], float]

ALGORITHM = "HS256"
CLAIMS = ("username", "sessionID", "scopes", "jti", "iat")

class TokenError(Exception):
    """A bearer token that is not valid; the message says why (for the 401's detail)."""


@attrs.frozen
class SessionInfo:
    id: str
    username: str
    scopes: tuple[str, ...]
    expires_at: float


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``[api] jwt_secret``: its SHA-256, so that every secret gives a key of
    the length HS256 wants (the strength is still the secret's; short ones are warned about)."""
    return hashlib.sha256(b"rport-jwt\0" + secret.encode("utf-8")).digest()


class Sessions:
    def __init__(self, run: Runner, secret: str, *, clock: Clock = time.time) -> None:
        self._run = run
        self._key = signing_key(secret)
        self.clock = clock

    async def open(self) -> None:
        await self.purge()

    async def create(self, username: str, lifetime: float, *, scopes: tuple[str, ...] = ("read+write",),
                     address: str = "") -> str:
        """A new session of ``username`` valid for ``lifetime`` seconds; returns its token."""
        now = self.clock()
        sid = str(uuid.uuid4())

        await self._run(_insert, {"id": sid, "username": username, "lifetime": float(lifetime),
                                  "created_at": now, "expires_at": now + lifetime,
                                  "last_used": now, "address": address})
        claims = {"username": username, "sessionID": sid, "scopes": list(scopes), "jti": sid,
                  "iat": int(now)}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a well-formed token signed with our key; :class:`TokenError` otherwise."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM],
                                options={"require": list(CLAIMS), "verify_iat": False,
                                         "verify_exp": False, "verify_nbf": False})
        except jwt.InvalidSignatureError:
            raise TokenError("invalid token: wrong signature") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        except Exception as exc:  # a parser surprise must still be a 401, never a 500
            raise TokenError(f"invalid token: {exc.__class__.__name__}") from None
        scopes = claims.get("scopes")
        if not (isinstance(claims.get("username"), str) and isinstance(claims.get("sessionID"), str)
                and isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)
                and claims.get("jti") == claims.get("sessionID")):
            raise TokenError("invalid token: malformed claims")
        return claims

    async def validate(self, token: str, *, extend: bool = True) -> SessionInfo:
        """The session of a valid token, extended to at least now + its lifetime (unless
        ``extend`` is false: a two-factor login token lives only its lifetime). Raises
        :class:`TokenError` for a malformed, forged, expired or revoked token."""
        claims = self.decode(token)
        now = self.clock()
        sid, username = claims["sessionID"], claims["username"]

        result = await self._run(_touch, sid, username, now, extend)
        if isinstance(result, str):
            raise TokenError(result)
        return SessionInfo(sid, username, tuple(claims["scopes"]), result[1])

    async def revoke(self, session_id: str) -> bool:
        """Delete a session (logout); whether it existed."""
        return await self._run(_delete, api_sessions.c.id == session_id) > 0

    async def revoke_user(self, username: str, keep: str | None = None) -> int:
        """Delete every session of ``username`` but ``keep``; how many."""
        where = api_sessions.c.username == username
        if keep is not None:
            where = sa.and_(where, api_sessions.c.id != keep)
        return await self._run(_delete, where)

    async def of_user(self, username: str) -> list[dict[str, Any]]:
        """The live sessions of ``username`` (RPort's ``GET /users/{id}/sessions``)."""
        return await self._run(_of_user, username, self.clock())

    async def revoke_of_user(self, username: str, session_id: str) -> bool:
        return await self._run(_delete, sa.and_(api_sessions.c.id == session_id,
                                                api_sessions.c.username == username)) > 0

    async def purge(self) -> int:
        """Delete expired sessions; how many."""
        return await self._run(_delete, api_sessions.c.expires_at <= self.clock())

    async def count(self, username: str | None = None) -> int:
        return await self._run(_count, username)


# -- in the store's transaction ---------------------------------------------------------------------

def _insert(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(api_sessions.insert(), row)


# Built once (every request with a login token touches its session).
_SESSION = sa.select(api_sessions.c.username, api_sessions.c.lifetime,
                     api_sessions.c.expires_at).where(api_sessions.c.id == sa.bindparam("sid"))
_EXTEND = api_sessions.update().where(api_sessions.c.id == sa.bindparam("sid")).values(
    # never shortened, also when another node extended it meanwhile
    expires_at=sa.case((api_sessions.c.expires_at > sa.bindparam("expiry"), api_sessions.c.expires_at),
                       else_=sa.bindparam("expiry")),
    last_used=sa.bindparam("now"))


def _touch(conn: sa.Connection, sid: str, username: str, now: float,
           extend: bool = True) -> tuple[str, float] | str:
    """Extend a session in use; the reason (str) when it cannot be used."""
    row = conn.execute(_SESSION, {"sid": sid}).first()
    if row is None:
        return "token revoked or unknown session"
    owner, lifetime, expires_at = row
    if owner != username:
        return "token does not match its session"
    if expires_at <= now:
        conn.execute(api_sessions.delete().where(api_sessions.c.id == sid))
        return "token expired"
    if not extend:
        return owner, expires_at
    new_expiry = max(expires_at, now + lifetime)
    conn.execute(_EXTEND, {"sid": sid, "expiry": new_expiry, "now": now})
    return owner, new_expiry


def _delete(conn: sa.Connection, where: Any) -> int:
    return conn.execute(api_sessions.delete().where(where)).rowcount


def _of_user(conn: sa.Connection, username: str, now: float) -> list[dict[str, Any]]:
    from .apitokens import rfc3339

    rows = conn.execute(sa.select(api_sessions).where(api_sessions.c.username == username,
                                                      api_sessions.c.expires_at > now)
                        .order_by(api_sessions.c.created_at))
    return [{"session_id": row.id, "username": row.username, "expires_at": rfc3339(row.expires_at),
             "last_access_at": rfc3339(row.last_used), "ip_address": row.address,
             "user_agent": ""} for row in rows]


def _count(conn: sa.Connection, username: str | None) -> int:
    stmt = sa.select(sa.func.count()).select_from(api_sessions)
    if username is not None:
        stmt = stmt.where(api_sessions.c.username == username)
    return conn.execute(stmt).scalar_one()
