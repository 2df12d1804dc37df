"""The database users source: every read goes to the store (no copy in memory), so a change
made through the API, on this node or on another one sharing the database, counts at the next
request. Writes are one transaction each.

Plain logic: ``run`` is the store's ``await run(fn, *args)``, ``checker`` auth_basic's
:class:`PasswordChecker` (bcrypt in a bounded pool, successful checks remembered by hash).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Iterable

import attrs
import sqlalchemy as sa

from rport.core.plugin import ADMINISTRATORS, DB, PERMISSIONS, ApiError, UserRecord, all_permissions
from rport.plugins.auth_basic.credentials import BCRYPT_PREFIXES, PasswordChecker

from .tables import group_details, groups, users
from .validate import UserChanges, check_changes

Runner = Callable[..., Awaitable[Any]]


class DbUsers:
    """A :class:`rport.core.users.UsersSource` in the store's ``users``/``groups``/
    ``group_details`` tables; ``group_permissions`` as RPort: with the details table only."""

    source = DB

    def __init__(self, run: Runner, checker: PasswordChecker, *, group_permissions: bool,
                 password_min_length: int, totp_enabled: bool) -> None:
        self._run = run
        self.checker = checker
        self.group_permissions = group_permissions
        self.password_min_length = password_min_length
        self.totp_enabled = totp_enabled

    # -- reads -------------------------------------------------------------------------------

    async def get(self, username: str) -> UserRecord | None:
        return await self._run(_get, username)

    async def check_password(self, username: str, password: str) -> UserRecord | None:
        record = await self.get(username)
        ok = await self.checker.check(username, password, record.password if record else None)
        return record if ok else None

    async def permissions(self, groups_: tuple[str, ...]) -> dict[str, bool]:
        if ADMINISTRATORS in groups_ or not self.group_permissions:
            return all_permissions()
        return await self._run(_permissions, list(groups_))

    async def list_users(self) -> list[UserRecord]:
        return await self._run(_list)

    async def count(self) -> int:
        return await self._run(_count)

    async def list_groups(self) -> list[dict[str, Any]]:
        """RPort's user groups: those with details and those only users name, by name."""
        return await self._run(_list_groups, self.group_permissions)

    async def get_group(self, name: str) -> dict[str, Any]:
        return await self._run(_get_group, name, self.group_permissions)

    # -- writes ------------------------------------------------------------------------------

    async def add(self, body: Any) -> UserRecord:
        changes = check_changes(body, creating=True, min_length=self.password_min_length)
        record = UserRecord(changes.username or "", await self.checker.hash(changes.password or ""),
                            tuple(changes.groups or ()), bool(changes.password_expired),
                            changes.two_fa_send_to or "")
        if not await self._run(_insert, record):
            raise ApiError(400, "Another user with this username already exists",
                           code="ERR_CODE_ALREADY_EXIST")
        return record

    async def change(self, username: str, body: Any) -> tuple[UserRecord, UserRecord]:
        """Apply a ``PUT /users/{id}`` (or ``PUT /me``) body; returns (before, after)."""
        changes = check_changes(body, creating=False, min_length=self.password_min_length,
                                current=username)
        return await self.apply(username, changes)

    async def update(self, username: str, **fields: Any) -> UserRecord:
        """The users source's ``update`` (login's new password, TOTP secrets, ``PUT /me``)."""
        secret = fields.pop("totp_secret", None)
        changes = check_changes(fields, creating=False, min_length=self.password_min_length,
                                current=username, allow_empty=secret is not None)
        if secret is not None:
            changes = attrs.evolve(changes, totp_secret=secret)
        return (await self.apply(username, changes))[1]

    async def apply(self, username: str, changes: UserChanges) -> tuple[UserRecord, UserRecord]:
        password = await self.checker.hash(changes.password) if changes.password else None
        result = await self._run(_update, username, changes, password)
        if result is None:
            raise ApiError(404, f"cannot find user by username '{username}'",
                           code="ERR_CODE_USER_NOT_FOUND")
        if isinstance(result, ApiError):
            raise result
        return result

    async def delete(self, username: str) -> UserRecord:
        result = await self._run(_delete, username)
        if result is None:
            raise ApiError(404, f"cannot find user by username '{username}'",
                           code="ERR_CODE_USER_NOT_FOUND")
        if isinstance(result, ApiError):
            raise result
        return result

    async def put_group(self, name: str, permissions: dict[str, bool]) -> dict[str, Any]:
        self._details_needed()
        return await self._run(_put_group, name, permissions)

    async def delete_group(self, name: str) -> list[str]:
        """Delete a group's details and memberships; the names of its former members."""
        self._details_needed()
        result = await self._run(_delete_group, name)
        if isinstance(result, ApiError):
            raise result
        return result

    async def use_totp_step(self, username: str, step: int) -> bool:
        """Record that ``username`` logged in with the TOTP code of time step ``step``; False if
        a code of that step or a later one was used already (a replay). One conditional
        update, so two nodes cannot both accept the same code."""
        return await self._run(_use_step, username, step)

    async def import_users(self, entries: Iterable[tuple[str, str, tuple[str, ...]]]) -> list[str]:
        """Add the users of an auth file that the table does not have yet (plain passwords
        are hashed first); the names added."""
        rows = []
        for name, secret, groups_ in entries:
            if not secret.startswith(BCRYPT_PREFIXES):
                secret = await self.checker.hash(secret)
            rows.append(UserRecord(name, secret, groups_))
        return await self._run(_import, rows)

    def _details_needed(self) -> None:
        if not self.group_permissions:
            raise ApiError(400, "User group details table must be configured for this operation.",
                           code="ERR_CODE_NO_GROUP_DETAILS",
                           detail="set [api] auth_group_details_table = \"group_details\"")


