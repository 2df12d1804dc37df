"""A job's status as a column, so that the jobs still running are found with plain SQL on every
database (rportd 0.1 read it from the JSON document with SQLite's json_extract). Filled in from
the documents of the existing jobs.

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
    op.add_column("jobs", sa.Column("status", sa.Text))
    status = {
        "sqlite": "json_extract(doc, '$.status')",
        "postgresql": "CAST(doc AS json) ->> 'status'",
    }[op.get_bind().dialect.name]
    op.execute(f"UPDATE jobs SET status = {status}")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("status")
