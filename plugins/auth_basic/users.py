"""The users source of ``[api] auth`` (one administrator) and ``[api] auth_file``: read once at
start-up and read-only, as in RPort (its file is read on start or reload), without group
permissions (every user has every function; client access still applies)."""

from __future__ import annotations

from typing import Any

from rport.core.plugin import UserRecord, all_permissions, read_only


from .credentials import CredentialTable

class TableUsers:
    """A :class:`rport.core.users.UsersSource` over auth_basic's credential table."""

    group_permissions = False

    def __init__(self, table: CredentialTable) -> None:
        self.table = table
        self.source = table.source

    async def get(self, username: str) -> UserRecord | None:
        entry = self.table.entries.get(username)
        if entry is None:
            return None
        return UserRecord(username, entry.secret, entry.groups)

    async def check_password(self, username: str, password: str) -> UserRecord | None:
        if await self.table.check(username, password):
            return await self.get(username)
        return None

    async def permissions(self, groups: tuple[str, ...]) -> dict[str, bool]:
        return all_permissions()

    async def update(self, username: str, **changes: Any) -> UserRecord:
        raise read_only(self.source)

    async def use_totp_step(self, username: str, step: int) -> bool:
        raise read_only(self.source)  # two-factor login needs the database (a config check)

    def users(self) -> list[UserRecord]:
        return [UserRecord(name, entry.secret, entry.groups)
                for name, entry in sorted(self.table.entries.items())]
