"""API users, their group memberships and the groups' permissions (RPort's tables).

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
        "users",
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("password", sa.Text, nullable=False),
        sa.Column("password_expired", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("two_fa_send_to", sa.Text, nullable=False, server_default=""),
        sa.Column("totp_secret", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "groups",
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("group", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("username", "group"),
    )
    op.create_index("groups_group", "groups", ["group"])
    op.create_table(
        "group_details",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("permissions", sa.Text, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_table("group_details")
    op.drop_index("groups_group", table_name="groups")
    op.drop_table("groups")
    op.drop_table("users")
