"""Who is calling the API, where users come from, and what they may do.

- :class:`User`: the result of authentication, shared by every auth plugin.
- The users source (:class:`UsersSource`): where API users, their passwords and groups live.
  Exactly one at a time, as in RPort: ``[api] auth`` (one static administrator) or
  ``auth_file`` (auth_basic), or the database (``auth_user_table``, the users plugin). The
  plugin that provides it registers it with :func:`set_users_source`; everybody else reads users
  through :func:`users_source`, on every request, so that a change made through the API (on
  this node or another one sharing the database) counts at the next request.
- Per-function permissions (RPort's ``commands``, ``tunnels``, ...): a route declares the one it
  needs (``register(..., permission="commands")``) and the core's wrapper calls
  :func:`check_permission` after authentication. Administrators have every permission; other
  users have those their groups grant, when the source keeps group permissions (the database
  with ``auth_group_details_table``); with any other source, as in RPort, everyone has all.
- Session revocation: a plugin that keeps login sessions registers a revoker
  (:func:`on_revoke_sessions`); the users plugin calls :func:`revoke_sessions` when a user's
  password or name changes or the user is deleted, before it answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import attrs

from .errors import ApiError

if TYPE_CHECKING:
    from .server import RportServer

ADMINISTRATORS = "Administrators"

PERMISSIONS = ("auditlog", "commands", "monitoring", "scheduler", "scripts", "tunnels",
               "uploads", "vault")
"""RPort's per-function permissions (``users.AllPermissions``), in the order its JSON shows them."""

STATIC, FILE, DB = "Static Credentials", "File", "DB"
"""The values of ``users_auth_source`` in ``GET /status``."""


@attrs.frozen
class User:
    username: str
    groups: tuple[str, ...] = ()
    via: str = ""  # the plugin that authenticated the request, e.g. "auth_basic"
    scopes: tuple[str, ...] = ("read+write",)

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups


@attrs.frozen
class UserRecord:
    """A user as the users source keeps it. ``password`` is a bcrypt hash (or, as RPort
    accepts in files and tables, a plain password); it is never shown through the API."""

    username: str
    password: str = attrs.field(default="", repr=False)
    groups: tuple[str, ...] = ()
    password_expired: bool = False
    two_fa_send_to: str = ""
    totp_secret: str = attrs.field(default="", repr=False)

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups


class UsersSource(Protocol):
    """Where API users come from. Every method reads the source anew (no stale copy)."""

    source: str
    """``STATIC``, ``FILE`` or ``DB`` (``users_auth_source`` in ``GET /status``)."""
    group_permissions: bool
    """True if groups carry permissions (RPort: the database with a group details table)."""

    async def get(self, username: str) -> UserRecord | None:
        """The user named ``username``, or None."""

    async def check_password(self, username: str, password: str) -> UserRecord | None:
        """The user if ``password`` is theirs, else None (an unknown name costs the same)."""

    async def permissions(self, groups: tuple[str, ...]) -> dict[str, bool]:
        """The union of the permissions of ``groups`` (every name of :data:`PERMISSIONS`)."""

    async def use_totp_step(self, username: str, step: int) -> bool:
        """Record the time step of the TOTP code ``username`` just logged in with; False if a
        code of that step or a later one was accepted already (a replayed code)."""

    async def update(self, username: str, **changes: Any) -> UserRecord:
        """Change ``username`` (keys: ``username``, ``password``, ``password_expired``,
        ``groups``, ``totp_secret``, ``two_fa_send_to``), validated as RPort does; raises
        :class:`ApiError` (400 for a source that cannot be written, or bad values; 404 for an
        unknown user)."""


Revoker = Callable[[str, "str | None", bool], Awaitable[int]]
"""``await revoke(username, keep_session_id, tokens)``: end the user's login sessions except
``keep`` (and, with ``tokens``, delete their API tokens); returns how many sessions ended."""


class _Directory:
    def __init__(self) -> None:
        self.source: UsersSource | None = None
        self.owner = ""
        self.revokers: list[Revoker] = []


def _directory(server: "RportServer | Any") -> _Directory:
    directory = server.state.get("core.users")
    if directory is None:
        directory = server.state["core.users"] = _Directory()
    return directory


def set_users_source(server: "RportServer | Any", source: UsersSource, owner: str) -> None:
    """Make ``source`` the server's users source (at start-up). A second one is a mistake of
    the configuration: only one users source at a time, as in RPort."""
    from .confload import ConfigError

    directory = _directory(server)
    if directory.source is not None:
        raise ConfigError([f"api: both {directory.owner!r} ({directory.source.source}) and "
                           f"{owner!r} ({source.source}) provide the API users: set only one of "
                           "[api] auth, auth_file or auth_user_table"])
    directory.source, directory.owner = source, owner


def users_source(server: "RportServer | Any") -> UsersSource | None:
    """The server's users source, or None when no plugin provides one."""
    return _directory(server).source


def on_revoke_sessions(server: "RportServer | Any", revoker: Revoker) -> None:
    """Register a plugin's way of ending a user's login sessions (auth_jwt's)."""
    _directory(server).revokers.append(revoker)


async def revoke_sessions(server: "RportServer | Any", username: str,
                          keep: str | None = None, *, tokens: bool = False) -> int:
    """End every login session of ``username`` (but ``keep``, the caller's own), in every
    plugin that keeps sessions, and with ``tokens`` (the user is deleted or renamed: a new
    user of that name must not inherit them) their API tokens too; how many sessions ended.
    Awaited before the change is reported."""
    total = 0
    for revoke in _directory(server).revokers:
        total += await revoke(username, keep, tokens)
    return total


def all_permissions(value: bool = True) -> dict[str, bool]:
    return {name: value for name in PERMISSIONS}


async def effective_permissions(server: "RportServer | Any", user: User) -> dict[str, bool]:
    """RPort's ``effective_user_permissions`` of ``user``: all for administrators and when the
    source keeps no group permissions; otherwise what the user's groups grant."""
    source = users_source(server)
    if user.is_admin or source is None or not source.group_permissions:
        return all_permissions()
    return await source.permissions(user.groups)


async def check_permission(server: "RportServer | Any", user: User, permission: str) -> None:
    """RPort's 403 unless ``user`` has ``permission``."""
    if user.is_admin:
        return
    if not (await effective_permissions(server, user)).get(permission, False):
        raise ApiError(403, f'user does not have "{permission}" permission',
                       code="ERR_CODE_PERMISSION_DENIED",
                       detail=f'none of the user\'s groups grants "{permission}" '
                              "(PUT /api/v1/user-groups/{name}; GET /api/v1/me shows "
                              "effective_user_permissions)")


def read_only(source: str) -> ApiError:
    """RPort's 400 for a change of users on a source that the API cannot write."""
    if source == STATIC:
        return ApiError(400, "server runs on a static user-password pair, please use JSON file "
                             "or database for user data", code="ERR_CODE_USERS_READ_ONLY")
    return ApiError(400, "users cannot be changed through the API", code="ERR_CODE_USERS_READ_ONLY",
                    detail=f"the users come from {source.lower()} ([api] auth_file is only read at "
                           "start-up): keep them in the database ([api] auth_user_table) to manage "
                           "them through the API")


def require_admin(request: object) -> User:
    """The caller of an API request, who must be an administrator (RPort's 403 otherwise)."""
    user = getattr(getattr(request, "state", None), "user", None)
    if not isinstance(user, User) or not user.is_admin:
        raise ApiError(403, "current user should belong to Administrators group to access this "
                            "resource", code="ERR_CODE_FORBIDDEN")
    return user