# -- in the store's transaction -----------------------------------------------------------------

_USER = sa.select(users).where(users.c.username == sa.bindparam("name"))
_GROUPS_OF = sa.select(groups.c.group).where(groups.c.username == sa.bindparam("name")) \
    .order_by(groups.c.group)


def _record(row: Any, groups_: Iterable[str]) -> UserRecord:
    return UserRecord(row.username, row.password, tuple(groups_), bool(row.password_expired),
                      row.two_fa_send_to or "", row.totp_secret or "")


def _get(conn: sa.Connection, username: str) -> UserRecord | None:
    row = conn.execute(_USER, {"name": username}).first()
    if row is None:
        return None
    return _record(row, conn.execute(_GROUPS_OF, {"name": username}).scalars())


def _list(conn: sa.Connection) -> list[UserRecord]:
    members: dict[str, list[str]] = {}
    for name, group in conn.execute(sa.select(groups.c.username, groups.c.group)
                                    .order_by(groups.c.group)):
        members.setdefault(name, []).append(group)
    return [_record(row, members.get(row.username, ()))
            for row in conn.execute(sa.select(users).order_by(users.c.username))]


def _count(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()


def _decode(text: str | None) -> dict[str, bool]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    return {name: data.get(name) is True for name in PERMISSIONS}


def _permissions(conn: sa.Connection, names: list[str]) -> dict[str, bool]:
    result = all_permissions(False)
    if not names:
        return result
    for text in conn.execute(sa.select(group_details.c.permissions)
                             .where(group_details.c.name.in_(names))).scalars():
        for name, granted in _decode(text).items():
            result[name] = result[name] or granted
    return result


def _group(name: str, permissions: dict[str, bool]) -> dict[str, Any]:
    if name == ADMINISTRATORS:  # administrators have everything, whatever a row says
        permissions = all_permissions()
    return {"name": name, "permissions": permissions, "tunnels_restricted": None,
            "commands_restricted": None}


def _list_groups(conn: sa.Connection, details: bool) -> list[dict[str, Any]]:
    found: dict[str, dict[str, bool]] = {}
    if details:
        for name, text in conn.execute(sa.select(group_details).order_by(group_details.c.name)):
            found[name] = _decode(text)
    named = conn.execute(sa.select(groups.c.group).distinct().order_by(groups.c.group)).scalars()
    for name in named:
        found.setdefault(name, all_permissions(not details))
    return [_group(name, perms) for name, perms in sorted(found.items())]


def _get_group(conn: sa.Connection, name: str, details: bool) -> dict[str, Any]:
    if not details:
        return _group(name, all_permissions())
    text = conn.execute(sa.select(group_details.c.permissions)
                        .where(group_details.c.name == name)).scalar_one_or_none()
    return _group(name, _decode(text))


def _admins(conn: sa.Connection) -> set[str]:
    return set(conn.execute(sa.select(groups.c.username)
                            .where(groups.c.group == ADMINISTRATORS)).scalars())


def _last_admin(name: str) -> ApiError:
    return ApiError(400, "at least one user must stay in the Administrators group",
                    code="ERR_CODE_LAST_ADMINISTRATOR",
                    detail=f"{name!r} is the only administrator: make another user an "
                           "administrator first, or nobody could manage users any more")


def _insert(conn: sa.Connection, record: UserRecord) -> bool:
    if conn.execute(_USER, {"name": record.username}).first() is not None:
        return False
    conn.execute(users.insert().values(
        username=record.username, password=record.password,
        password_expired=record.password_expired, two_fa_send_to=record.two_fa_send_to,
        totp_secret=record.totp_secret))
    if record.groups:
        conn.execute(groups.insert(), [{"username": record.username, "group": g}
                                       for g in record.groups])
    return True


def _update(conn: sa.Connection, username: str, changes: UserChanges,
            password: str | None) -> tuple[UserRecord, UserRecord] | ApiError | None:
    before = _get(conn, username)
    if before is None:
        return None
    new_name = changes.username if changes.username and changes.username != username else None
    if new_name is not None and conn.execute(_USER, {"name": new_name}).first() is not None:
        return ApiError(400, "Another user with this username already exists",
                        code="ERR_CODE_ALREADY_EXIST")
    if (changes.groups is not None and before.is_admin and ADMINISTRATORS not in changes.groups
            and _admins(conn) == {username}):
        return _last_admin(username)
    values: dict[str, Any] = {}
    if password is not None:
        values["password"] = password
    if changes.password_expired is not None:
        values["password_expired"] = changes.password_expired
    if changes.two_fa_send_to is not None:
        values["two_fa_send_to"] = changes.two_fa_send_to
    if changes.totp_secret is not None:
        values["totp_secret"] = changes.totp_secret
        values["totp_last_step"] = None
    if new_name is not None:
        values["username"] = new_name
    if values:
        conn.execute(users.update().where(users.c.username == username).values(**values))
    name = new_name or username
    if new_name is not None:
        conn.execute(groups.update().where(groups.c.username == username).values(username=new_name))
    if changes.groups is not None:
        conn.execute(groups.delete().where(groups.c.username == name))
        if changes.groups:
            conn.execute(groups.insert(), [{"username": name, "group": g} for g in changes.groups])
    after = _get(conn, name)
    assert after is not None
    return before, after


def _delete(conn: sa.Connection, username: str) -> UserRecord | ApiError | None:
    before = _get(conn, username)
    if before is None:
        return None
    if before.is_admin and _admins(conn) == {username}:
        return _last_admin(username)
    conn.execute(groups.delete().where(groups.c.username == username))
    conn.execute(users.delete().where(users.c.username == username))
    return before


def _put_group(conn: sa.Connection, name: str, permissions: dict[str, bool]) -> dict[str, Any]:
    text = json.dumps({k: permissions.get(k, False) for k in PERMISSIONS}, sort_keys=True)
    updated = conn.execute(group_details.update().where(group_details.c.name == name)
                           .values(permissions=text)).rowcount
    if not updated:
        conn.execute(group_details.insert().values(name=name, permissions=text))
    return _get_group(conn, name, True)


def _delete_group(conn: sa.Connection, name: str) -> list[str] | ApiError:
    members = list(conn.execute(sa.select(groups.c.username).where(groups.c.group == name)
                                .order_by(groups.c.username)).scalars())
    conn.execute(groups.delete().where(groups.c.group == name))
    conn.execute(group_details.delete().where(group_details.c.name == name))
    return members


def _use_step(conn: sa.Connection, username: str, step: int) -> bool:
    last = users.c.totp_last_step
    return conn.execute(users.update().where(
        users.c.username == username, sa.or_(last.is_(None), last < step))
        .values(totp_last_step=step)).rowcount == 1


def _import(conn: sa.Connection, rows: list[UserRecord]) -> list[str]:
    return [row.username for row in rows if _insert(conn, row)]
