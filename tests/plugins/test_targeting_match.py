"""Unit tests of the targeting plugin's pure logic: the group matcher (RPort's TestMatchesOneOf
and TestValidateInputClientGroup*, ported), group membership over real Client objects, and the
multi-client target rules of select.py with their exact messages."""

from __future__ import annotations

from typing import Any

import pytest

from rport.core.plugin import ApiError, Client
from rport.plugins.targeting.groups import (
    PARAM_KEYS,
    ClientGroup,
    TagExpr,
    client_values,
    match_value,
    matches_one_of,
    members,
    parse_group,
)
from rport.plugins.targeting.select import (
    by_labels,
    by_tags,
    parse_label,
    resolve_targets,
)

UNSET = None

# (name, group params, client values, expected): RPort's server/cgroups/group_test.go
MATCHES_ONE_OF = [
    ("exact match", ["id-1"], ["id-1"], True),
    ("exact match, client param in upper case", ["id-1"], ["ID-1"], True),
    ("exact match, group param in upper case", ["Name-1"], ["name-1"], True),
    ("exact match but twice", ["123"], ["123123"], False),
    ("start and end shares char", ["123*31"], ["1231"], False),
    ("extra char at start", ["1123*31"], ["123431"], False),
    ("extra char at end", ["113*21"], ["1134121211"], False),
    ("group params contains exact client param", ["id-1", "id-2", "id-3"], ["id-2"], True),
    ("wildcard group param, min client param", ["id*"], ["id"], True),
    ("wildcard group param, short client param", ["id-*"], ["id-2"], True),
    ("wildcard group param in upper case, client in lower", ["ID-*"], ["id-2"], True),
    ("wildcard group param in lower case, client in upper", ["id-*"], ["Id-2"], True),
    ("wildcard group param, long client param", ["id-*"], ["id-12345678"], True),
    ("only wildcard", ["*"], ["id-12345678"], True),
    ("wildcards at start end", ["*-inside-*"], ["id-123-inside-45678"], True),
    ("wildcards, client value the same but without wildcards", ["*-*in***side**-*"], ["-inside-"], True),
    ("few wildcards in the middle", ["prefix*1**2*35"], ["prefix-id-1234567835"], True),
    ("few wildcards in the middle, no match", ["prefix*1**2*35"], ["prefix-id-1234567836"], False),
    ("few wildcards in all positions", ["*p**re***fix*1*2*3*"], ["preeeeeefix-id-111233456783"], True),
    ("group params does no contain client param", ["id-1", "id-2", "id-3"], ["id-4"], False),
    ("group params including wildcard does not contain client param",
     ["id-11", "id-22", "id-33", "id-1*", "id-2*"], ["id-3"], False),
    ("empty client param, nonempty group param", ["id-1"], [""], False),
    ("no client param, nonempty group param", ["tag-1"], [], False),
    ("no client param, no group param", [], [], True),
    ("no client param, empty group param", [""], [], False),
    ("empty client param, empty group param", [""], [""], True),
    ("nonempty client param, empty group param", [""], ["id-1"], False),
    ("nonempty client param, empty group params", ["", ""], ["id-1"], False),
    ("empty client param, empty group params", ["", ""], ["tag-1", ""], True),
    ("no client param, empty group params", ["", ""], [], False),
    ("empty client param, no group param", [], [""], False),
    ("empty client param, unset group param", UNSET, [""], True),
    ("nonempty client param, unset group param", UNSET, ["lala"], True),
    ("nonempty client param, no group param", [], ["id-1"], False),
    ("plural client param, one match", ["tag-a", "tag-2"], ["tag-1", "tag-2", "tag-3"], True),
    ("plural client param, no match", ["tag-a", "tag-b", "tag-c"], ["tag-1", "tag-2", "tag-3"], False),
    ("plural client param, wildcard", ["192.168.178.*", "10.10.10.*"], ["192.168.178.2", "127.0.0.1"], True),
    ("plural client param, few wildcards", ["tag-1*", "tag-2*", "tag-c"], ["tag-1", "tag-22", "tag-3"], True),
    ("no client param, plural group params", ["tag-1*", "tag-2*", "tag-c"], [], False),
    ("plural client param, no group params", [], ["tag-1", "tag-2", "tag-3"], False),
    ("plural client param, unset group params", UNSET, ["tag-1", "tag-2", "tag-3"], True),
    ("client param with no values, unset group params", UNSET, [], True),
    ("client param with no values, group param with empty value", [""], [], False),
    ("client param with no values, group param with nonempty value", ["123"], [], False),
    # Ours, beyond RPort's table: the no-overlap rule from both ends, and literal characters.
    ("pieces must not overlap at the end", ["ab*b"], ["ab"], False),
    ("pieces must not overlap in the middle", ["a*ba*a"], ["aba"], False),
    ("pieces in order", ["a*b*c"], ["a-c-b-c"], True),
    ("pieces out of order", ["a*c*b"], ["a-b-c"], False),
    ("regex characters are literal", ["10.0.0.?"], ["10.0.0.1"], False),
    ("dots are literal", ["10.0.0.1"], ["10x0x0x1"], False),
]


