"""users, server side: the database users source (``[api] auth_user_table``) and the user
management API. Hook implementations only: the logic is in :mod:`.source`, :mod:`.validate`
and :mod:`.routes`."""

from __future__ import annotations

import logging
from typing import Any

from rport.core.plugin import ConfigError, StoreSchema, hookimpl, set_users_source, users_source
from rport.plugins.auth_basic.credentials import (
    CredentialsError,
    PasswordChecker,
    generated_pair,
    load_api_users,
)

from .config import UsersConfig
from .routes import register_routes
from .source import DbUsers
from .tables import GROUP_DETAILS, GROUPS, SCHEMA, USERS

NAME = "users"
log = logging.getLogger("rport.plugins.users")


@hookimpl
def rport_config_class() -> type:
    return UsersConfig


@hookimpl
def rport_store_schema() -> StoreSchema:
    return SCHEMA


def _check_tables(api: Any) -> None:
    problems = []
    for key, value, ours in (("auth_user_table", api.auth_user_table, USERS),
                             ("auth_group_table", api.auth_group_table, GROUPS),
                             ("auth_group_details_table", api.auth_group_details_table,
                              GROUP_DETAILS)):
        if value and value != ours:
            problems.append(f'api.{key}: the table in rportd\'s database is "{ours}" (created '
                            f'and migrated by rportd): set {key} = "{ours}"')
    if problems:
        raise ConfigError(problems)


@hookimpl
async def rport_server_startup(server: Any) -> None:
    api = server.config.api
    if not api.auth_user_table:
        return
    _check_tables(api)
    config: UsersConfig = server.plugin_config(NAME)
    db = DbUsers(server.store.run, PasswordChecker(),
                 group_permissions=bool(api.auth_group_details_table),
                 password_min_length=api.password_min_length, totp_enabled=api.totp_enabled)
    if config.import_auth_file:
        try:
            table = load_api_users("", config.import_auth_file)
        except CredentialsError as exc:
            raise ConfigError([str(exc).replace("api.auth_file", "plugins.users.import_auth_file")]) from None
        assert table is not None
        added = await db.import_users((name, entry.secret, entry.groups)
                                      for name, entry in table.entries.items())
        log.info("imported %d user(s) from %s%s", len(added), config.import_auth_file,
                 f": {', '.join(added)}" if added else " (all were in the database already)")
    if await db.count() == 0:
        path = server.data_dir / "rportd-api-auth"
        name, password, _ = generated_pair(path, "admin")
        await db.import_users([(name, password, ("Administrators",))])
        log.warning("the users table is empty: created administrator %s with password %s (kept "
                    "in %s); change it with PUT /api/v1/me", name, password, path)
    set_users_source(server, db, NAME)


@hookimpl
def rport_register_routes(server: Any, register: Any) -> None:
    register_routes(server, register)


@hookimpl
def rport_status_document(server: Any, doc: dict) -> None:
    doc["password_min_length"] = server.config.api.password_min_length
    source = users_source(server)
    doc["group_permissions_enabled"] = bool(source is not None and source.group_permissions)
