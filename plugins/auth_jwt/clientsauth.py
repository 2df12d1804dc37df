"""Agent credentials managed through the API (RPort's ``/clients-auth``), wherever they live:

- ``[server] auth = "id:password"``: one static credential, listed but read-only;
- ``[server] auth_file``: the JSON file auth_basic loaded; writes rewrite it atomically and update
  auth_basic's live table, so a new credential works (and a deleted one fails) at once;
- neither: auth_basic's generated bootstrap credential stays as it is, and the API manages
  credentials in the store (table ``clients_auth``), checked by auth_jwt's
  ``rport_authenticate_agent``.

Plain logic (no pluggy): the live tables are auth_basic's :class:`CredentialTable`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from rport.plugins.auth_basic.credentials import CredentialTable, Entry, save_agent_credentials

from .sessions import Runner
from .tables import clients_auth

STATIC, FILE, DB = "Static Credentials", "File", "DB"
MIN_LENGTH = 3

class ClientsAuth:
    def __init__(self, source: str, table: CredentialTable, *, path: str = "",
                 run: Runner | None = None, reserved: CredentialTable | None = None) -> None:
        self.source = source
        self.table = table
        """The live table agents of this source are checked against."""
        self.path = path
        self._run = run
        self._reserved = reserved
        """In DB mode: auth_basic's own table, whose ids cannot be added again."""
        self._lock = asyncio.Lock()
        self.on_change: Any = None
        """Called after a stored credential was added or deleted (a cluster tells its nodes)."""

    @classmethod
    def for_config(cls, auth: str, auth_file: str, agents: CredentialTable,
                   run: Runner) -> "ClientsAuth":
        if auth:
            return cls(STATIC, agents)
        if auth_file:
            return cls(FILE, agents, path=auth_file)
        return cls(DB, CredentialTable({}, DB), run=run, reserved=agents)

    @property
    def writable(self) -> bool:
        return self.source != STATIC

    @property
    def in_store(self) -> bool:
        return self.source == DB

    async def load(self) -> None:
        if self._run is None:
            return

        for cid, password in await self._run(_load):
            self.table.set(cid, Entry(password))

    async def reload(self) -> None:
        """Read the stored credentials again (another node of a cluster changed them)."""
        if self._run is None:
            return
        async with self._lock:
            stored = dict(await self._run(_load))
            for cid in [c for c in self.table.stored() if c not in stored]:
                self.table.remove(cid)
            for cid, password in stored.items():
                if self.table.stored().get(cid) != password:
                    self.table.set(cid, Entry(password))

    def items(self) -> list[dict[str, Any]]:
        return [{"id": cid, "password": secret} for cid, secret in self.table.stored().items()]

    def get(self, cid: str) -> dict[str, Any] | None:
        entry = self.table.entries.get(cid)
        return {"id": cid, "password": entry.secret} if entry is not None else None

    def exists(self, cid: str) -> bool:
        return cid in self.table or (self._reserved is not None and cid in self._reserved)

    async def add(self, cid: str, password: str) -> bool:
        """Add a credential; False if the id exists. Persisted before it is live."""
        async with self._lock:
            if self.exists(cid):
                return False
            if self.source == FILE:
                await asyncio.to_thread(save_agent_credentials, self.path,
                                        {**self.table.stored(), cid: password})
            elif self._run is not None:
                await self._run(_insert, cid, password)
            self.table.set(cid, Entry(password))
            if self.on_change is not None:
                self.on_change()
            return True

    async def delete(self, cid: str) -> bool:
        """Remove a credential; False if there is none with this id."""
        async with self._lock:
            if cid not in self.table:
                return False
            if self.source == FILE:
                remaining = {k: v for k, v in self.table.stored().items() if k != cid}
                await asyncio.to_thread(save_agent_credentials, self.path, remaining)
            elif self._run is not None:
                await self._run(_delete, cid)
            self.table.remove(cid)
            if self.on_change is not None:
                self.on_change()
            return True

    async def check_agent(self, cid: str, password: str) -> bool | None:
        """For ids kept in the store: True/False; None for ids that are not (another plugin's)."""
        if not self.in_store:
            return None
        ok = await self.table.check(cid, password)
        if cid not in self.table:
            return None
        return ok


# -- in the store's transaction ---------------------------------------------------------------------

def _load(conn: sa.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(sa.select(clients_auth.c.id, clients_auth.c.password)
                        .order_by(clients_auth.c.id))
    return [(cid, password) for cid, password in rows]


def _insert(conn: sa.Connection, cid: str, password: str) -> None:
    conn.execute(clients_auth.insert().values(id=cid, password=password))


def _delete(conn: sa.Connection, cid: str) -> None:
    conn.execute(clients_auth.delete().where(clients_auth.c.id == cid))
