"""Client groups, as rportd 0.1 created the table (adopted as it is when a database of 0.1
already has it).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("client_groups"):
        return
    op.create_table(
        "client_groups",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
        sa.Column("allowed_user_groups", sa.Text, nullable=False, server_default="[]"),
    )


def downgrade() -> None:
    op.drop_table("client_groups")
