"""The users plugin's API routes (RPort's paths, fields and messages): ``/users``,
``/users/{user_id}``, ``/users/{user_id}/totp-secret``, ``/user-groups``,
``/user-groups/{name}`` (administrators) and ``PUT /me`` (everyone, for themselves).

They work on the database users source; with ``[api] auth`` (one static user) they answer
RPort's 400, with ``auth_file`` the lists work and changes are a 400 (the file is only read).
A change that ends a user's right to their sessions (password, name, deletion, expired
password) revokes them before the answer."""

from __future__ import annotations

import logging
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response

from rport.core.plugin import (
    ADMINISTRATORS,
    PERMISSIONS,
    STATIC,
    ApiError,
    Audit,
    UserRecord,
    UsersSource,
    data_response,
    read_json,
    read_only,
    require_admin,
    revoke_sessions,
    users_source,
)

from .source import DbUsers
from .validate import check_group, json_object

log = logging.getLogger("rport.plugins.users")

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
USER_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "username": _STR, "password": _STR, "password_expired": _BOOL,
    "groups": {"type": "array", "items": _STR}, "two_fa_send_to": _STR}}
ME_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "username": _STR, "password": _STR, "old_password": _STR, "two_fa_send_to": _STR}}
GROUP_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "name": {"type": "string", "readOnly": True},
    "permissions": {"type": "object", "additionalProperties": _BOOL},
    "tunnels_restricted": {"type": "null"}, "commands_restricted": {"type": "null"}}}

ADMIN_403 = "the caller is not in the Administrators group"
READ_ONLY_400 = "bad values, or users kept outside the database ([api] auth or auth_file)"


def user_json(record: UserRecord) -> dict[str, Any]:
    """A user as ``GET /users`` shows it (never the password or the TOTP secret)."""
    return {"username": record.username, "password_expired": record.password_expired,
            "groups": list(record.groups), "two_fa_send_to": record.two_fa_send_to}


