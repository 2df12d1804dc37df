"""The per-server state of auth_jwt (``server.state["auth_jwt"]``): login sessions, API tokens,
agent credentials, and what the routes need from auth_basic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from rport.core.plugin import ConfigError, UsersSource, on_revoke_sessions, users_source

from .apitokens import ApiTokens
from .clientsauth import ClientsAuth
from .config import AuthJwtConfig
from .sessions import Sessions

log = logging.getLogger("rport.plugins.auth_jwt")

MIN_SECRET = 32


def jwt_secret(configured: str) -> str:
    """``[api] jwt_secret``, or a random one (tokens then end when rportd restarts)."""
    if not configured:
        log.warning("[api] jwt_secret is not set: login tokens are signed with a random secret "
                    "and stop working when rportd restarts; set jwt_secret to keep them")
        return secrets.token_urlsafe(32)
    if len(configured) < MIN_SECRET:
        log.warning("[api] jwt_secret is shorter than %d characters: use a long random secret",
                    MIN_SECRET)
    return configured


class AuthJwt:
    def __init__(self, server: Any, basic: Any, config: AuthJwtConfig) -> None:
        self.server = server
        self.config = config
        self._basic = basic
        run = server.store.run
        self.sessions = Sessions(run, jwt_secret(server.config.api.jwt_secret))
        self.tokens = ApiTokens(run)
        cfg = server.config.server
        self.clients_auth = ClientsAuth.for_config(cfg.auth, cfg.auth_file, basic.agents, run)
        self.disconnects: dict[str, asyncio.Event] = {}
        """Clients being deleted with their credential: set once their disconnect is processed."""
        self._purger: asyncio.Task[None] | None = None

    @property
    def users(self) -> UsersSource:
        """The server's users source (auth_basic's [api] auth / auth_file, or the users
        plugin's database), read anew on every call."""
        source = users_source(self.server)
        assert source is not None  # checked at start-up
        return source

    async def revoke(self, username: str, keep: str | None, tokens: bool) -> int:
        """End ``username``'s login sessions but ``keep`` (and delete their API tokens)."""
        if tokens:
            await self.tokens.delete_all(username)
        return await self.sessions.revoke_user(username, keep)

    async def start(self) -> None:
        if users_source(self.server) is None:
            raise ConfigError(["api.auth_user_table: the API users are in the database, which "
                               "the users plugin keeps; it is disabled: enable it (or use "
                               "[api] auth or auth_file)"])
        on_revoke_sessions(self.server, self.revoke)
        await self.sessions.open()
        await self.tokens.open()
        await self.clients_auth.load()
        self._purger = asyncio.create_task(self._purge_loop(), name="auth_jwt-purge")

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.purge_interval))
            try:
                if count := await self.sessions.purge():
                    log.debug("%d expired login session(s) deleted", count)
            except Exception:
                log.exception("purging expired login sessions failed")

    async def delete_bound_clients(self, auth_id: str) -> int:
        """Disconnect and forget every client that logged in with ``auth_id`` (a deleted
        credential, with ``force``). Waits until the core has processed each disconnect (so
        the other plugins, e.g. tunnels, have been told) before the client is forgotten."""
        server = self.server
        bound = [c for c in server.clients if c.auth_id == auth_id]
        for client in bound:
            session = server.clients.session(client.id)
            if session is not None:
                done = self.disconnects.setdefault(client.id, asyncio.Event())
                try:
                    await session.close(f"client auth {auth_id!r} deleted")
                    await asyncio.wait_for(done.wait(), 10)
                except TimeoutError:
                    log.warning("client %s: no disconnect event within 10s", client.id)
                finally:
                    self.disconnects.pop(client.id, None)
            if server.clients.get(client.id) is client and not client.connected:
                await server.remove_client(client.id, f"its credential {auth_id!r} was deleted")
                log.info("client %s deleted with its client auth %r", client.id, auth_id)
        return len(bound)
