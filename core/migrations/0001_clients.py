"""The core's table as rportd 0.1 created it: the known clients.

A database made by rportd 0.1 (before migrations) already has it: it is adopted as it is.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("clients"):
        return
    op.create_table(
        "clients",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("disconnected_at", sa.Double),
    )


def downgrade() -> None:
    op.drop_table("clients")