@pytest.mark.parametrize(("patterns", "values", "expected"),
                         [case[1:] for case in MATCHES_ONE_OF], ids=[case[0] for case in MATCHES_ONE_OF])
def test_matches_one_of(patterns: list[str] | None, values: list[str], expected: bool) -> None:
    assert matches_one_of(patterns, values) is expected


def test_match_value_is_case_insensitive_both_ways() -> None:
    assert match_value("LINUX", "linux") and match_value("linux", "Linux")
    assert match_value("*X64", "Linux-x64")
    assert not match_value("linux", "linux ")


TAG_EXPRESSIONS = [
    ("and: all present", TagExpr("and", ("linux", "db")), ["Linux", "DB", "eu"], True),
    ("and: one missing", TagExpr("and", ("linux", "db")), ["Linux", "eu"], False),
    ("and: wildcards", TagExpr("and", ("lin*", "*b")), ["linux", "db"], True),
    ("and: every pattern needs a matching tag", TagExpr("and", ("a*", "*z")),
     ["ab"], False),
    ("and: one tag may satisfy two patterns", TagExpr("and", ("a*", "*b")), ["ab"], True),
    ("and: no tags", TagExpr("and", ("linux",)), [], False),
    ("or: any present", TagExpr("or", ("windows", "db")), ["linux", "db"], True),
    ("or: none present", TagExpr("or", ("windows", "mac")), ["linux"], False),
    ("or: no tags", TagExpr("or", ("linux",)), [], False),
]


@pytest.mark.parametrize(("expr", "tags", "expected"), [c[1:] for c in TAG_EXPRESSIONS],
                         ids=[c[0] for c in TAG_EXPRESSIONS])
def test_tag_expressions(expr: TagExpr, tags: list[str], expected: bool) -> None:
    assert expr.matches(tags) is expected


# -- membership over real clients ------------------------------------------------------------


def client(cid: str, **kwargs: Any) -> Client:
    facts = {"os": "Linux 6.1", "os_arch": "amd64", "os_family": "debian", "os_kernel": "linux",
             "hostname": f"{cid}.example.com", "ipv4": ["192.168.178.2"], "ipv6": [],
             **kwargs.pop("facts", {})}
    return Client(id=cid, facts=facts, **kwargs)


ALPHA = client("alpha", name="Web Server 1", tags=["Linux", "web"], labels={"zone": "EU"},
               version="0.9.12", address="10.1.2.3", auth_id="user1")
BETA = client("beta", name="DB Server", tags=["Windows"], labels={"zone": "US", "env": "prod1"},
              facts={"os_kernel": "windows", "ipv4": ["10.10.10.7"], "ipv6": ["fe80::1"]},
              version="0.9.12", address="10.1.2.4", auth_id="user2")
GAMMA = client("gamma", name="", tags=[], labels={}, version="1.0.0", auth_id="user1")
CLIENTS = [GAMMA, BETA, ALPHA]  # not in id order on purpose


def group(params: dict[str, Any], gid: str = "g") -> ClientGroup:
    return parse_group({"id": gid, "params": params})


