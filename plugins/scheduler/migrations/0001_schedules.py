"""Schedules (RPort's table, plus when each runs next and its latest multi-client job).

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
        "schedules",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("schedule", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("next_run_at", sa.Double, nullable=False),
        sa.Column("last_jid", sa.Text),
    )
    op.create_index("schedules_next_run", "schedules", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("schedules")
