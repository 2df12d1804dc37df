"""Login sessions: an HS256 JWT names a session kept server-side (table ``api_sessions`` of
rportd.db). As in RPort the token itself has no ``exp``: the session expires, is extended while it
is used (to at least now + its lifetime) and is deleted at logout, so revocation is immediate.

Plain logic: the store is any ``async run(fn(sqlite3.Connection))`` and the clock any
``() -> float`` of Unix seconds, so tests inject both.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from typing import Any, Awaitable, Callable

import attrs
import jwt

Runner = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
Clock = Callable[[], float]

ALGORITHM = "HS256"
CLAIMS = ("username", "sessionID", "scopes", "jti", "iat")

_SCHEMA = """CREATE TABLE IF NOT EXISTS api_sessions (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    lifetime REAL NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used REAL NOT NULL,
    address TEXT NOT NULL DEFAULT ''
)"""


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
        def setup(db: sqlite3.Connection) -> None:
            with db:
                db.execute(_SCHEMA)
        await self._run(setup)
        await self.purge()

    async def create(self, username: str, lifetime: float, *, scopes: tuple[str, ...] = ("read+write",),
                     address: str = "") -> str:
        """A new session of ``username`` valid for ``lifetime`` seconds; returns its token."""
        now = self.clock()
        sid = str(uuid.uuid4())

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT INTO api_sessions (id, username, lifetime, created_at, expires_at, "
                           "last_used, address) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (sid, username, float(lifetime), now, now + lifetime, now, address))
        await self._run(write)
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

    async def validate(self, token: str) -> SessionInfo:
        """The session of a valid token, extended to at least now + its lifetime. Raises
        :class:`TokenError` for a malformed, forged, expired or revoked token."""
        claims = self.decode(token)
        now = self.clock()
        sid, username = claims["sessionID"], claims["username"]

        def touch(db: sqlite3.Connection) -> tuple[str, float] | str:
            with db:
                row = db.execute("SELECT username, lifetime, expires_at FROM api_sessions WHERE id=?",
                                 (sid,)).fetchone()
                if row is None:
                    return "token revoked or unknown session"
                owner, lifetime, expires_at = row
                if owner != username:
                    return "token does not match its session"
                if expires_at <= now:
                    db.execute("DELETE FROM api_sessions WHERE id=?", (sid,))
                    return "token expired"
                new_expiry = max(expires_at, now + lifetime)
                db.execute("UPDATE api_sessions SET expires_at=?, last_used=? WHERE id=?",
                           (new_expiry, now, sid))
                return owner, new_expiry
        result = await self._run(touch)
        if isinstance(result, str):
            raise TokenError(result)
        return SessionInfo(sid, username, tuple(claims["scopes"]), result[1])

    async def revoke(self, session_id: str) -> bool:
        """Delete a session (logout); whether it existed."""
        def write(db: sqlite3.Connection) -> bool:
            with db:
                return db.execute("DELETE FROM api_sessions WHERE id=?", (session_id,)).rowcount > 0
        return await self._run(write)

    async def purge(self) -> int:
        """Delete expired sessions; how many."""
        now = self.clock()

        def write(db: sqlite3.Connection) -> int:
            with db:
                return db.execute("DELETE FROM api_sessions WHERE expires_at <= ?", (now,)).rowcount
        return await self._run(write)

    async def count(self, username: str | None = None) -> int:
        def read(db: sqlite3.Connection) -> int:
            if username is None:
                return db.execute("SELECT COUNT(*) FROM api_sessions").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM api_sessions WHERE username=?",
                              (username,)).fetchone()[0]
        return await self._run(read)
