"""The table of measurements.

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
        "diskusage_samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.Column("free", sa.BigInteger, nullable=False),
        sa.Column("measured_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("diskusage_samples")
