"""A user's API token names are unique in the database itself, not only by the check before
the insert: with several rportd nodes on one database, two simultaneous creations of the same
name cannot both succeed. (rportd 0.1 checked before inserting, so no existing data breaks it.)

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("api_tokens_name", "api_tokens", ["username", "name"], unique=True)


def downgrade() -> None:
    op.drop_index("api_tokens_name", table_name="api_tokens")
