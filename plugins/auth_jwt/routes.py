"""auth_jwt's API routes (RPort's paths, fields and messages, rport-api.md §1.1 and §1.6):
``/login``, ``/logout``, ``/me``, ``/me/tokens`` and ``/clients-auth``."""

from __future__ import annotations

import logging
from typing import Any, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ApiError,
    Audit,
    ResourceSpec,
    apply_list_query,
    data_response,
    effective_permissions,
    parse_list_query,
    read_body,
    read_json,
    require_admin,
    revoke_sessions,
)

from .apitokens import MAX_NAME, SCOPES, ApiToken, TokenConflict, parse_time
from . import totp
from .auth import (
    TOTP_CREATE,
    TWO_FA,
    address_banned,
    address_key,
    client_address,
    decode_basic,
    unauthorized,
    user_key,
    user_waiting,
)
from .clientsauth import MIN_LENGTH
from .service import AuthJwt
from .twofa import register_two_fa

log = logging.getLogger("rport.plugins.auth_jwt")

CLIENTS_AUTH = ResourceSpec(
    name="clients_auth", sort_fields={"id"}, default_sort="id", filter_fields={"id"},
    fields={"id", "password"}, default_fields=None, page_default=50, page_max=500)

INVALID = "ERR_CODE_INVALID_REQUEST"
LOGIN_AUDIT = Audit("auth.api.session", "create", request=False, failed="failed")
"""Logins in the audit log (RPort records none): the user, from where, and failures."""


def invalid(title: str, detail: str = "", status: int = 400, code: str = INVALID) -> ApiError:
    return ApiError(status, title, code=code, detail=detail)


def _fields(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys (RPort rejects unknown fields)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                       detail="json: the body must be an object")
    for key in body:
        if key not in allowed:
            raise ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON",
                           detail=f'json: unknown field "{key}"')
    return body


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "t", "yes"):
        return True
    if lowered in ("0", "false", "f", "no", ""):
        return False
    raise invalid(f"Invalid {name} param {value}.")


def token_lifetime(request: Request, cfg: Any) -> float:
    """``?token-lifetime=`` seconds (0 or absent: ``token_lifetime``), RPort's 400s."""
    raw = request.query_params.get("token-lifetime", "")
    if raw == "":
        return float(cfg.token_lifetime)
    digits = raw[1:] if raw.startswith("+") else raw
    if not digits.isascii() or not digits.isdigit():  # as Go's Atoi: ASCII digits, no blanks
        raise invalid(f"invalid token-lifetime: {raw!r}", "a number of seconds")
    value = int(digits)
    if value > cfg.max_token_lifetime:
        raise invalid(f"requested token lifetime exceeds max allowed {int(cfg.max_token_lifetime)}")
    return float(value) if value else float(cfg.token_lifetime)