def register_routes(server: Any, register: Callable[..., None]) -> None:
    api = server.config.api

    def source() -> UsersSource:
        found = users_source(server)
        if found is None:
            raise ApiError(400, "no users source", code="ERR_CODE_USERS_READ_ONLY",
                           detail="no plugin provides API users")
        return found

    def database() -> DbUsers:
        found = source()
        if not isinstance(found, DbUsers):
            raise read_only(found.source)
        return found

    async def revoke(username: str, why: str, keep: str | None = None, *, tokens: bool = False) -> None:
        ended = await revoke_sessions(server, username, keep, tokens=tokens)
        if ended:
            log.info("%d login session(s) of user %s ended: %s", ended, username, why)

    async def after_change(before: UserRecord, after: UserRecord, keep: str | None = None) -> None:
        """End the sessions that the change makes void."""
        if after.username != before.username:
            await revoke(before.username, f"renamed to {after.username}", tokens=True)
        elif after.password != before.password:
            await revoke(before.username, "password changed", keep)
        elif after.password_expired and not before.password_expired:
            await revoke(before.username, "password expired")

    # -- users -------------------------------------------------------------------------------

    async def list_users(request: Request) -> Response:
        """Every API user (name, groups, password_expired), by name."""
        require_admin(request)
        found = source()
        if isinstance(found, DbUsers):
            records = await found.list_users()
        elif hasattr(found, "users") and found.source != STATIC:
            records = found.users()  # auth_file: read-only, but listed
        else:
            raise read_only(found.source)
        return data_response([user_json(r) for r in records])

    async def create_user(request: Request) -> Response:
        """Create a user (the password is stored as a bcrypt hash)."""
        admin = require_admin(request)
        db = database()
        record = await db.add(await read_json(request, api.max_request_bytes))
        log.info("user %s created by %s (groups %s)", record.username, admin.username,
                 ", ".join(record.groups) or "none")
        return Response(status_code=201)

    async def update_user(request: Request) -> Response:
        """Change a user: only the fields given (a new groups list replaces the old one)."""
        admin = require_admin(request)
        db = database()
        name = request.path_params["user_id"]
        before, after = await db.change(name, await read_json(request, api.max_request_bytes))
        await after_change(before, after)
        log.info("user %s updated by %s", name, admin.username)
        return Response(status_code=204)

    async def delete_user(request: Request) -> Response:
        """Delete a user: their login sessions and API tokens end at once."""
        admin = require_admin(request)
        db = database()
        name = request.path_params["user_id"]
        await db.delete(name)
        await revoke(name, "user deleted", tokens=True)
        log.info("user %s deleted by %s", name, admin.username)
        return Response(status_code=204)

    async def delete_user_totp(request: Request) -> Response:
        """Delete a user's TOTP secret (they set up a new one at their next login)."""
        admin = require_admin(request)
        db = database()
        if not api.totp_enabled:
            raise ApiError(400, "TotP is disabled", code="ERR_CODE_TOTP_DISABLED",
                           detail="[api] totp_enabled is false")
        name = request.path_params["user_id"]
        if await db.get(name) is None:
            raise ApiError(404, "user not found", code="ERR_CODE_USER_NOT_FOUND")
        await db.update(name, totp_secret="")
        log.info("TOTP secret of user %s deleted by %s", name, admin.username)
        return Response(status_code=204)

    user_404 = "no user of that name"
    register("/users", list_users, name="list", body=None,
             responses={200: "the users", 400: "[api] auth: one static user, nothing to list",
                        403: ADMIN_403})
    # RPort's audit log names (server/auditlog/constants.go), "user" for a deletion included
    register("/users", create_user, ["POST"], name="create", body=USER_BODY,
             responses={201: "created", 400: READ_ONLY_400 + "; or the name is taken",
                        403: ADMIN_403, 413: "body too large"},
             audit=Audit("auth.user", "create", affected="body:username"))
    register("/users/{user_id}", update_user, ["PUT"], name="update", body=USER_BODY,
             responses={204: "changed", 400: READ_ONLY_400 + "; or nothing to change",
                        403: ADMIN_403, 404: user_404, 413: "body too large"},
             audit=Audit("auth.user", "update"))
    register("/users/{user_id}", delete_user, ["DELETE"], name="delete",
             responses={204: "deleted", 400: READ_ONLY_400 + "; or the last administrator",
                        403: ADMIN_403, 404: user_404},
             audit=Audit("user", "delete"))
    register("/users/{user_id}/totp-secret", delete_user_totp, ["DELETE"], name="totp_delete",
             responses={204: "deleted", 400: "TOTP is disabled, or users outside the database",
                        403: ADMIN_403, 404: user_404},
             audit=Audit("auth.user.totp", "delete", affected="path:user_id"))

    # -- user groups -------------------------------------------------------------------------

    def derived_groups(found: Any) -> list[dict[str, Any]]:
        names = sorted({g for r in found.users() for g in r.groups})
        return [{"name": n, "permissions": dict.fromkeys(PERMISSIONS, True),
                 "tunnels_restricted": None, "commands_restricted": None} for n in names]

    async def list_groups(request: Request) -> Response:
        """User groups with their permissions (those with details, and those users name)."""
        require_admin(request)
        found = source()
        if isinstance(found, DbUsers):
            return data_response(await found.list_groups())
        if found.source == STATIC:
            raise read_only(found.source)
        return data_response(derived_groups(found))

    async def get_group(request: Request) -> Response:
        """One user group and its permissions (a group nobody set has none)."""
        require_admin(request)
        name = request.path_params["name"]
        return data_response(await database().get_group(name))

    async def put_group(request: Request) -> Response:
        """Set a user group's permissions (those not named are false); effective at once."""
        admin = require_admin(request)
        db = database()
        name = request.path_params["name"]
        permissions = check_group(name, await read_json(request, api.max_request_bytes))
        group = await db.put_group(name, permissions)
        granted = [k for k, v in permissions.items() if v]
        log.info("user group %s: permissions set to %s by %s", name, ", ".join(granted) or "none",
                 admin.username)
        return data_response(group)

    async def delete_group(request: Request) -> Response:
        """Delete a user group: its members leave it, its permissions are gone at once."""
        admin = require_admin(request)
        db = database()
        name = request.path_params["name"]
        if name == ADMINISTRATORS:
            raise ApiError(400, "the Administrators group cannot be deleted",
                           code="ERR_CODE_INVALID_REQUEST",
                           detail="take users out of it with PUT /api/v1/users/{user_id}")
        members = await db.delete_group(name)
        log.info("user group %s deleted by %s (%d member(s) left it)", name, admin.username,
                 len(members))
        return Response(status_code=204)

    register("/user-groups", list_groups, name="groups",
             responses={200: "the groups", 400: "[api] auth: one static user", 403: ADMIN_403})
    register("/user-groups/{name}", get_group, name="group",
             responses={200: "the group", 400: "users outside the database", 403: ADMIN_403})
    register("/user-groups/{name}", put_group, ["PUT"], name="group_put", body=GROUP_BODY,
             responses={200: "the group as stored", 400: "an unknown permission, the "
                        "Administrators group, no group details table, or users outside the "
                        "database", 403: ADMIN_403, 413: "body too large"},
             audit=Audit("auth.user.group", "update"))
    register("/user-groups/{name}", delete_group, ["DELETE"], name="group_delete",
             responses={204: "deleted (also when it did not exist)", 400: "the Administrators "
                        "group, no group details table, or users outside the database",
                        403: ADMIN_403},
             audit=Audit("auth.user.group", "delete"))

    # -- PUT /me -----------------------------------------------------------------------------

    async def change_me(request: Request) -> Response:
        """Change your own name or password (old_password required) or two_fa_send_to."""
        user = request.state.user
        request.state.audit.affected_id = user.username
        body = json_object(await read_json(request, api.max_request_bytes),
                           ("username", "password", "old_password", "two_fa_send_to"))
        db = database()
        password, old = body.get("password"), body.get("old_password")
        if password:
            if not old:
                raise ApiError(403, "Missing old password.", code="ERR_CODE_OLD_PASSWORD")
            if not isinstance(old, str) or await db.check_password(user.username, old) is None:
                log.warning("user %s: password change refused: wrong old password", user.username)
                raise ApiError(403, "Incorrect old password.", code="ERR_CODE_OLD_PASSWORD")
        changes = {k: body[k] for k in ("username", "password", "two_fa_send_to") if k in body}
        before, after = await db.change(user.username, changes)
        await after_change(before, after, keep=getattr(request.state, "auth_jwt_session", None))
        log.info("user %s changed %s", user.username,
                 ", ".join(k for k, v in changes.items() if v) or "nothing")
        return Response(status_code=204)

    register("/me", change_me, ["PUT"], name="me_put", body=ME_BODY,
             responses={204: "changed", 400: "bad values, nothing to change, or users outside "
                        "the database", 403: "old_password missing or wrong",
                        404: "your user was deleted meanwhile", 413: "body too large"},
             audit=Audit("auth.user.me", "update"))