def member_ids(params: dict[str, Any]) -> list[str]:
    return [c.id for c in members(group(params), CLIENTS)]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, []),  # no params: nothing
    ({key: None for key in PARAM_KEYS}, []),  # all null: the same as no params
    ({"client_id": ["alpha", "GAMMA"]}, ["alpha", "gamma"]),
    ({"client_id": ["*"]}, ["alpha", "beta", "gamma"]),
    ({"name": ["web*"]}, ["alpha"]),
    ({"name": ["*server*"]}, ["alpha", "beta"]),
    ({"name": [""]}, ["gamma"]),  # an empty name is a value...
    ({"name": []}, []),  # ...so [] never matches a one-value attribute
    ({"tag": []}, ["gamma"]),  # [] matches the client without tags
    ({"tag": ["linux"]}, ["alpha"]),  # case-insensitive in groups (RPort)
    ({"tag": {"and": ["linux", "web"]}}, ["alpha"]),
    ({"tag": {"AND": ["linux", "windows"]}}, []),
    ({"tag": {"Or": ["linux", "windows"]}}, ["alpha", "beta"]),
    ({"ipv4": ["192.168.178.*", "10.10.10.*"]}, ["alpha", "beta", "gamma"]),
    ({"ipv6": []}, ["alpha", "gamma"]),
    ({"ipv6": ["fe80::*"]}, ["beta"]),
    ({"os_kernel": ["linux"], "tag": ["web"]}, ["alpha"]),  # keys AND
    ({"os_kernel": ["linux"], "tag": ["windows"]}, []),
    ({"version": ["0.9.*"]}, ["alpha", "beta"]),
    ({"address": ["10.1.2.4"]}, ["beta"]),
    ({"client_auth_id": ["user1"]}, ["alpha", "gamma"]),
    ({"hostname": ["*.example.com"]}, ["alpha", "beta", "gamma"]),
    ({"os": ["linux*"], "os_arch": ["AMD64"], "os_family": ["debian"]}, ["alpha", "beta", "gamma"]),
    ({"connection_state": ["disconnected"]}, ["alpha", "beta", "gamma"]),
    ({"connection_state": ["connected"]}, []),
    ({"labels": ["zone: EU"]}, ["alpha"]),
    ({"labels": ["zone:eu"]}, ["alpha"]),  # "key:value" too, case-insensitive as every param
    ({"labels": ["zone:*"]}, ["alpha", "beta"]),
    ({"labels": ["env: prod1", "zone: EU"]}, ["alpha", "beta"]),
    ({"labels": []}, ["gamma"]),
])
def test_membership(params: dict[str, Any], expected: list[str]) -> None:
    assert member_ids(params) == expected


def test_client_values_follow_the_client_document() -> None:
    values = client_values(BETA)
    assert values["client_id"] == ["beta"]
    assert values["tag"] == ["Windows"]
    assert values["labels"] == ["zone: US", "env: prod1"]
    assert values["ipv6"] == ["fe80::1"]
    assert values["connection_state"] == ["disconnected"]
    assert values["client_auth_id"] == ["user2"]
    # A fact the agent did not report has the document's default, not a missing key.
    assert client_values(Client(id="bare"))["os"] == [Client(id="bare").document()["os"]]


# -- validation (RPort's TestValidateInputClientGroup, plus ours) ---------------------------


def problems(body: Any) -> list[tuple[str, str]]:
    with pytest.raises(ApiError) as info:
        parse_group(body)
    assert info.value.status == 400
    return [(item.title, item.detail) for item in info.value.items]


def invalid(*details: str) -> list[tuple[str, str]]:
    return [("Invalid client group.", d) for d in details]


@pytest.mark.parametrize("gid", ["g1", "Group_1-x", "*", "a" * 30, "ABC*-_09"])
def test_valid_ids(gid: str) -> None:
    assert parse_group({"id": gid}).id == gid


@pytest.mark.parametrize(("body", "expected"), [
    ({"id": ""}, invalid("group ID cannot be empty")),
    ({"id": "   "}, invalid("group ID cannot be empty")),
    ({}, invalid("group ID cannot be empty")),
    ({"id": "a" * 31}, invalid("invalid group ID: max length 30, got 31")),
    ({"id": "a b"}, invalid('invalid group ID "a b": can contain only "A-Za-z0-9_-*"')),
    ({"id": "g.1"}, invalid('invalid group ID "g.1": can contain only "A-Za-z0-9_-*"')),
    ({"id": "x" * 31 + "!"}, invalid("invalid group ID: max length 30, got 32",
                                     f'invalid group ID "{"x" * 31}!": can contain only "A-Za-z0-9_-*"')),
    ({"id": 5}, invalid('"id" must be a string')),
    ({"id": "g", "params": {"tag": {"xor": ["a"]}}},
     invalid("error, only and/or is allowed for tags group definitions")),
    ({"id": "g", "params": {"tag": "linux"}}, invalid("error parsing tags group definitions")),
    ({"id": "g", "params": {"tag": {"and": "linux"}}}, invalid("error parsing tags group definitions")),
    ({"id": "g", "params": {"tag": {"and": ["a"], "or": ["b"]}}},
     invalid("error parsing tags group definitions")),
    ({"id": "g", "params": {"tag": [1, 2]}}, invalid("error parsing tags group definitions")),
    ({"id": "g", "params": {"tag": {"and": []}}},
     invalid("error parsing tags group definitions: the 'and' list is empty")),
    ({"id": "g", "params": {"tags": ["linux"]}},
     invalid('unsupported params key "tags" (did you mean "tag"?); supported keys: '
             + ", ".join(PARAM_KEYS))),
    ({"id": "g", "params": {"color": ["red"]}},
     invalid('unsupported params key "color"; supported keys: ' + ", ".join(PARAM_KEYS))),
    ({"id": "g", "params": {"name": "web"}}, invalid('params "name" must be a list of strings')),
    # a label pattern names its key, as in POST /commands (else the group matches nothing)
    ({"id": "g", "params": {"labels": ["zone"]}}, invalid('params "labels": "zone" is not "key: value"')),
    ({"id": "g", "params": {"labels": [": EU"]}}, invalid('params "labels": ": EU" is not "key: value"')),
    ({"id": "g", "params": ["name"]}, invalid('"params" must be an object')),
    ({"id": "g", "description": 1}, invalid('"description" must be a string')),
    ({"id": "g", "allowed_user_groups": "x"}, invalid('"allowed_user_groups" must be a list of strings')),
    # Every problem is reported, one item each.
    ({"id": "", "params": {"os": 1, "tag": {"not": ["a"]}}},
     invalid("group ID cannot be empty", 'params "os" must be a list of strings',
             "error, only and/or is allowed for tags group definitions")),
    # Unknown top-level fields and non-objects are JSON errors, as RPort's strict decoder.
    ({"id": "g", "colour": "red"}, [("Invalid JSON data.", 'json: unknown field "colour"')]),
    (["g"], [("Invalid JSON data.", "the body must be a JSON object")]),
])
def test_invalid_groups(body: Any, expected: list[tuple[str, str]]) -> None:
    assert problems(body) == expected


