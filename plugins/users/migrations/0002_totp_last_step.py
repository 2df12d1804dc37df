"""The time step of each user's last accepted TOTP code, so that a code cannot be used twice
(RFC 6238 §5.2), also by two rportd nodes at once.

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
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.drop_column("users", "totp_last_step")
