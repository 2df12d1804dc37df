"""The two-factor login with an authenticator app (RPort's TOTP flow, ``[api] totp_enabled``)
and the administrators' view of users' login sessions.

1. ``POST /login`` with the password gives a token good only for ``POST /verify-2fa`` (and, if
   the user has no TOTP secret yet, for ``POST /me/totp-secret``), for
   ``totp_login_session_ttl``, never extended.
2. ``POST /me/totp-secret`` (first time) creates the secret: ``{"secret", "qr"}``.
3. ``POST /verify-2fa`` with that token and ``{"username", "token": "<6-digit code>"}`` ends the
   first step's session and gives the real token. A wrong code counts as a failed login (the
   address ban of ``max_failed_login`` and the user's ``user_login_wait``), as a wrong password.

``GET``/``DELETE /me/totp-secret`` need the real token. The ``/me/totp-secret`` answers are
RPort's (``{"secret", "qr"}`` at the top level, which RPort's docs and scripts read), with the
same object under ``data`` too, as every other answer of this API has it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rport.core.plugin import ApiError, Audit, data_response, read_json, require_admin

from . import totp
from .auth import (
    TWO_FA,
    address_banned,
    address_key,
    client_address,
    unauthorized,
    user_key,
    user_waiting,
)
from .sessions import TokenError

if TYPE_CHECKING:
    from .service import AuthJwt

log = logging.getLogger("rport.plugins.auth_jwt")

NO_SECRET = "time based one time secret key should be generated for this user"


def _disabled() -> ApiError:
    return ApiError(400, "TotP is disabled", code="ERR_CODE_TOTP_DISABLED",
                    detail="[api] totp_enabled is false")


def register_two_fa(server: Any, register: Callable[..., None],
                    service: Callable[[], "AuthJwt"]) -> None:
    from .routes import _fields, token_lifetime

    api = server.config.api

    async def verify(request: Request) -> Response:
        """Second login step: the code of your authenticator app for the real token."""
        if not api.totp_enabled:
            raise ApiError(409, "2fa is disabled", code="ERR_CODE_2FA_DISABLED",
                           detail="[api] totp_enabled is false: POST /api/v1/login gives the token")
        lifetime = token_lifetime(request, service().config)
        body = _fields(await read_json(request, api.max_request_bytes), ("username", "token"))
        username, code = body.get("username"), body.get("token")
        address = client_address(request)
        addresses, users_ = server.api_throttle, server.api_user_throttle
        if (error := address_banned(addresses, address)) is not None:
            raise error
        if not isinstance(username, str) or not username:
            raise unauthorized("username is required", title="username is required")
        if (error := user_waiting(users_, username)) is not None:
            raise error
        if not isinstance(code, str) or not code:
            raise unauthorized("the code of the authenticator app is required",
                               title="token is required")
        scheme, _, bearer = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            raise ApiError(400, "token is required", code="ERR_CODE_INVALID_REQUEST",
                           detail="send the token of POST /api/v1/login as Authorization: Bearer")
        sessions = service().sessions
        try:
            claims = sessions.decode(bearer.strip())
            if TWO_FA not in claims["scopes"]:
                raise TokenError("not the token of the first login step (POST /api/v1/login)")
            session = await sessions.validate(bearer.strip(), extend=False)
        except TokenError as exc:
            addresses.failure(address_key(address))
            log.warning("second login step refused from %s: %s", address, exc)
            raise unauthorized(str(exc)) from None
        if session.username != username:
            raise unauthorized("the username is not the one of the login token")
        record = await service().users.get(username)
        if record is None:
            raise unauthorized(f"user {username!r} no longer exists")
        secret = totp.secret_of(record.totp_secret)
        if not secret:
            raise ApiError(409, NO_SECRET, code="ERR_CODE_TOTP_NO_SECRET",
                           detail="create it with POST /api/v1/me/totp-secret and this token")
        step = totp.matching_step(secret, code)
        replayed = step is not None and not await service().users.use_totp_step(username, step)
        if step is None or replayed:
            addresses.failure(address_key(address))
            users_.failure(user_key(username))
            why = "a code used before" if replayed else "wrong code"
            log.warning("second login step failed for user %r from %s: %s", username, address, why)
            if replayed:
                raise unauthorized("each code is good for one login: wait for the next one",
                                   title="code already used")
            raise unauthorized("the code is not the authenticator app's code of now",
                               title="invalid code")
        addresses.success(address_key(address))
        users_.success(user_key(username))
        await sessions.revoke(session.id)  # the first step's token is used up
        token = await sessions.create(username, lifetime, address=address)
        log.info("user %s logged in from %s with a TOTP code (token lifetime %gs)", username,
                 address, lifetime)
        return data_response({"token": token, "two_fa": None})

    def totp_response(secret: str, username: str) -> JSONResponse:
        uri = totp.uri(secret, username, api.totp_account_name)
        payload = {"secret": secret, "qr": totp.qr_png_base64(uri), "uri": uri}
        return JSONResponse({**payload, "data": payload})

    async def get_secret(request: Request) -> Response:
        """Your TOTP secret and its QR code (needs the token of a completed login)."""
        if not api.totp_enabled:
            raise _disabled()
        user = request.state.user
        record = await service().users.get(user.username)
        secret = totp.secret_of(record.totp_secret) if record else ""
        if not secret:
            raise ApiError(404, NO_SECRET, code="ERR_CODE_TOTP_NO_SECRET")
        return totp_response(secret, user.username)

    async def create_secret(request: Request) -> Response:
        """Create your TOTP secret (once; with the token of the first login step or later)."""
        if not api.totp_enabled:
            raise _disabled()
        user = request.state.user
        users = service().users
        record = await users.get(user.username)
        if record is not None and totp.secret_of(record.totp_secret):
            raise ApiError(409, "cannot create new totP secret when another one already exists",
                           code="ERR_CODE_ALREADY_EXIST",
                           detail="delete it first (DELETE /api/v1/me/totp-secret)")
        request.state.audit.affected_id = user.username
        secret = totp.new_secret()
        await users.update(user.username, totp_secret=totp.uri(secret, user.username,
                                                               api.totp_account_name))
        log.info("user %s created a TOTP secret", user.username)
        return totp_response(secret, user.username)

    async def delete_secret(request: Request) -> Response:
        """Delete your TOTP secret (needs the token of a completed login)."""
        if not api.totp_enabled:
            raise _disabled()
        user = request.state.user
        request.state.audit.affected_id = user.username
        await service().users.update(user.username, totp_secret="")
        log.info("user %s deleted their TOTP secret", user.username)
        return Response(status_code=204)

    register("/verify-2fa", verify, ["POST"], name="verify_2fa", params=("token-lifetime",),
             public=True, body={"type": "object", "required": ["username", "token"],
                                "properties": {"username": {"type": "string"},
                                               "token": {"type": "string"}}},
             responses={200: "the token", 400: "no Bearer token, a bad body or token-lifetime",
                        401: "a wrong or expired login token, a wrong code, or too many failed "
                             "logins", 409: "two-factor login is off, or the user has no TOTP "
                                            "secret yet", 413: "body too large",
                        429: "a login of this user failed just now"})
    secret_codes = {400: "TOTP is disabled ([api] totp_enabled)"}
    register("/me/totp-secret", get_secret, name="totp_secret",
             responses={200: "{secret, qr}", **secret_codes, 404: "no secret yet"})
    register("/me/totp-secret", create_secret, ["POST"], name="totp_secret_create", body=False,
             responses={200: "{secret, qr}", **secret_codes, 409: "you have a secret already"},
             audit=Audit("auth.user.totp", "create"))  # (never the secret: no response kept)
    register("/me/totp-secret", delete_secret, ["DELETE"], name="totp_secret_delete",
             responses={204: "deleted", **secret_codes},
             audit=Audit("auth.user.totp", "delete"))

    # -- users' sessions (administrators) ----------------------------------------------------

    async def list_sessions(request: Request) -> Response:
        """A user's live login sessions."""
        require_admin(request)
        return data_response(await service().sessions.of_user(request.path_params["user_id"]))

    async def delete_sessions(request: Request) -> Response:
        """End every login session of a user."""
        admin = require_admin(request)
        name = request.path_params["user_id"]
        ended = await service().sessions.revoke_user(name)
        log.info("%d login session(s) of user %s ended by %s", ended, name, admin.username)
        return Response(status_code=204)

    async def delete_session(request: Request) -> Response:
        """End one login session of a user."""
        admin = require_admin(request)
        name, sid = request.path_params["user_id"], request.path_params["session_id"]
        if not await service().sessions.revoke_of_user(name, sid):
            raise ApiError(404, f'session "{sid}" of user "{name}" not found',
                           code="ERR_CODE_NOT_FOUND")
        log.info("login session %s of user %s ended by %s", sid, name, admin.username)
        return Response(status_code=204)

    admin_403 = "the caller is not in the Administrators group"
    register("/users/{user_id}/sessions", list_sessions, name="user_sessions",
             responses={200: "the sessions", 403: admin_403})
    register("/users/{user_id}/sessions", delete_sessions, ["DELETE"], name="user_sessions_delete",
             responses={204: "ended", 403: admin_403},
             audit=Audit("auth.api.sessions", "delete", affected="path:user_id"))
    register("/users/{user_id}/sessions/{session_id}", delete_session, ["DELETE"],
             name="user_session_delete",
             responses={204: "ended", 403: admin_403, 404: "no such session of that user"},
             audit=Audit("auth.api.session", "delete", affected="path:user_id"))  # as RPort
