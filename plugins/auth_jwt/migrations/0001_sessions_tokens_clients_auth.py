"""Login sessions, API tokens and agent credentials, as rportd 0.1 created their tables (each
adopted as it is when a database of 0.1 already has it; 0.1 made clients_auth only when agent
credentials were kept in the store).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("api_sessions"):
        op.create_table(
            "api_sessions",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("username", sa.Text, nullable=False),
            sa.Column("lifetime", sa.Double, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Column("last_used", sa.Double, nullable=False),
            sa.Column("address", sa.Text, nullable=False, server_default=""),
        )
    if not inspector.has_table("api_tokens"):
        op.create_table(
            "api_tokens",
            sa.Column("username", sa.Text, nullable=False),
            sa.Column("prefix", sa.Text, nullable=False),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("scope", sa.Text, nullable=False),
            sa.Column("token_hash", sa.Text, nullable=False),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Column("expires_at", sa.Double, nullable=False),
            sa.Column("last_used", sa.Double),
            sa.PrimaryKeyConstraint("username", "prefix"),
        )
    if not inspector.has_table("clients_auth"):
        op.create_table(
            "clients_auth",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("password", sa.Text, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("clients_auth")
    op.drop_table("api_tokens")
    op.drop_table("api_sessions")
