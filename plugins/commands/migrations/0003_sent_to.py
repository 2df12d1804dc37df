"""Jobs that survive a restart of rportd at any moment: ``sent_to``, the agent process (its
session id) a job was sent to, so that a job that never reached a still-running agent process is
sent again rather than failed; and an index of the jobs not finished yet (``queued`` and
``running``): at start-up rportd looks for the multi-client jobs that still have jobs to send,
and at each agent connection for the jobs still running on it, without reading every job ever
run.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNFINISHED = "status IN ('queued', 'running')"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("sent_to", sa.Text))
    op.create_index("jobs_unfinished", "jobs", ["status", "client_id"],
                    sqlite_where=sa.text(_UNFINISHED), postgresql_where=sa.text(_UNFINISHED))


def downgrade() -> None:
    op.drop_index("jobs_unfinished", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sent_to")