def test_error_codes_are_always_set() -> None:
    for body in ({"id": ""}, {"id": "g", "x": 1}):
        with pytest.raises(ApiError) as info:
            parse_group(body)
        assert all(item.code for item in info.value.items)


def test_group_json_round_trip() -> None:
    body = {"id": "g", "description": "d", "allowed_user_groups": ["ops"],
            "params": {"tag": {"AND": ["a", "b"]}, "name": ["x*"], "os": None, "labels": ["k: v"]}}
    grp = parse_group(body)
    assert grp.params_json() == {**{k: None for k in PARAM_KEYS}, "tag": {"and": ["a", "b"]},
                                 "name": ["x*"], "labels": ["k: v"]}
    assert parse_group(grp.to_record()) == grp
    # A GET result, computed fields included, can be PUT back.
    doc = {**grp.to_record(), "params": grp.params_json(), "client_ids": ["a"], "num_clients": 1,
           "num_clients_connected": 0}
    assert parse_group(doc) == grp


# -- target selection (select.py) ----------------------------------------------------------

GROUPS = {
    "linux": group({"os_kernel": ["linux"]}, "linux"),
    "web": group({"tag": ["web"]}, "web"),
    "nobody": group({"client_id": ["nobody"]}, "nobody"),
}


def targets(body: dict[str, Any]) -> list[str]:
    return [c.id for c in resolve_targets(body, CLIENTS, GROUPS)]


def refused(body: dict[str, Any]) -> tuple[int, str, str, str]:
    with pytest.raises(ApiError) as info:
        resolve_targets(body, CLIENTS, GROUPS)
    item = info.value.items[0]
    assert len(info.value.items) == 1 and item.code
    return info.value.status, item.title, item.code, item.detail


RULE = "use client_ids and/or group_ids, or tags only, or labels only"


@pytest.mark.parametrize(("body", "expected"), [
    ({"client_ids": ["beta", "alpha"]}, ["beta", "alpha"]),  # as given
    ({"client_ids": ["beta", "alpha", "beta"]}, ["beta", "alpha"]),  # once each
    ({"group_ids": ["linux"]}, ["alpha", "gamma"]),  # members by id
    ({"group_ids": ["web", "linux"]}, ["alpha", "gamma"]),  # deduplicated
    ({"client_ids": ["gamma"], "group_ids": ["linux"]}, ["gamma", "alpha"]),  # ids first
    ({"client_ids": ["beta"], "group_ids": ["nobody"]}, ["beta"]),  # empty group is fine with ids
    ({"client_ids": ["beta"], "tags": None, "labels": None}, ["beta"]),  # null is absent
    ({"tags": {"operator": "OR", "tags": ["Linux", "Windows"]}}, ["alpha", "beta"]),
    ({"tags": {"operator": "and", "tags": ["Linux", "web"]}}, ["alpha"]),
    ({"tags": {"operator": "AnD", "tags": ["Linux", "Windows"]}}, None),
    ({"tags": {"tags": ["web", "Windows"]}}, ["alpha", "beta"]),  # no operator: OR
    ({"tags": {"operator": "OR", "tags": ["linux"]}}, None),  # tags are case-sensitive
    ({"labels": {"operator": "OR", "labels": ["zone:EU", "env: prod1"]}}, ["alpha", "beta"]),
    ({"labels": {"operator": "AND", "labels": ["zone:US", "env:prod1"]}}, ["beta"]),
    ({"labels": {"operator": "AND", "labels": ["zone:EU", "env:prod1"]}}, None),
    ({"labels": {"operator": "OR", "labels": ["zone:eu"]}}, None),  # labels are case-sensitive
    ({"labels": {"operator": "OR", "labels": ["zone"]}}, "label"),
])
def test_resolve_targets(body: dict[str, Any], expected: list[str] | str | None) -> None:
    if expected is None:
        assert refused(body) == (400, "at least 1 client should be specified", "ERR_CODE_NO_TARGETS", "")
    elif expected == "label":
        assert refused(body)[:2] == (400, 'Invalid label "zone".')
    else:
        assert targets(body) == expected


