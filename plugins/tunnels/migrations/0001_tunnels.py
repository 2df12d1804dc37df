"""The tunnels kept for reconnects, as rportd 0.1 created the table (adopted as it is when a
database of 0.1 already has it).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("tunnels"):
        return
    op.create_table(
        "tunnels",
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "id"),
    )


def downgrade() -> None:
    op.drop_table("tunnels")
