"""The cluster's tables: nodes, agent holders, tunnel ports, failed logins.

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
        "cluster_nodes",
        sa.Column("node_id", sa.Text, primary_key=True),
        sa.Column("api_address", sa.Text, nullable=False, server_default=""),
        sa.Column("agent_address", sa.Text, nullable=False, server_default=""),
        sa.Column("tunnel_host", sa.Text, nullable=False, server_default=""),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
    )
    op.create_table(
        "cluster_clients",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("connected_at", sa.Double, nullable=False),
    )
    op.create_index("cluster_clients_node", "cluster_clients", ["node_id"])
    op.create_table(
        "cluster_ports",
        sa.Column("port", sa.Integer, primary_key=True),
        sa.Column("node_id", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
    )
    op.create_index("cluster_ports_node", "cluster_ports", ["node_id"])
    op.create_table(
        "cluster_throttle",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("until", sa.Double, nullable=False),
    )
    op.create_index("cluster_throttle_until", "cluster_throttle", ["until"])


def downgrade() -> None:
    for table in ("cluster_throttle", "cluster_ports", "cluster_clients", "cluster_nodes"):
        op.drop_table(table)