@pytest.mark.parametrize(("body", "status", "title"), [
    ({}, 400, "Missing targeting parameters."),
    ({"client_ids": None, "group_ids": None}, 400, "Missing targeting parameters."),
    ({"client_ids": ["alpha"], "tags": {"tags": ["Linux"]}}, 400, "Multiple targeting parameters."),
    ({"group_ids": ["linux"], "tags": {"tags": ["Linux"]}}, 400, "Multiple targeting parameters."),
    ({"client_ids": [], "tags": {"tags": ["Linux"]}}, 400, "Multiple targeting parameters."),
    ({"labels": {"labels": ["a:b"]}, "tags": {"tags": ["Linux"]}}, 400, "Multiple targeting parameters."),
    ({"client_ids": ["alpha"], "labels": {"labels": ["a:b"]}}, 400, "Multiple targeting parameters."),
    ({"tags": {"operator": "OR", "tags": []}}, 400, "No tags specified."),
    ({"tags": {"operator": "OR"}}, 400, "No tags specified."),
    ({"labels": {"operator": "OR", "labels": []}}, 400, "No labels specified."),
    ({"group_ids": ["nope"]}, 400, 'Unknown group with id="nope".'),
    ({"client_ids": ["nope"], "group_ids": ["nope"]}, 400, 'Unknown group with id="nope".'),
    ({"client_ids": ["alpha", "nope"]}, 404, 'Client with id="nope" not found.'),
    ({"group_ids": ["nobody"]}, 400, "no active clients belong to the selected group(s)"),
    ({"client_ids": []}, 400, "at least 1 client should be specified"),
    ({"client_ids": [], "group_ids": []}, 400, "at least 1 client should be specified"),
    ({"tags": {"operator": "XOR", "tags": ["Linux"]}}, 400, "Invalid tags operator."),
    ({"labels": {"operator": "NOT", "labels": ["a:b"]}}, 400, "Invalid labels operator."),
    ({"client_ids": "alpha"}, 400, "Invalid JSON data."),
    ({"group_ids": [1]}, 400, "Invalid JSON data."),
    ({"tags": ["Linux"]}, 400, "Invalid JSON data."),
    ({"tags": {"tags": "Linux"}}, 400, "Invalid JSON data."),
])
def test_resolve_targets_errors(body: dict[str, Any], status: int, title: str) -> None:
    assert refused(body)[:2] == (status, title)


def test_targeting_error_details_name_the_rule() -> None:
    assert refused({})[3] == f"specify the clients to target: {RULE}"
    assert refused({"client_ids": ["a"], "tags": {"tags": ["x"]}})[3] == f"client_ids, tags given together: {RULE}"
    assert refused({"tags": {"tags": []}})[3] == "please specify tags in the tags list"
    assert refused({"tags": {"operator": "xor", "tags": ["x"]}})[3] == \
        '"tags.operator" must be "AND" or "OR", got "xor"'


def test_tags_and_labels_helpers() -> None:
    assert parse_label("zone:EU") == parse_label("zone: EU") == parse_label(" zone :  EU ") == ("zone", "EU")
    assert parse_label("url: http://x:80") == ("url", "http://x:80")
    assert [c.id for c in by_tags(CLIENTS, ["Linux"], "or")] == ["alpha"]
    assert [c.id for c in by_tags(CLIENTS, [], "and")] == ["alpha", "beta", "gamma"]
    assert [c.id for c in by_labels(CLIENTS, [("zone", "US")], "and")] == ["beta"]
