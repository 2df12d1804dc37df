"""The users plugin's tables, named and shaped as RPort documents them for its database users
source (``users``, ``groups``, ``group_details``), so that an operator's SQL and habits carry
over. ``password`` is a bcrypt hash; ``permissions`` is RPort's JSON object of booleans."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

USERS, GROUPS, GROUP_DETAILS = "users", "groups", "group_details"

users = sa.Table(
    USERS, METADATA,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("password", sa.Text, nullable=False),
    sa.Column("password_expired", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("two_fa_send_to", sa.Text, nullable=False, server_default=""),
    sa.Column("totp_secret", sa.Text, nullable=False, server_default=""),
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),  # the last code's time step
)

groups = sa.Table(
    GROUPS, METADATA,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("group", sa.Text, primary_key=True),
    sa.Index("groups_group", "group"),
)

group_details = sa.Table(
    GROUP_DETAILS, METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("permissions", sa.Text, nullable=False, server_default="{}"),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")
