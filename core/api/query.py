"""Generic list options of the API list endpoints: sort, filter, sparse fields, pagination.

The query language is RPort's (``share/query``), so existing clients and scripts keep working:

``sort=name`` / ``sort=-name``
    One field; ``-`` means descending. Strings compare case-insensitively; ties are broken by
    ``id`` ascending (in both directions). Without ``sort`` the resource's default applies.
    Two ``sort`` params or a comma list -> ``Only one sort field is supported for <resource>.``

``filter[col]=a,b``
    Rows whose ``col`` equals ``a`` OR ``b``. ``filter[c1|c2]=v`` matches when any of the
    columns matches. ``filter[col]=and(a,b)`` needs every value to match (within one column),
    ``or(a,b)`` any of them. ``filter[*]`` stands for all filter columns of the resource.
    Separate filter params are ANDed. Matching (:func:`matches`) is case-insensitive equality of
    the string form; a value with ``*`` is a fully anchored wildcard. Lists match if any element
    matches, dicts compare each entry as ``"key: value"``, numbers by their string form,
    booleans as ``true``/``false``, ``None`` never matches.

``fields[<resource>]=a,b``
    Only these keys of each row (in the row's own order); the resource may have other names
    too (``resource_aliases``). Aliases map requested names to real
    keys. Without the param a spec's ``default_fields`` apply; ``None`` means all fields.

``page[limit]=n&page[offset]=m``
    Limit (default and maximum from the spec) and offset (default 0). A spec with
    ``paginate_by_default=False`` returns every row unless ``page[limit]`` is given.

Any other parameter must be declared by the route (``extra``); params other than ``filter``
may not repeat unless the route allows it (``repeatable``). All problems found are reported
together in one 400 :class:`~rport.core.errors.ApiError`, one error item each.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import types
from typing import Any, Callable, Iterable, Mapping

import attrs

from rport.core.errors import ApiError, ErrorItem

__all__ = ["ERR_CODE", "Filter", "ListQuery", "ResourceSpec", "apply_list_query", "matches",
           "parse_list_query"]

ERR_CODE = "ERR_CODE_BAD_QUERY_PARAM"

_FILTER_KEY = re.compile(r"filter\[(.*)\]", re.DOTALL)
_TIME_KEY = re.compile(r"filter\[([^\]]*)\]\[(.*)\]", re.DOTALL)
_FIELDS_KEY = re.compile(r"fields\[(.*)\]", re.DOTALL)
_GROUP_VALUE = re.compile(r"(and|or)\((.*)\)", re.DOTALL | re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_PAGE_LIMIT, _PAGE_OFFSET = "page[limit]", "page[offset]"


def _readonly_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


def _optional_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class ResourceSpec:
    """What a list endpoint supports; see the module docstring for the meaning of each part."""

    name: str
    sort_fields: frozenset[str] = attrs.field(converter=frozenset)
    default_sort: str
    filter_fields: frozenset[str] = attrs.field(converter=frozenset)
    fields: frozenset[str] = attrs.field(converter=frozenset)
    default_fields: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    field_aliases: Mapping[str, str] = attrs.field(factory=dict, converter=_readonly_mapping,
                                                   hash=False)
    page_default: int = 50
    page_max: int = 500
    paginate_by_default: bool = True
    resource_aliases: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    """Other names ``fields[<name>]`` may give the resource (RPort's jobs: commands, scripts)."""
    time_filters: Mapping[str, frozenset[str]] = attrs.field(factory=dict, converter=_readonly_mapping,
                                                             hash=False)
    """Fields filtered by time, and their operators: ``{"started_at": {"since", "until"}}``
    takes ``filter[started_at][since]=<time>[,<time>...]`` (:func:`parse_time`; a list: any of
    them) into :attr:`ListQuery.times`, for the route to apply."""


@attrs.frozen
class Filter:
    """One ``filter[...]`` param: a row matches if any column matches any (or all) values."""

    columns: tuple[str, ...]
    values: tuple[str, ...]
    match_all: bool = False

    def matches_row(self, row: Mapping[str, Any]) -> bool:
        test = all if self.match_all else any
        return any(test(matches(row.get(col), v) for v in self.values) for col in self.columns)

    def compile(self) -> Callable[[Callable[[str], Forms]], bool]:
        """The same test as :meth:`matches_row`, on the :func:`forms` of a row's values
        (given by column, e.g. kept between requests): ``compile()(lambda col:
        forms(row.get(col)))`` is ``matches_row(row)``."""
        tests = [_forms_test(v) for v in self.values]
        columns = self.columns
        if self.match_all:
            def run(forms_of: Callable[[str], Forms]) -> bool:
                for col in columns:
                    found = forms_of(col)
                    for test in tests:
                        if not test(found):
                            break
                    else:
                        return True
                return False
        else:
            def run(forms_of: Callable[[str], Forms]) -> bool:
                for col in columns:
                    found = forms_of(col)
                    for test in tests:
                        if test(found):
                            return True
                return False
        return run


@attrs.frozen
class ListQuery:
    """The parsed, validated list options. ``fields`` holds real row keys (aliases resolved)."""

    sort: str
    descending: bool = False
    filters: tuple[Filter, ...] = ()
    fields: tuple[str, ...] | None = None
    limit: int | None = None
    offset: int = 0
    times: tuple[tuple[str, str, tuple[float, ...]], ...] = ()
    """The time filters (:attr:`ResourceSpec.time_filters`): ``(field, operator, times)``."""


def string_form(value: Any) -> str:
    """A value as filters and sorting see it (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@functools.lru_cache(maxsize=512)
def _wildcard(pattern: str) -> re.Pattern[str]:
    body = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def _match_string(text: str, pattern: str) -> bool:
    if "*" in pattern:
        return _wildcard(pattern).fullmatch(text) is not None
    return text.casefold() == pattern.casefold()


def matches(value: Any, pattern: str) -> bool:
    """Whether one row value matches one filter value (see the module docstring)."""
    if value is None:
        return False
    if isinstance(value, Mapping):
        return any(_match_string(f"{k}: {string_form(v)}", pattern) for k, v in value.items()
                   if v is not None)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(matches(item, pattern) for item in value)
    return _match_string(string_form(value), pattern)


Forms = tuple[tuple[str, ...], tuple[str, ...]]
"""A row value's strings as filters see them, and the same casefolded (a row value has few:
tuples take less memory than sets and are searched as fast)."""


def forms(value: Any) -> Forms:
    """The strings that :func:`matches` compares ``value`` with, one by one: ``matches(value,
    p)`` is true when ``p`` matches one of them (a list's items, a dict's ``"key: value"``
    entries, nothing for None)."""
    found: list[str] = []

    def add(value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            found.extend(f"{k}: {string_form(v)}" for k, v in value.items() if v is not None)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                add(item)
        else:
            found.append(string_form(value))
    add(value)
    folded = [s.casefold() for s in found]
    return tuple(found), tuple(f if f != s else s for f, s in zip(folded, found))


def _forms_test(pattern: str) -> Callable[[Forms], bool]:
    if "*" in pattern:
        fullmatch = _wildcard(pattern).fullmatch

        def wildcard(found: Forms) -> bool:
            for text in found[0]:
                if fullmatch(text) is not None:
                    return True
            return False
        return wildcard
    folded = pattern.casefold()
    return lambda found: folded in found[1]


def _split_values(raw: str) -> tuple[tuple[str, ...], bool]:
    group = _GROUP_VALUE.fullmatch(raw.strip())
    match_all = False
    if group:
        match_all = group.group(1).lower() == "and"
        raw = group.group(2)
    return tuple(v.strip() for v in raw.split(",")), match_all


def _parse_int(raw: str, what: str, problems: list[str]) -> int | None:
    if not _INTEGER.fullmatch(raw.strip()):
        problems.append(f"pagination {what} must be a number")
        return None
    return int(raw)


def parse_list_query(params: Any, spec: ResourceSpec, extra: Iterable[str] = (), *,
                     repeatable: Iterable[str] = ()) -> ListQuery:
    """Parse and validate the query params (multi-items or a starlette ``QueryParams``).

    ``extra`` names further params the route accepts (they are not interpreted here);
    ``repeatable`` names params that may appear more than once. Raises one 400
    :class:`ApiError` with an item per problem found.
    """
    items: list[tuple[str, str]] = list(params.multi_items() if hasattr(params, "multi_items")
                                        else params)
    extra_names, repeat_ok = frozenset(extra), frozenset(repeatable)
    problems: list[str] = []
    seen: dict[str, int] = {}
    for key, _ in items:
        seen[key] = seen.get(key, 0) + 1

    sort_raw = [v for k, v in items if k == "sort"]
    sort_spec = spec.default_sort
    if len(sort_raw) > 1 or (sort_raw and "," in sort_raw[0]):
        problems.append(f"Only one sort field is supported for {spec.name}.")
    elif sort_raw and sort_raw[0].strip():
        sort_spec = sort_raw[0].strip()
        if sort_spec.removeprefix("-") not in spec.sort_fields:
            problems.append(f"unsupported sort field '{sort_spec.removeprefix('-')}'")
    descending = sort_spec.startswith("-")
    sort = sort_spec.removeprefix("-")

    filters: list[Filter] = []
    times: list[tuple[str, str, tuple[float, ...]]] = []
    fields: tuple[str, ...] | None = None
    if spec.default_fields is not None:
        fields = tuple(dict.fromkeys(spec.field_aliases.get(f, f) for f in spec.default_fields))
    limit: int | None = spec.page_default if spec.paginate_by_default else None
    offset = 0

    for key, value in items:
        if key == "sort":
            continue
        if seen[key] > 1 and key not in repeat_ok and not key.startswith("filter["):
            problems.append(f"query parameter '{key}' must not be repeated")
            continue
        if spec.time_filters and (m := _TIME_KEY.fullmatch(key)) is not None \
                and m.group(1) in spec.time_filters:
            field, operator = m.group(1), m.group(2)
            if operator not in spec.time_filters[field]:
                problems.append(f"unsupported filter field '{key}'")
                continue
            bounds = []
            for part in value.split(","):
                try:
                    bounds.append(parse_time(part))
                except ValueError:
                    problems.append(f"invalid time {part.strip()!r} in '{key}': use a date "
                                    "(2021-10-28) or an RFC 3339 time (2021-10-28T10:00:00Z)")
            times.append((field, operator, tuple(bounds)))
        elif (m := _FILTER_KEY.fullmatch(key)) is not None:
            columns: list[str] = []
            for col in m.group(1).split("|"):
                if col == "*":
                    columns.extend(sorted(spec.filter_fields))
                elif col in spec.filter_fields:
                    columns.append(col)
                else:
                    problems.append(f"unsupported filter field 'filter[{col}]'")
            values, match_all = _split_values(value)
            filters.append(Filter(tuple(dict.fromkeys(columns)), values, match_all))
        elif (m := _FIELDS_KEY.fullmatch(key)) is not None:
            if m.group(1) != spec.name and m.group(1) not in spec.resource_aliases:
                problems.append(f'unsupported resource in fields: "{m.group(1)}"')
                continue
            chosen: list[str] = []
            for name in (n.strip() for n in value.split(",")):
                if name in spec.field_aliases:
                    chosen.append(spec.field_aliases[name])
                elif name in spec.fields:
                    chosen.append(name)
                else:
                    problems.append(f'unsupported field "{name}" for resource "{spec.name}"')
            fields = tuple(dict.fromkeys(chosen))
        elif key == _PAGE_LIMIT:
            n = _parse_int(value, "limit", problems)
            if n is not None and n > spec.page_max:
                problems.append(f"pagination limit too big ({n}) maximum is {spec.page_max}")
            elif n is not None and n < 1:
                problems.append("pagination limit must be positive")
            elif n is not None:
                limit = n
        elif key == _PAGE_OFFSET:
            n = _parse_int(value, "offset", problems)
            if n is not None and n < 0:
                problems.append("pagination offset must not be negative")
            elif n is not None:
                offset = n
        elif key not in extra_names:
            problems.append(f"unsupported query parameter '{key}'")

    if problems:
        unique = dict.fromkeys(problems)
        raise ApiError.many(400, [ErrorItem(title=p, code=ERR_CODE) for p in unique])
    return ListQuery(sort=sort, descending=descending, filters=tuple(filters), fields=fields,
                     limit=limit, offset=offset, times=tuple(times))


def parse_time(text: str) -> float:
    """A time given in a filter (``filter[timestamp][since]``, ``filter[started_at][until]``): a
    date (``2021-10-28``) or an RFC 3339 / ISO 8601 time; without an offset it is UTC. Seconds
    since the epoch; ValueError if it is neither."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def sort_key(value: Any) -> tuple[int, Any]:
    """A total order over mixed values: None, then numbers/booleans, then strings, then others."""
    if value is None:
        return (0, 0)
    if isinstance(value, (bool, int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value.casefold())
    return (3, string_form(value).casefold())


def apply_list_query(rows: Iterable[Mapping[str, Any]], query: ListQuery,
                     spec: ResourceSpec) -> tuple[list[dict[str, Any]], int]:
    """Filter, sort, page and trim ``rows``; returns the page and the count after filtering."""
    del spec  # the query is already validated against it; kept for a stable signature
    selected = [row for row in rows if all(f.matches_row(row) for f in query.filters)]
    total = len(selected)
    # Two stable sorts: id ascending first, so equal sort values stay in id order either way.
    selected.sort(key=lambda row: (sort_key(row.get("id")), string_form(row.get("id"))))
    selected.sort(key=lambda row: sort_key(row.get(query.sort)), reverse=query.descending)
    end = None if query.limit is None else query.offset + query.limit
    page = selected[query.offset:end]
    if query.fields is None:
        return [dict(row) for row in page], total
    wanted = frozenset(query.fields)
    return [{k: v for k, v in row.items() if k in wanted} for row in page], total
