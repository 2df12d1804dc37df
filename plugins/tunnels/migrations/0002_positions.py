"""An explicit order for each client's tunnels (rportd 0.1 relied on SQLite's rowid, which
PostgreSQL does not have). Existing rows keep their order: their position is their rowid.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tunnels", sa.Column("position", sa.Integer, nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE tunnels SET position = rowid")


def downgrade() -> None:
    with op.batch_alter_table("tunnels") as batch:
        batch.drop_column("position")
