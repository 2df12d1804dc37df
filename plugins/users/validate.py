"""Bodies of ``POST /users``, ``PUT /users/{id}``, ``PUT /me`` and ``PUT /user-groups/{name}``,
checked as RPort checks them (its messages), and a little more: names that could not be used
in a path or in HTTP Basic credentials, passwords longer than bcrypt takes."""

from __future__ import annotations

from typing import Any

import attrs

from rport.core.plugin import ADMINISTRATORS, PERMISSIONS, ApiError, ErrorItem

USER_FIELDS = ("username", "password", "password_expired", "groups", "two_fa_send_to")
MAX_NAME = 150  # RPort's TEXT(150) columns
MAX_PASSWORD_BYTES = 72  # bcrypt uses no more
INVALID = "ERR_CODE_INVALID_REQUEST"


@attrs.frozen
class UserChanges:
    username: str | None = None
    password: str | None = None
    password_expired: bool | None = None
    groups: tuple[str, ...] | None = None
    two_fa_send_to: str | None = None
    totp_secret: str | None = None


def invalid_json(detail: str) -> ApiError:
    return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)


def json_object(body: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object with only ``allowed`` keys (RPort rejects unknown fields)."""
    if not isinstance(body, dict):
        raise invalid_json("json: the body must be an object")
    for key in body:
        if key not in allowed:
            raise invalid_json(f'json: unknown field "{key}"')
    return body


def _typed(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)):
        raise invalid_json(f'json: "{key}" must be {what}')
    return value


def name_problem(name: str, what: str) -> str:
    """Why ``name`` cannot be a user or group name, or ""."""
    if len(name) > MAX_NAME:
        return f"{what} must be at most {MAX_NAME} characters"
    if name.strip() != name:
        return f"{what} must not start or end with whitespace"
    if any(ch in "/?#" or not ch.isprintable() for ch in name):
        return f"{what} must not contain /, ?, # or control characters"
    return ""


def check_changes(body: Any, *, creating: bool, min_length: int, current: str = "",
                  allow_empty: bool = False) -> UserChanges:
    """The changes a body asks for; RPort's 400 listing every problem otherwise."""
    body = json_object(body, USER_FIELDS)
    username = _typed(body, "username", str, "a string")
    password = _typed(body, "password", str, "a string")
    expired = _typed(body, "password_expired", bool, "true or false")
    send_to = _typed(body, "two_fa_send_to", str, "a string")
    groups = body.get("groups")
    if groups is not None and not (isinstance(groups, list)
                                   and all(isinstance(g, str) for g in groups)):
        raise invalid_json('json: "groups" must be a list of strings')
    problems: list[ErrorItem] = []
    if creating:
        if not username:
            problems.append(ErrorItem("username is required", INVALID))
        if not password:
            problems.append(ErrorItem("password is required", INVALID))
    elif (not allow_empty and (not username or username == current) and not password
          and expired is None and groups is None and not send_to):
        problems.append(ErrorItem("nothing to change", INVALID))
    if username:
        if ":" in username:
            problems.append(ErrorItem("username must not contain ':'", INVALID,
                                      "HTTP Basic credentials could not name it"))
        elif problem := name_problem(username, "username"):
            problems.append(ErrorItem(problem, INVALID))
    if password:
        if len(password) < min_length:
            problems.append(ErrorItem("Your password is too short", INVALID,
                                      f"password must be at least {min_length} characters"))
        if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            problems.append(ErrorItem("Your password is too long", INVALID,
                                      f"password must be at most {MAX_PASSWORD_BYTES} bytes "
                                      "(bcrypt ignores the rest)"))
    for group in groups or ():
        problem = name_problem(group, "group name") if group else "group name must not be empty"
        if problem:
            problems.append(ErrorItem(problem, INVALID))
    if problems:
        raise ApiError.many(400, problems)
    return UserChanges(username=username or None, password=password or None,
                       password_expired=expired,
                       groups=tuple(dict.fromkeys(groups)) if groups is not None else None,
                       two_fa_send_to=send_to or None)


def check_group(name: str, body: Any) -> dict[str, bool]:
    """The permissions of a ``PUT /user-groups/{name}`` body (RPort: unknown permission names
    are a 400; the body's ``name`` is read-only and ignored; extended permissions are RPort
    Plus's and not kept here)."""
    body = json_object(body, ("name", "permissions", "tunnels_restricted", "commands_restricted"))
    if problem := name_problem(name, "group name") if name else "group name must not be empty":
        raise ApiError(400, problem, code=INVALID)
    if name == ADMINISTRATORS:
        raise ApiError(400, "the Administrators group has every permission", code=INVALID,
                       detail="its permissions cannot be changed")
    for key in ("tunnels_restricted", "commands_restricted"):
        if body.get(key) is not None:
            raise ApiError(400, f"{key} is not supported", code=INVALID,
                           detail="extended permissions (RPort Plus) are not implemented")
    permissions = body.get("permissions", {})
    if not isinstance(permissions, dict):
        raise invalid_json('json: "permissions" must be an object of booleans')
    for key, value in permissions.items():
        if key not in PERMISSIONS:
            raise invalid_json(f"invalid permission: {key}")
        if not isinstance(value, bool):
            raise invalid_json(f'json: permission "{key}" must be true or false')
    return {key: bool(permissions.get(key, False)) for key in PERMISSIONS}