def register_routes(server: Any, register: Callable[..., None], service: Callable[[], AuthJwt]) -> None:
    api = server.config.api

    # -- login, logout, me -----------------------------------------------------------------

    def lifetime_of(request: Request) -> float:
        return token_lifetime(request, service().config)

    async def credentials_of(request: Request) -> tuple[str, str, str]:
        if request.method == "GET":
            header = request.headers.get("authorization", "")
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() != "basic":
                raise unauthorized("log in with HTTP Basic credentials", title="auth is required")
            creds = decode_basic(value)
            if creds is None:
                address = client_address(request)
                server.api_throttle.failure(address_key(address))
                log.warning("login failed from %s: malformed Basic authorization header", address)
                raise unauthorized("malformed Basic authorization header")
            return (*creds, "")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            body = _fields(await read_json(request, api.max_request_bytes),
                           ("username", "password", "new_password"))
        elif media == "application/x-www-form-urlencoded":
            raw = await read_body(request, api.max_request_bytes)
            try:
                body = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            except (UnicodeDecodeError, ValueError) as exc:
                raise invalid("Invalid form data.", str(exc)) from None
        else:
            raise invalid(f"unsupported content type: {media}", code="ERR_CODE_UNSUPPORTED_CONTENT_TYPE")
        username, password = body.get("username"), body.get("password")
        new_password = body.get("new_password") or ""
        if not (isinstance(username, str) and isinstance(password, str) and username and password):
            raise unauthorized("username and password are required", title="auth is required")
        if not isinstance(new_password, str):
            raise invalid("Invalid JSON data.", 'json: "new_password" must be a string',
                          code="ERR_CODE_INVALID_JSON")
        return username, password, new_password

    async def login(request: Request) -> Response:
        """Log in with a password (Basic, JSON or form) and get a token for Bearer auth."""
        lifetime = lifetime_of(request)
        username, password, new_password = await credentials_of(request)
        address = client_address(request)
        addresses, users_ = server.api_throttle, server.api_user_throttle
        if (error := address_banned(addresses, address)) is not None:
            log.warning("login refused for user %r from %s: too many failed logins from there",
                        username, address)
            raise error
        if (error := user_waiting(users_, username)) is not None:
            log.info("login refused for user %r from %s: a login for it failed just now",
                     username, address)
            raise error
        # audited from here on, failures too: not the refusals above, which cost nothing to
        # provoke (a banned address could fill the audit log)
        request.state.audit.username = request.state.audit.affected_id = username
        users = service().users
        record = await users.check_password(username, password)
        if record is None:
            addresses.failure(address_key(address))
            users_.failure(user_key(username))
            log.warning("login failed for user %r from %s", username, address)
            raise unauthorized("invalid username or password")
        addresses.success(address_key(address))
        users_.success(user_key(username))
        if new_password:  # RPort: a new password at login, e.g. when the old one expired
            record = await users.update(username, password=new_password, password_expired=False)
            ended = await revoke_sessions(server, username)
            log.info("user %s set a new password at login from %s (%d session(s) ended)",
                     username, address, ended)
        if record.password_expired:
            raise ApiError(401, "password has expired, please change your password",
                           code="ERR_CODE_PASSWORD_EXPIRED",
                           detail="log in with POST /api/v1/login and a new_password")
        if api.totp_enabled:
            secret = totp.secret_of(record.totp_secret)
            scopes = (TWO_FA,) if secret else (TWO_FA, TOTP_CREATE)
            token = await service().sessions.create(
                username, float(api.totp_login_session_ttl), scopes=scopes, address=address)
            log.info("user %s passed the first login step from %s (TOTP secret %s)", username,
                     address, "set" if secret else "not set yet")
            return data_response({"token": token, "two_fa": {
                "send_to": record.two_fa_send_to, "delivery_method": "totp_authenticator_app",
                "totp_key_status": "exists" if secret else "pending"}})
        token = await service().sessions.create(username, lifetime, address=address)
        log.info("user %s logged in from %s (token lifetime %gs)", username, address, lifetime)
        return data_response({"token": token, "two_fa": None})

    async def logout(request: Request) -> Response:
        """End the session of the Bearer token used: it stops working at once."""
        session_id = getattr(request.state, "auth_jwt_session", None)
        if session_id is None:
            raise invalid("logout needs the Bearer token of a login session")
        await service().sessions.revoke(session_id)
        log.info("user %s logged out", request.state.user.username)
        return Response(status_code=204)

    async def me(request: Request) -> Response:
        """Who you are: name, groups and what your groups let you do."""
        user = request.state.user
        users = service().users
        record = await users.get(user.username)
        if record is None:
            raise ApiError(404, "user not found", code="ERR_CODE_USER_NOT_FOUND")
        return data_response({
            "username": record.username, "groups": list(record.groups),
            "password_expired": record.password_expired,
            "two_fa_send_to": record.two_fa_send_to,
            "effective_user_permissions": await effective_permissions(server, user),
            "effective_extended_permissions": {"tunnels_restricted": None,
                                               "commands_restricted": None},
            "group_permissions_enabled": users.group_permissions})

    login_codes = {200: "the token (with two-factor login: the token for the second step)",
                   400: "bad token-lifetime, body or content type; or a new_password refused",
                   401: "wrong credentials, expired password, or too many failed logins",
                   413: "body too large", 429: "a login for this user failed just now"}
    register("/login", login, name="login", params=("token-lifetime",), public=True,
             summary="Log in with HTTP Basic credentials and get a token for Bearer auth.",
             responses={k: v for k, v in login_codes.items() if k != 413}, audit=LOGIN_AUDIT)
    register("/login", login, ["POST"], name="login_post", params=("token-lifetime",), public=True,
             summary="Log in with a JSON or form body (username, password) and get a token.",
             body={"type": "object", "required": ["username", "password"], "properties": {
                 "username": {"type": "string"}, "password": {"type": "string"},
                 "new_password": {"type": "string"}}},
             responses=login_codes, audit=LOGIN_AUDIT)
    register("/logout", logout, ["DELETE"], name="logout",
             responses={204: "logged out", 400: "not a login session's token"},
             audit=Audit("auth.api.session", "delete", request=False))
    register("/me", me, name="me",
             responses={200: "you", 404: "your user was deleted"})
    register_two_fa(server, register, service)

    # -- API tokens ------------------------------------------------------------------------

    def token_name(body: dict[str, Any], required: bool) -> str | None:
        name = body.get("name")
        if name is None and not required:
            return None
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            raise invalid("missing or invalid name.", f"a name of 1 to {MAX_NAME} characters")
        return name

    def token_expiry(body: dict[str, Any], default: float | None) -> float | None:
        value = body.get("expires_at")
        if value is None:
            return default
        try:
            expires = parse_time(value) if isinstance(value, str) else None
        except ValueError:
            expires = None
        if expires is None:
            raise invalid("invalid expires_at.", "an RFC 3339 date-time, e.g. 2030-01-31T12:00:00Z")
        if expires <= service().tokens.clock():
            raise invalid("invalid expires_at.", "the date must be in the future")
        return expires

    async def list_tokens(request: Request) -> Response:
        """Your API tokens (without their secret)."""
        tokens = await service().tokens.list(request.state.user.username)
        return data_response([t.to_json() for t in tokens], count=len(tokens))

    async def create_token(request: Request) -> Response:
        """Create an API token; its value is shown only in this answer."""
        user = request.state.user
        body = _fields(await read_json(request, api.max_request_bytes), ("scope", "name", "expires_at"))
        scope = body.get("scope")
        if scope not in SCOPES:
            raise invalid("missing or invalid scope.", f"one of {', '.join(SCOPES)}")
        if scope == "clients-auth" and not user.is_admin:
            raise ApiError(403, "current user should belong to Administrators group to create a "
                                "token with this scope", code="ERR_CODE_FORBIDDEN")
        name = token_name(body, required=True)
        expires = token_expiry(body, service().tokens.clock() + service().config.api_token_lifetime)
        assert name is not None and expires is not None
        try:
            token, value = await service().tokens.create(user.username, name, scope, expires)
        except TokenConflict:
            raise ApiError(409, f'token with name "{name}" already exists',
                           code="ERR_CODE_ALREADY_EXIST") from None
        log.info("user %s created API token %s (%s, scope %s)", user.username, token.prefix, name, scope)
        return data_response({**token.to_json(), "token": value})

    def found(token: ApiToken | None, prefix: str) -> ApiToken:
        if token is None:
            raise ApiError(404, f'API token with prefix "{prefix}" not found', code="ERR_CODE_NOT_FOUND")
        return token

    async def update_token(request: Request) -> Response:
        """Rename an API token or change when it expires."""
        user, prefix = request.state.user, request.path_params["prefix"]
        body = _fields(await read_json(request, api.max_request_bytes), ("prefix", "name", "expires_at"))
        if body.get("prefix", prefix) != prefix:
            raise invalid("the prefix in the body does not match the path")
        name = token_name(body, required=False)
        expires = token_expiry(body, None)
        try:
            token = await service().tokens.update(user.username, prefix, name=name, expires_at=expires)
        except TokenConflict:
            raise ApiError(409, f'token with name "{name}" already exists',
                           code="ERR_CODE_ALREADY_EXIST") from None
        return data_response(found(token, prefix).to_json())

    async def delete_token(request: Request) -> Response:
        """Delete an API token: it stops working at once."""
        user, prefix = request.state.user, request.path_params["prefix"]
        if not await service().tokens.delete(user.username, prefix):
            found(None, prefix)
        log.info("user %s deleted API token %s", user.username, prefix)
        return Response(status_code=204)

    token_props = {"name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                   "expires_at": {"type": "string", "format": "date-time"}}
    register("/me/tokens", list_tokens, name="tokens", responses={200: "your API tokens"})
    register("/me/tokens", create_token, ["POST"], name="token_create",
             body={"type": "object", "required": ["scope", "name"], "additionalProperties": False,
                   "properties": {"scope": {"enum": list(SCOPES)}, **token_props}},
             responses={200: "the token, shown once", 400: "a bad scope, name or expires_at",
                        403: "a clients-auth token for a user who is not an administrator",
                        409: "you have a token of that name", 413: "body too large"},
             audit=Audit("auth.user.me.token", "create", affected="response:prefix"))
    register("/me/tokens/{prefix}", update_token, ["PUT"], name="token_update",
             body={"type": "object", "additionalProperties": False,
                   "properties": {"prefix": {"type": "string"}, **token_props}},
             responses={200: "the token", 400: "a bad name or expires_at",
                        404: "no token of yours with that prefix",
                        409: "you have a token of that name", 413: "body too large"},
             audit=Audit("auth.user.me.token", "update"))
    register("/me/tokens/{prefix}", delete_token, ["DELETE"], name="token_delete",
             responses={204: "deleted", 404: "no token of yours with that prefix"},
             audit=Audit("auth.user.me.token", "delete"))

    # -- clients-auth (administrators) -----------------------------------------------------

    def writable() -> None:
        if not service().clients_auth.writable:
            raise ApiError(405, "Client authentication is enabled only for a single user.",
                           code="ERR_CODE_CLIENT_AUTH_SINGLE")

    async def list_clients_auth(request: Request) -> Response:
        """Agent credentials (id and password), with filter[id], sort and page."""
        require_admin(request)
        query = parse_list_query(request.query_params, CLIENTS_AUTH)
        rows, count = apply_list_query(service().clients_auth.items(), query, CLIENTS_AUTH)
        return data_response(rows, count=count)

    async def get_client_auth(request: Request) -> Response:
        """One agent credential."""
        require_admin(request)
        cid = request.path_params["client_auth_id"]
        item = service().clients_auth.get(cid)
        if item is None:
            raise ApiError(404, f'Client Auth with ID "{cid}" not found',
                           code="ERR_CODE_CLIENT_AUTH_NOT_FOUND")
        return data_response(item)

    async def add_client_auth(request: Request) -> Response:
        """Add an agent credential; agents can use it at once."""
        require_admin(request)
        body = _fields(await read_json(request, api.max_request_bytes), ("id", "password"))
        cid, password = body.get("id"), body.get("password")
        if not isinstance(cid, str) or len(cid) < MIN_LENGTH:
            raise invalid("Invalid or missing ID.", f"Min size is {MIN_LENGTH}.")
        if ":" in cid or cid != cid.strip():
            raise invalid("Invalid or missing ID.", 'The ID must not contain ":" or surrounding spaces.')
        if any(ch in "/?#" or not ch.isprintable() for ch in cid):
            # the id is a path segment of GET/DELETE /clients-auth/{id}: it must be reachable
            raise invalid("Invalid or missing ID.",
                          "The ID must not contain /, ?, # or control characters.")
        if not isinstance(password, str) or len(password) < MIN_LENGTH:
            raise invalid("Invalid or missing password.", f"Min size is {MIN_LENGTH}.")
        writable()
        try:
            added = await service().clients_auth.add(cid, password)
        except OSError as exc:
            log.error("cannot write %s: %s", service().clients_auth.path, exc)
            raise ApiError(500, "cannot save the client auth", code="ERR_CODE_INTERNAL",
                           detail=f"cannot write the auth file: {exc.strerror or exc}") from None
        if not added:
            raise ApiError(409, f'Client Auth with ID "{cid}" already exist.', code="ERR_CODE_ALREADY_EXIST")
        log.info("client auth %r created by %s", cid, request.state.user.username)
        return Response(status_code=201)

    async def delete_client_auth(request: Request) -> Response:
        """Delete an agent credential (force=1 also disconnects and deletes its clients)."""
        require_admin(request)
        cid = request.path_params["client_auth_id"]
        force = _parse_bool(request.query_params.get("force", ""), "force")
        svc = service()
        writable()  # first, as RPort: a read-only source refuses every write (405)
        if svc.clients_auth.get(cid) is None:
            raise ApiError(404, f'Client Auth with ID="{cid}" not found.',
                           code="ERR_CODE_CLIENT_AUTH_NOT_FOUND")
        bound = [c for c in server.clients if c.auth_id == cid]
        if bound and not force:
            raise ApiError(409, "Client Auth expected to have no active or disconnected bound "
                                f"client(s), got {len(bound)}.", code="ERR_CODE_CLIENT_AUTH_HAS_CLIENT")
        try:
            await svc.clients_auth.delete(cid)  # first, so that its clients cannot come back
        except OSError as exc:
            log.error("cannot write %s: %s", svc.clients_auth.path, exc)
            raise ApiError(500, "cannot delete the client auth", code="ERR_CODE_INTERNAL",
                           detail=f"cannot write the auth file: {exc.strerror or exc}") from None
        # Recounted now: a client that logged in since the check must go too.
        deleted = await svc.delete_bound_clients(cid)
        log.info("client auth %r deleted by %s (%d bound client(s) deleted)", cid,
                 request.state.user.username, deleted)
        return Response(status_code=204)

    admin_403 = "the caller is not in the Administrators group, or a token's scope"
    register("/clients-auth", list_clients_auth, name="clients_auth", list_params=True,
             responses={200: "agent credentials", 400: "a bad sort, filter or page",
                        403: admin_403})
    register("/clients-auth", add_client_auth, ["POST"], name="clients_auth_create",
             body={"type": "object", "required": ["id", "password"], "additionalProperties": False,
                   "properties": {"id": {"type": "string", "minLength": MIN_LENGTH},
                                  "password": {"type": "string", "minLength": MIN_LENGTH}}},
             responses={201: "added", 400: "a bad id or password", 403: admin_403,
                        405: "the credentials are one static [server] auth",
                        409: "the id exists", 413: "body too large",
                        500: "the auth file cannot be written"},
             audit=Audit("client.auth", "create", affected="body:id"))
    register("/clients-auth/{client_auth_id}", get_client_auth, name="client_auth",
             responses={200: "the credential", 403: admin_403, 404: "no such id"})
    register("/clients-auth/{client_auth_id}", delete_client_auth, ["DELETE"],
             name="client_auth_delete", params=("force",),
             responses={204: "deleted", 400: "a bad force", 403: admin_403,
                        404: "no such id", 405: "the credentials are one static [server] auth",
                        409: "clients still use it (use force=1)",
                        500: "the auth file cannot be written"},
             audit=Audit("client.auth", "delete"))
