"""auth_jwt's tables in the server's store: login sessions, API tokens (hashes only) and the
agent credentials managed through the API."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from rport.core.plugin import StoreSchema

METADATA = sa.MetaData()

api_sessions = sa.Table(
    "api_sessions", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("lifetime", sa.Double, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double, nullable=False),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
)

api_tokens = sa.Table(
    "api_tokens", METADATA,
    sa.Column("username", sa.Text, primary_key=True),
    sa.Column("prefix", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double),
    sa.Index("api_tokens_name", "username", "name", unique=True),
)

clients_auth = sa.Table(
    "clients_auth", METADATA,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("password", sa.Text, nullable=False),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")
