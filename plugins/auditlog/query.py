"""``GET /auditlog``'s options, as RPort has them (server/auditlog): ``sort`` on any field,
``filter[<field>]`` with RPort's values (``a,b``, ``*`` wildcards, ``and(...)``),
``filter[timestamp][gt|lt|since|until]``, ``page[limit]`` (10 by default, 100 at most) and
``page[offset]``; done in SQL, so the log can be large. Plain values match exactly and
wildcards case-insensitively, as in RPort."""

from __future__ import annotations

from typing import Any, Iterable

import attrs
import sqlalchemy as sa

from rport.core.plugin import ApiError, ResourceSpec, parse_list_query

from .record import FIELDS
from .store import auditlog

FILTER_FIELDS = ("username", "remote_ip", "application", "action", "affected_id", "client_id",
                 "client_hostname")
SPEC = ResourceSpec(
    name="auditlog", sort_fields={"timestamp", *FILTER_FIELDS}, default_sort="timestamp",
    filter_fields=FILTER_FIELDS, fields=FIELDS, page_default=10, page_max=100,
    time_filters={"timestamp": frozenset(("gt", "lt", "since", "until"))})
TIME_OPERATORS = {"gt": "__gt__", "lt": "__lt__", "since": "__ge__", "until": "__le__"}


@attrs.frozen
class AuditQuery:
    where: sa.ColumnElement[bool] | None
    order: tuple[sa.ColumnElement[Any], ...]
    limit: int
    offset: int
    fields: tuple[str, ...] | None


def _matches(column: sa.ColumnElement[str], value: str) -> sa.ColumnElement[bool]:
    if "*" not in value:
        return column == value
    pattern = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(pattern.replace("*", "%"), escape="\\")


def parse(items: Iterable[tuple[str, str]], *, username: str | None) -> AuditQuery:
    """The query of ``items`` (the request's query parameters); ``username``: the caller when
    not an administrator, who sees only their own entries and may not filter by user (403)."""
    items = list(items)
    query = parse_list_query(items, SPEC)
    conditions: list[sa.ColumnElement[bool]] = [
        sa.or_(*(getattr(auditlog.c.timestamp, TIME_OPERATORS[operator])(t) for t in bounds))
        for _, operator, bounds in query.times]
    if username is not None:
        # as RPort: a filter that names username (filter[*] does not; the forced filter below
        # keeps it to the caller's entries anyway)
        named = [key[len("filter["):].split("]")[0].split("|") for key, _ in items
                 if key.startswith("filter[")]
        if any("username" in columns for columns in named):
            raise ApiError(403, "filter forbidden", code="ERR_CODE_FILTER_FORBIDDEN",
                           detail="only members of group Administrators can filter by usernames")
        conditions.append(auditlog.c.username == username)
    for f in query.filters:
        tests = [_matches(auditlog.c[column], value) for column in f.columns for value in f.values]
        if f.match_all:  # and(a,b): every value, in any of the columns
            tests = [sa.or_(*(_matches(auditlog.c[column], value) for column in f.columns))
                     for value in f.values]
            conditions.append(sa.and_(*tests))
        else:
            conditions.append(sa.or_(*tests))
    column = auditlog.c[query.sort]
    first = column.desc() if query.descending else column.asc()
    return AuditQuery(
        where=sa.and_(*conditions) if conditions else None,
        order=(first, auditlog.c.id.desc() if query.descending else auditlog.c.id.asc()),
        limit=query.limit or SPEC.page_default, offset=query.offset, fields=query.fields)
