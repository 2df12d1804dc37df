"""The cluster's tables (owner ``cluster``, migrated only when ``[cluster] nats_url`` is set):
the nodes and their heartbeats, which node holds each agent's session, the tunnel ports in use
anywhere, and failed logins. Plain functions for ``store.run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..store.clients import clients as client_records
from ..store.schema import StoreSchema, upsert

METADATA = sa.MetaData()

nodes = sa.Table(
    "cluster_nodes", METADATA,
    sa.Column("node_id", sa.Text, primary_key=True),
    sa.Column("api_address", sa.Text, nullable=False, server_default=""),
    sa.Column("agent_address", sa.Text, nullable=False, server_default=""),
    sa.Column("tunnel_host", sa.Text, nullable=False, server_default=""),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("heartbeat_at", sa.Double, nullable=False),
)

holders = sa.Table(
    "cluster_clients", METADATA,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("connected_at", sa.Double, nullable=False),
    sa.Index("cluster_clients_node", "node_id"),
)
"""One row per connected agent: the node that holds its session."""

ports = sa.Table(
    "cluster_ports", METADATA,
    sa.Column("port", sa.Integer, primary_key=True),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Index("cluster_ports_node", "node_id"),
)
"""Server ports that a tunnel listens on, on any node: the pool is cluster-wide, so a tunnel
that moves to another node with its agent keeps its port."""

throttle = sa.Table(
    "cluster_throttle", METADATA,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("until", sa.Double, nullable=False),
    sa.Index("cluster_throttle_until", "until"),
)
"""Failed logins and bans (``until`` in Unix seconds), for nodes that start later."""

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


# -- nodes -------------------------------------------------------------------------------------


def beat(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(upsert(conn, nodes, ["node_id"]), row)


def live_nodes(conn: sa.Connection, since: float) -> dict[str, dict[str, Any]]:
    rows = conn.execute(sa.select(nodes).where(nodes.c.heartbeat_at >= since)).mappings()
    return {row["node_id"]: dict(row) for row in rows}


def leave(conn: sa.Connection, node_id: str, at: float) -> None:
    """A node stopping: its agents are disconnected, its ports free, its row gone."""
    release_node(conn, node_id, at)
    conn.execute(nodes.delete().where(nodes.c.node_id == node_id))


def release_node(conn: sa.Connection, node_id: str, at: float) -> list[str]:
    """What a dead (or stopping) node held is let go: its agents' records say disconnected, its
    ports are free. Returns the ids of its agents. Rows another node took meanwhile are not
    touched (the holder rows are deleted first, under their row locks)."""
    gone = [cid for (cid,) in conn.execute(
        holders.delete().where(holders.c.node_id == node_id).returning(holders.c.client_id))]
    if gone:
        conn.execute(client_records.update()
                     .where(client_records.c.id.in_(gone), client_records.c.disconnected_at.is_(None))
                     .values(disconnected_at=at))
    conn.execute(ports.delete().where(ports.c.node_id == node_id))
    return gone


# -- agents --------------------------------------------------------------------------------------


def hold(conn: sa.Connection, client_id: str, node_id: str, session_id: str, at: float) -> None:
    conn.execute(upsert(conn, holders, ["client_id"]), {
        "client_id": client_id, "node_id": node_id, "session_id": session_id, "connected_at": at})


def let_go(conn: sa.Connection, client_id: str, node_id: str, session_id: str) -> bool:
    """This node's session of the agent ended: whether the row was still ours (another node
    may have taken the agent over meanwhile)."""
    result = conn.execute(holders.delete().where(
        holders.c.client_id == client_id, holders.c.node_id == node_id,
        holders.c.session_id == session_id))
    return result.rowcount > 0


def holder(conn: sa.Connection, client_id: str) -> tuple[str, str] | None:
    row = conn.execute(sa.select(holders.c.node_id, holders.c.session_id)
                       .where(holders.c.client_id == client_id)).first()
    return (row[0], row[1]) if row else None


def all_holders(conn: sa.Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute(sa.select(holders.c.client_id, holders.c.node_id, holders.c.session_id))
    return {cid: (node, sid) for cid, node, sid in rows}


def records_of(conn: sa.Connection, client_ids: list[str]) -> list[tuple[str, str, float | None]]:
    rows = conn.execute(sa.select(client_records.c.id, client_records.c.record,
                                  client_records.c.disconnected_at)
                        .where(client_records.c.id.in_(client_ids)))
    return [(cid, record, at) for cid, record, at in rows]


# -- ports ---------------------------------------------------------------------------------------

_TAKEABLE = sa.or_(
    ports.c.client_id == sa.literal_column("excluded.client_id"),
    ports.c.node_id.not_in(sa.select(nodes.c.node_id)
                           .where(nodes.c.heartbeat_at >= sa.bindparam("stale"))))
"""A port in use may be taken by the same client (it moved here with its agent) or from a
node whose heartbeat is older than ``stale`` (dead). Built once (see ``upsert``)."""


def claim_port(conn: sa.Connection, port: int, node_id: str, client_id: str, stale: float) -> bool:
    """Take ``port`` for a tunnel of ``client_id`` on ``node_id``; False if another live
    node's tunnel has it."""
    stmt = upsert(conn, ports, ["port"], where=_TAKEABLE).returning(ports.c.port)
    return conn.execute(stmt, {"port": port, "node_id": node_id, "client_id": client_id,
                               "stale": stale}).first() is not None


def free_port(conn: sa.Connection, port: int, node_id: str) -> None:
    conn.execute(ports.delete().where(ports.c.port == port, ports.c.node_id == node_id))


def taken_ports(conn: sa.Connection, node_id: str) -> set[int]:
    """Ports in use on other nodes."""
    return {p for (p,) in conn.execute(sa.select(ports.c.port).where(ports.c.node_id != node_id))}


# -- failed logins ---------------------------------------------------------------------------------


def save_throttle(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    live = [r for r in rows if r["failures"] > 0]
    for row in rows:
        if row["failures"] <= 0:
            conn.execute(throttle.delete().where(throttle.c.name == row["name"],
                                                 throttle.c.key == row["key"]))
    if live:
        conn.execute(upsert(conn, throttle, ["name", "key"]), live)


def load_throttle(conn: sa.Connection, now: float) -> list[dict[str, Any]]:
    conn.execute(throttle.delete().where(throttle.c.until < now))
    return [dict(r) for r in conn.execute(sa.select(throttle)).mappings()]
