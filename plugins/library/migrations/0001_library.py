"""The stored commands and scripts of the library.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _common() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("timeout_sec", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table("library_commands", *_common(), sa.Column("cmd", sa.Text, nullable=False),
                    sa.UniqueConstraint("name", name="library_commands_name"))
    op.create_table(
        "library_scripts", *_common(),
        sa.UniqueConstraint("name", name="library_scripts_name"),
        sa.Column("script", sa.Text, nullable=False),
        sa.Column("interpreter", sa.Text, nullable=False),
        sa.Column("is_sudo", sa.Boolean, nullable=False),
        sa.Column("cwd", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("library_scripts")
    op.drop_table("library_commands")
