"""An index for the history route (a client's samples, newest first), added after the table
was first released: a database made before gets it at the next start, one made now gets both.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("diskusage_samples_client", "diskusage_samples", ["client_id", "measured_at"])


def downgrade() -> None:
    op.drop_index("diskusage_samples_client", table_name="diskusage_samples")
