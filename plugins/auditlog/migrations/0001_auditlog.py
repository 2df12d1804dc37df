"""The audit log: RPort's fields of an entry, an id giving the order they were written in, and
indexes for the usual filters (time, client, user, affected id).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auditlog",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("timestamp", sa.Double, nullable=False),
        sa.Column("username", sa.Text, nullable=False, server_default=""),
        sa.Column("remote_ip", sa.Text, nullable=False, server_default=""),
        sa.Column("application", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("affected_id", sa.Text, nullable=False, server_default=""),
        sa.Column("client_id", sa.Text, nullable=False, server_default=""),
        sa.Column("client_hostname", sa.Text, nullable=False, server_default=""),
        sa.Column("request", sa.Text, nullable=False, server_default=""),
        sa.Column("response", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("auditlog_timestamp", "auditlog", ["timestamp"])
    op.create_index("auditlog_client_id", "auditlog", ["client_id"])
    op.create_index("auditlog_username", "auditlog", ["username"])
    op.create_index("auditlog_affected_id", "auditlog", ["affected_id"])


def downgrade() -> None:
    op.drop_table("auditlog")
