"""The library's entries: stored commands and scripts (RPort's ``Command`` and ``Script``), their
validation, JSON and tables. One :class:`Kind` describes each, so both share the same code."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Mapping

import attrs
import sqlalchemy as sa

from rport.core.plugin import ApiError, ErrorItem, ResourceSpec, StoreSchema

DEFAULT_TIMEOUT_SEC = 60
"""A stored entry without ``timeout_sec`` (or 0) gets RPort's default."""

METADATA = sa.MetaData()


def _common(table: str) -> list[Any]:
    return [
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),  # a JSON list
        sa.Column("timeout_sec", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name=f"{table}_name"),
    ]


commands_table = sa.Table("library_commands", METADATA, *_common("library_commands"),
                          sa.Column("cmd", sa.Text, nullable=False))
scripts_table = sa.Table(
    "library_scripts", METADATA, *_common("library_scripts"),
    sa.Column("script", sa.Text, nullable=False),
    sa.Column("interpreter", sa.Text, nullable=False),
    sa.Column("is_sudo", sa.Boolean, nullable=False),
    sa.Column("cwd", sa.Text, nullable=False),
)

SCHEMA = StoreSchema(METADATA, Path(__file__).resolve().parent / "migrations")


@attrs.frozen
class Kind:
    """``commands`` or ``scripts``: its table, the field holding its text, and its other fields
    (with their JSON types)."""

    resource: str
    noun: str
    table: sa.Table
    text: str
    extra: Mapping[str, type] = attrs.field(factory=dict)

    @property
    def fields(self) -> tuple[str, ...]:
        return ("id", "name", "created_by", "created_at", "updated_by", "updated_at",
                *self.extra, self.text, "tags", "timeout_sec")

    @property
    def spec(self) -> ResourceSpec:
        # RPort: sort and filter on every field, all fields unless fields[...], 20 a page (max 100)
        return ResourceSpec(name=self.resource, sort_fields=self.fields, default_sort="name",
                            filter_fields=self.fields, fields=self.fields, default_fields=None,
                            page_default=20, page_max=100)

    @property
    def inputs(self) -> dict[str, Any]:
        """The request body's JSON schema (RPort's ``CommandInput`` / ``ScriptInput``)."""
        types = {str: "string", bool: "boolean"}
        return {
            "type": "object", "required": ["name", self.text], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "description": f"a unique name of the {self.noun}"},
                self.text: {"type": "string", "description": f"the text of the {self.noun}"},
                **{k: {"type": types[t]} for k, t in self.extra.items()},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "timeout_sec": {"type": "integer",
                                "description": f"default {DEFAULT_TIMEOUT_SEC} seconds"},
            },
        }


COMMANDS = Kind("commands", "command", commands_table, "cmd")
SCRIPTS = Kind("scripts", "script", scripts_table, "script",
               {"interpreter": str, "is_sudo": bool, "cwd": str})


def _invalid(detail: str) -> ApiError:
    return ApiError(400, "Invalid JSON data.", code="ERR_CODE_INVALID_JSON", detail=detail)


def parse_input(kind: Kind, body: Any) -> dict[str, Any]:
    """The values to store from a create or update body; RPort's ``name is required`` and
    ``<cmd|script> is required`` (both at once if both are missing), JSON type errors as the
    API reports them elsewhere."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    allowed = {"name", kind.text, "tags", "timeout_sec", *kind.extra}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid(f'json: unknown field "{unknown[0]}"')
    values: dict[str, Any] = {}
    for key, typ in {"name": str, kind.text: str, **kind.extra}.items():
        value = body.get(key)
        if value is None:
            value = typ()
        if not isinstance(value, typ):
            raise _invalid(f"{key} must be a {'string' if typ is str else 'boolean'}")
        if isinstance(value, str) and "\0" in value:
            raise _invalid(f"{key} must not contain a NUL character")
        values[key] = value
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _invalid("tags must be a list of strings")
    timeout = body.get("timeout_sec") or 0
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout < 1 << 31:
        raise _invalid("timeout_sec must be a whole number of seconds")
    problems = [f"{key} is required" for key in ("name", kind.text) if not values[key].strip()]
    if problems:
        raise ApiError.many(400, [ErrorItem(title=p, code="ERR_CODE_MISSING_FIELD") for p in problems])
    values["tags"] = list(tags)
    values["timeout_sec"] = timeout or DEFAULT_TIMEOUT_SEC
    return values


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def document(kind: Kind, row: Mapping[str, Any]) -> dict[str, Any]:
    """RPort's JSON of a stored entry."""
    doc = {name: row[name] for name in kind.fields}
    doc["tags"] = json.loads(row["tags"])
    doc["created_at"], doc["updated_at"] = rfc3339(row["created_at"]), rfc3339(row["updated_at"])
    if "is_sudo" in doc:
        doc["is_sudo"] = bool(doc["is_sudo"])
    return doc


# -- in the store's transaction -----------------------------------------------------------------


def row_of(values: Mapping[str, Any]) -> dict[str, Any]:
    return {**values, "tags": json.dumps(values["tags"])}


def all_rows(conn: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.name))]


def get_row(conn: sa.Connection, table: sa.Table, entry_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(table).where(table.c.id == entry_id)).first()
    return None if row is None else dict(row._mapping)


def insert_row(conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> None:
    conn.execute(table.insert().values(**row))


def update_row(conn: sa.Connection, table: sa.Table, entry_id: str,
               values: dict[str, Any]) -> dict[str, Any] | None:
    """Replace an entry's values; its new row, or None if there is no such entry."""
    done = conn.execute(table.update().where(table.c.id == entry_id).values(**values))
    return get_row(conn, table, entry_id) if done.rowcount else None


def delete_row(conn: sa.Connection, table: sa.Table, entry_id: str) -> bool:
    return bool(conn.execute(table.delete().where(table.c.id == entry_id)).rowcount)
