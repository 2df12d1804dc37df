"""auth_basic: HTTP basic auth for the API (``[api] auth``/``auth_file``) and password checks
for agents (``[server] auth``/``auth_file``). Hook implementations only; the logic is in
:mod:`.credentials`."""

from __future__ import annotations

import base64
import binascii
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from rport.core.plugin import ApiError, ConfigError, User, hookimpl, set_users_source, users_source

from .credentials import (
    CredentialsError,
    CredentialTable,
    generated_pair,
    load_agent_credentials,
    load_api_users,
)
from .users import TableUsers

NAME = "auth_basic"
log = logging.getLogger("rport.plugins.auth_basic")


class _State:
    def __init__(self, agents: CredentialTable, api: CredentialTable | None) -> None:
        self.agents = agents
        self.api = api
        """The API users of [api] auth or auth_file; None when they are in the database."""


def _state(server: Any) -> _State:
    return server.state[NAME]


@hookimpl
def rport_server_startup(server: Any) -> None:
    cfg = server.config
    try:
        agents = load_agent_credentials(cfg.server.auth, cfg.server.auth_file)
        api = None if cfg.api.auth_user_table else load_api_users(cfg.api.auth, cfg.api.auth_file)
    except CredentialsError as exc:
        raise ConfigError([str(exc)]) from None
    if agents is None:
        path = server.data_dir / "rportd-agent-auth"
        name, password, _ = generated_pair(path, "rport")
        agents = load_agent_credentials(f"{name}:{password}", "")
        log.warning("no agent credentials configured ([server] auth or auth_file): using %s:%s, "
                    "generated once and kept in %s", name, password, path)
        server.state[NAME + ".example"] = f"{name}:{password}"
    if api is None and not cfg.api.auth_user_table:
        path = server.data_dir / "rportd-api-auth"
        name, password, _ = generated_pair(path, "admin")
        api = load_api_users(f"{name}:{password}", "")
        log.warning("no API credentials configured ([api] auth or auth_file): the API requires "
                    "user %s with password %s, generated once and kept in %s", name, password, path)
    assert agents is not None
    server.state[NAME] = _State(agents, api)
    if api is not None:  # else the users plugin keeps them in the database
        set_users_source(server, TableUsers(api), NAME)


@hookimpl
def rport_server_started(server: Any) -> None:
    auth = server.state.get(NAME + ".example")
    command = [agent_command(), "--fingerprint", server.identity.fingerprint,
               "--auth", auth or "ID:PASSWORD", server.connect_urls[0]]
    log.info("attach an agent with: %s%s", shlex.join(command),
             "" if auth else " (with an id and password of [server] auth or auth_file)")


def agent_command() -> str:
    """How to run the agent installed next to this rportd (the README's install puts both in
    ``.venv/bin``, which is not on PATH): the path of ``rport`` in the running interpreter's
    scripts directory, relative to the current directory when it is below it."""
    script = Path(sys.executable).parent / "rport"
    if not script.is_file():
        return "rport"
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return str(script)
    return str(relative) if str(relative).startswith(".") else f"./{relative}"


@hookimpl
async def rport_authenticate_agent(server: Any, auth_id: str, password: str) -> bool | None:
    table = _state(server).agents
    ok = await table.check(auth_id, password)
    if auth_id not in table:
        return None  # not ours: another plugin may know this id
    return ok


@hookimpl
async def rport_authenticate_api(server: Any, request: Any) -> User | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "unauthorized", detail="malformed Basic authorization header") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise ApiError(401, "unauthorized", detail="malformed Basic authorization header")
    source = users_source(server)
    if source is None or server.config.api.totp_enabled:
        return None  # no users, or two-factor login: passwords only at /login (auth_jwt)
    record = await source.check_password(username, password)
    if record is None:
        return None
    if record.password_expired:
        raise ApiError(401, "password has expired, please change your password",
                       code="ERR_CODE_PASSWORD_EXPIRED",
                       detail="set a new one with POST /api/v1/login (new_password)")
    return User(username, record.groups, via=NAME)


@hookimpl
def rport_status_document(server: Any, doc: dict) -> None:
    state = _state(server)
    doc["clients_auth_source"] = state.agents.source
    doc["clients_auth_mode"] = "Read Only"
    source = users_source(server)
    doc["users_auth_source"] = source.source if source is not None else ""
