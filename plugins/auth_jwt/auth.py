"""Who is calling: ``Authorization: Bearer <login token>``, HTTP Basic with an API token as the
password, and the per-user half of the brute-force protection, as RPort has it: after a failed
login a user name waits ``[api] user_login_wait`` (2 s) before it may try again (429), which
slows guessing one password from many addresses without locking its owner out. Addresses are
what is banned, after ``[api] max_failed_login`` failures (the core throttles them).

Every credential of ours that is wrong is a 401 in the standard envelope, never a 500; Basic
credentials that are a user's password are auth_basic's to accept (we return None for them).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from typing import TYPE_CHECKING, Any

from rport.core.plugin import ApiError, User

from .apitokens import looks_like_token
from .sessions import TokenError

if TYPE_CHECKING:
    from .service import AuthJwt

log = logging.getLogger("rport.plugins.auth_jwt")

VIA = "auth_jwt"


def unauthorized(detail: str, title: str = "unauthorized", **headers: str) -> ApiError:
    return ApiError(401, title, code="ERR_CODE_UNAUTHORIZED", detail=detail, headers=dict(headers))


def client_address(request: Any) -> str:
    return request.client.host if request.client else "?"


def address_key(address: str) -> str:
    return f"api-address:{address}"  # the core's key, so both count against one address


def user_key(username: str) -> str:
    return f"api-user:{username}"


def decode_basic(value: str) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic credential, None if it is malformed."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def address_banned(throttle: Any, address: str) -> ApiError | None:
    """The 401 for an address banned after too many failed logins (as the core words it), or
    None."""
    wait = throttle.blocked_for(address_key(address))
    if wait <= 0:
        return None
    return unauthorized(f"too many failed logins from {address}; try again in {math.ceil(wait)}s",
                        **{"Retry-After": str(math.ceil(wait))})


def user_waiting(throttle: Any, username: str) -> ApiError | None:
    """RPort's 429 for a user name whose last login failed less than ``user_login_wait`` ago, or
    None."""
    wait = throttle.blocked_for(user_key(username))
    if wait <= 0:
        return None
    return ApiError(429, "too many requests, please try later", code="ERR_CODE_TOO_MANY_REQUESTS",
                    detail=f"a login for user {username!r} failed just now (api.user_login_wait); "
                           f"try again in {math.ceil(wait)}s",
                    headers={"Retry-After": str(math.ceil(wait))})


async def authenticate(service: "AuthJwt", throttle: Any, request: Any) -> User | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return await _bearer(service, request, value.strip())
    if scheme == "basic":
        return await _basic(service, throttle, request, value)
    return None


TWO_FA = "2fa"
"""The scope of a two-factor login's first token: good only for ``POST /verify-2fa``..."""
TOTP_CREATE = "totp-create"
"""...and, for a user without a TOTP secret yet, for ``POST /me/totp-secret`` (RPort's flow)."""
VERIFY_PATH = "/api/v1/verify-2fa"
TOTP_PATH = "/api/v1/me/totp-secret"


def two_fa_only() -> ApiError:
    return unauthorized("this token is only good for the second step of the login: POST "
                        f"{VERIFY_PATH} with a code of your authenticator app")


async def _bearer(service: "AuthJwt", request: Any, token: str) -> User:
    if not token:
        raise unauthorized("missing bearer token")
    try:
        claims = service.sessions.decode(token)
        first_step = TWO_FA in claims["scopes"]
        if first_step and not (TOTP_CREATE in claims["scopes"] and request.method == "POST"
                               and request.url.path == TOTP_PATH):
            raise two_fa_only()
        session = await service.sessions.validate(token, extend=not first_step)
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    record = await service.users.get(session.username)
    if record is None:
        raise unauthorized(f"user {session.username!r} no longer exists")
    request.state.auth_jwt_session = session.id
    # The first step's token, on POST /me/totp-secret only: create the secret it needs.
    scopes = ("read+write",) if first_step else session.scopes
    return User(session.username, record.groups, via=VIA, scopes=scopes)


async def _basic(service: "AuthJwt", throttle: Any, request: Any, value: str) -> User | None:
    creds = decode_basic(value)
    if creds is None:
        return None  # auth_basic answers a malformed Basic header
    username, password = creds
    if (error := user_waiting(throttle, username)) is not None:
        log.info("API authentication refused from %s: user %r must wait after a failed login",
                 client_address(request), username)
        raise error
    users = service.users
    record = await users.get(username)
    if record is not None and looks_like_token(password):
        found = await service.tokens.check(username, password)
        if isinstance(found, str):
            raise unauthorized(found)
        if found is not None:
            throttle.success(user_key(username))
            return User(username, record.groups, via=VIA, scopes=(found.scope,))
    # A password: auth_basic accepts it or not; we only make the user wait after a failure, so
    # that guessing one user's password from many addresses is slow too.
    if record is not None:
        if await users.check_password(username, password) is not None:
            throttle.success(user_key(username))
            if service.server.config.api.totp_enabled:
                raise unauthorized("two-factor login is on: a password is good only at POST "
                                   "/api/v1/login (then /verify-2fa); scripts use an API token "
                                   "as the Basic password")
        else:
            throttle.failure(user_key(username))
    return None
