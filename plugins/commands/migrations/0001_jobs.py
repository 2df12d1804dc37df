"""Jobs and multi-jobs, as rportd 0.1 created their tables (adopted as they are when a database
of 0.1 already has them).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("jobs"):
        op.create_table(
            "jobs",
            sa.Column("jid", sa.Text, primary_key=True),
            sa.Column("client_id", sa.Text, nullable=False),
            sa.Column("multi_job_id", sa.Text),
            sa.Column("created", sa.Double, nullable=False),
            sa.Column("doc", sa.Text, nullable=False),
        )
        op.create_index("jobs_client", "jobs", ["client_id", "created"])
        op.create_index("jobs_multi", "jobs", ["multi_job_id", "created"])
    if not inspector.has_table("multi_jobs"):
        op.create_table(
            "multi_jobs",
            sa.Column("jid", sa.Text, primary_key=True),
            sa.Column("created", sa.Double, nullable=False),
            sa.Column("doc", sa.Text, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("multi_jobs")
    op.drop_table("jobs")
