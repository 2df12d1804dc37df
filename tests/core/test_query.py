"""List options of the API list endpoints: sort, filter, fields, pagination (RPort-compatible)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import QueryParams

from rport.core.api.query import (
    ListQuery,
    ResourceSpec,
    apply_list_query,
    matches,
    parse_list_query,
)
from rport.core.errors import ApiError

CLIENT_FIELDS = ["id", "name", "os", "hostname", "num_cpus", "tags", "labels", "ipv4",
                 "version", "ext_ip_addresses", "connected"]

SPEC = ResourceSpec(
    name="clients",
    sort_fields=frozenset({"id", "name", "os", "hostname", "version"}),
    default_sort="id",
    filter_fields=frozenset({"id", "name", "os", "hostname", "num_cpus", "tags", "labels",
                             "ipv4", "version", "connected"}),
    fields=frozenset(CLIENT_FIELDS),
    field_aliases={"ip_addresses": "ext_ip_addresses"},
    page_default=50,
    page_max=500,
)

ROWS: list[dict[str, Any]] = [
    {"id": "c3", "name": "My Test VM", "os": "Linux", "hostname": "vm-123131",
     "num_cpus": 4, "tags": ["Linux", "Datacenter 1"], "labels": {"city": "Cologne"},
     "ipv4": ["192.168.1.3"], "version": "0.9.0", "ext_ip_addresses": ["1.2.3.4"],
     "connected": True},
    {"id": "c1", "name": "alpha", "os": "Windows", "hostname": "srv-1231",
     "num_cpus": 2, "tags": ["Windows"], "labels": {"city": "Berlin", "rack": "7"},
     "ipv4": ["10.0.0.1"], "version": "0.9.1", "ext_ip_addresses": [],
     "connected": False},
    {"id": "c2", "name": "Bravo", "os": "linux", "hostname": "office Berlin",
     "num_cpus": 8, "tags": ["Linux", "Office"], "labels": {}, "ipv4": ["10.0.0.2"],
     "version": "0.9.0", "ext_ip_addresses": ["5.6.7.8"], "connected": True},
    {"id": "c4", "name": "ALPHA", "os": "macOS", "hostname": "mac-lab",
     "num_cpus": 4, "tags": [], "labels": {"city": "Munich"}, "ipv4": [],
     "version": None, "ext_ip_addresses": [], "connected": False},
]


def run(query: str, spec: ResourceSpec = SPEC, **kw: Any) -> tuple[list[dict[str, Any]], int]:
    return apply_list_query(ROWS, parse_list_query(QueryParams(query), spec, **kw), spec)


def ids(query: str, spec: ResourceSpec = SPEC) -> list[str]:
    return [row["id"] for row in run(query, spec)[0]]


def errors(query: str, spec: ResourceSpec = SPEC, **kw: Any) -> list[str]:
    with pytest.raises(ApiError) as info:
        parse_list_query(QueryParams(query), spec, **kw)
    assert info.value.status == 400
    assert all(item.code == "ERR_CODE_BAD_QUERY_PARAM" for item in info.value.items)
    return [item.title for item in info.value.items]


# -- sort ---------------------------------------------------------------------------------------

def test_default_sort_is_by_id() -> None:
    assert ids("") == ["c1", "c2", "c3", "c4"]


def test_descending_sort_by_name_keeps_id_tie_break_ascending() -> None:
    assert ids("sort=-name") == ["c3", "c2", "c1", "c4"]


def test_sort_is_case_insensitive_with_id_tie_break() -> None:
    # "alpha" (c1) and "ALPHA" (c4) are equal ignoring case, so id decides; "Bravo" < "My Test VM".
    assert ids("sort=name") == ["c1", "c4", "c2", "c3"]
    assert ids("sort=os") == ["c2", "c3", "c4", "c1"]


def test_sort_puts_missing_values_first() -> None:
    assert ids("sort=version") == ["c4", "c2", "c3", "c1"]


def test_two_sort_params_or_a_comma_list_are_rejected() -> None:
    assert errors("sort=name&sort=id") == ["Only one sort field is supported for clients."]
    assert errors("sort=name,id") == ["Only one sort field is supported for clients."]


def test_unknown_sort_field_is_named() -> None:
    assert errors("sort=-num_cpus") == ["unsupported sort field 'num_cpus'"]


def test_parsed_query_fields() -> None:
    q = parse_list_query([("sort", "-name")], SPEC)
    assert q == ListQuery(sort="name", descending=True, limit=50, offset=0)


# -- filter -------------------------------------------------------------------------------------

def test_filter_single_value_is_case_insensitive() -> None:
    assert ids("filter[os]=LINUX") == ["c2", "c3"]


def test_filter_comma_list_is_or() -> None:
    assert ids("filter[os]=windows,macos") == ["c1", "c4"]


def test_filter_pipe_columns_match_any_column() -> None:
    assert ids("filter[name|hostname]=alpha,mac-lab") == ["c1", "c4"]
    assert ids("filter[os|tags]=Office") == ["c2"]


def test_filter_and_requires_all_values() -> None:
    assert ids("filter[tags]=and(Linux,Office)") == ["c2"]
    assert ids("filter[tags]=and(Linux,Windows)") == []


def test_filter_or_group_matches_any_value() -> None:
    assert ids("filter[tags]=or(Office,Windows)") == ["c1", "c2"]


def test_separate_filters_are_anded() -> None:
    assert ids("filter[os]=linux&filter[num_cpus]=4") == ["c3"]
    assert ids("filter[tags]=Linux&filter[tags]=Datacenter 1") == ["c3"]


def test_filter_star_column_means_any_filter_column() -> None:
    assert ids("filter[*]=cologne*") == []
    assert ids("filter[*]=*cologne") == ["c3"]
    assert ids("filter[*]=10.0.0.*") == ["c1", "c2"]


def test_wildcards() -> None:
    assert ids("filter[name]=My*VM") == ["c3"]
    assert ids("filter[hostname]=*Berlin") == ["c2"]
    assert ids("filter[ipv4]=192.168.*") == ["c3"]


def test_wildcard_is_anchored_and_literal_otherwise() -> None:
    assert ids("filter[hostname]=*123*31") == ["c3"]
    assert not matches("1231", "123*31")
    assert matches("12331", "123*31")
    assert matches("12331", "123*331") is False
    assert matches("12331", "1233*1")  # '*' may match the empty run
    assert not matches("10x0x0x1", "10.0.0.*")  # '.' is literal


def test_tags_array_element_match() -> None:
    assert ids("filter[tags]=datacenter 1") == ["c3"]
    assert ids("filter[tags]=Datacenter") == []


def test_labels_match_key_colon_value() -> None:
    assert ids("filter[labels]=city: Cologne") == ["c3"]
    assert ids("filter[labels]=city: *") == ["c1", "c3", "c4"]
    assert ids("filter[labels]=not_existing") == []


def test_numbers_and_booleans_match_their_string_form() -> None:
    assert ids("filter[num_cpus]=4") == ["c3", "c4"]
    assert ids("filter[connected]=TRUE") == ["c2", "c3"]
    assert matches(4, "4") and matches(False, "false")


def test_none_never_matches() -> None:
    assert ids("filter[version]=None") == []
    assert not matches(None, "*")
    assert not matches(None, "")


def test_unknown_filter_column() -> None:
    assert errors("filter[x]=1") == ["unsupported filter field 'filter[x]'"]
    assert errors("filter[name|x]=1") == ["unsupported filter field 'filter[x]'"]


# -- fields -------------------------------------------------------------------------------------

def test_fields_keep_row_order_not_request_order() -> None:
    page, _ = run("fields[clients]=name,id,num_cpus&filter[id]=c1")
    assert page == [{"id": "c1", "name": "alpha", "num_cpus": 2}]
    assert list(page[0]) == ["id", "name", "num_cpus"]


def test_fields_alias() -> None:
    page, _ = run("fields[clients]=id,ip_addresses&filter[id]=c2")
    assert page == [{"id": "c2", "ext_ip_addresses": ["5.6.7.8"]}]


def test_no_fields_param_returns_all_fields_unless_spec_has_defaults() -> None:
    page, _ = run("filter[id]=c1")
    assert page == [ROWS[1]] and page[0] is not ROWS[1]
    spec = ResourceSpec(name="clients", sort_fields={"id"}, default_sort="id",
                        filter_fields={"id"}, fields=CLIENT_FIELDS,
                        default_fields=("id", "name", "hostname"))
    page, _ = run("filter[id]=c1", spec)
    assert page == [{"id": "c1", "name": "alpha", "hostname": "srv-1231"}]


def test_fields_errors() -> None:
    assert errors("fields[users]=id") == ['unsupported resource in fields: "users"']
    assert errors("fields[clients]=id,secret") == [
        'unsupported field "secret" for resource "clients"']


# -- pagination ---------------------------------------------------------------------------------

def test_page_limit_offset_and_count() -> None:
    page, count = run("page[limit]=2&page[offset]=1")
    assert [r["id"] for r in page] == ["c2", "c3"] and count == 4
    page, count = run("filter[os]=linux&page[limit]=1")
    assert [r["id"] for r in page] == ["c2"] and count == 2
    page, count = run("page[offset]=10")
    assert page == [] and count == 4


def test_default_page_size_applies() -> None:
    small = ResourceSpec(name="clients", sort_fields={"id"}, default_sort="id",
                         filter_fields={"id"}, fields=CLIENT_FIELDS, page_default=3, page_max=3)
    page, count = run("", small)
    assert len(page) == 3 and count == 4


def test_paginate_by_default_false_returns_everything_until_limit_given() -> None:
    spec = ResourceSpec(name="clients", sort_fields={"id"}, default_sort="id",
                        filter_fields={"id"}, fields=CLIENT_FIELDS, page_default=1,
                        paginate_by_default=False)
    assert parse_list_query([], spec).limit is None
    assert ids("", spec) == ["c1", "c2", "c3", "c4"]
    assert ids("page[offset]=3", spec) == ["c4"]
    assert ids("page[limit]=2", spec) == ["c1", "c2"]


@pytest.mark.parametrize(("query", "message"), [
    ("page[limit]=501", "pagination limit too big (501) maximum is 500"),
    ("page[limit]=0", "pagination limit must be positive"),
    ("page[limit]=-3", "pagination limit must be positive"),
    ("page[limit]=ten", "pagination limit must be a number"),
    ("page[limit]=", "pagination limit must be a number"),
    ("page[offset]=-1", "pagination offset must not be negative"),
    ("page[offset]=1.5", "pagination offset must be a number"),
])
def test_pagination_errors(query: str, message: str) -> None:
    assert errors(query) == [message]


# -- other parameters ---------------------------------------------------------------------------

def test_unknown_parameter() -> None:
    assert errors("verbose=1") == ["unsupported query parameter 'verbose'"]
    assert errors("page[size]=1") == ["unsupported query parameter 'page[size]'"]


def test_extra_parameters_are_allowed_but_not_repeated_unless_allowed() -> None:
    q = parse_list_query(QueryParams("verbose=1&sort=name"), SPEC, extra=["verbose"])
    assert q.sort == "name"
    assert errors("verbose=1&verbose=2", extra=["verbose"]) == [
        "query parameter 'verbose' must not be repeated"]
    parse_list_query([("tag", "a"), ("tag", "b")], SPEC, extra=["tag"], repeatable=["tag"])
    assert errors("page[limit]=1&page[limit]=2") == [
        "query parameter 'page[limit]' must not be repeated"]


def test_several_problems_are_reported_together() -> None:
    assert errors("sort=bogus&filter[x]=1&fields[clients]=nope&page[limit]=0"
                  "&page[offset]=x&foo=bar") == [
        "unsupported sort field 'bogus'",
        "unsupported filter field 'filter[x]'",
        'unsupported field "nope" for resource "clients"',
        "pagination limit must be positive",
        "pagination offset must be a number",
        "unsupported query parameter 'foo'",
    ]


def test_accepts_plain_multi_items() -> None:
    q = parse_list_query([("filter[os]", "linux"), ("sort", "-id")], SPEC)
    assert [r["id"] for r in apply_list_query(ROWS, q, SPEC)[0]] == ["c3", "c2"]


def test_compiled_filters_match_as_matches_row() -> None:
    """``Filter.compile`` on the kept strings of a row (``forms``) decides exactly as
    ``matches_row`` on the row, whatever the values' types (GET /clients filters kept
    documents that way)."""
    from rport.core.api.query import Filter, forms

    values: list[Any] = [None, "", "Straße", "STRASSE", "ß", "a*b", "x\ny", 0, 7, 2.5, True, False,
                         [], ["Linux", None, 3, ["nested", {"k": "v"}]], {"city": "Köln", "n": None},
                         {"flag": True, "n": 1}, ("t", "u"), frozenset({"f"})]
    patterns = ["", "*", "straße", "strasse", "STRASSE", "ß", "a*b", "a\\*b", "*e", "x*", "x\ny",
                "0", "7", "2.5", "true", "FALSE", "linux", "3", "nested", "k: v", "city: köln",
                "city: *", "n: *", "flag: true", "n: 1", "t", "f", "*u*", "*ß*"]
    rows = [{"c1": a, "c2": b} for a in values for b in values[::3]]
    for columns in (("c1",), ("c1", "c2")):
        for match_all in (False, True):
            for i in range(len(patterns)):
                f = Filter(columns, tuple(patterns[i:i + 2]), match_all)
                test = f.compile()
                for row in rows:
                    assert test(lambda col: forms(row.get(col))) == f.matches_row(row), (f, row)
