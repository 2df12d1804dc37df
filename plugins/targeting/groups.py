"""Client groups: the model, the validation of a group body with RPort's messages, and
membership (RPort's ``server/cgroups``).

A group is a set of *params*: each key names a client attribute and lists patterns for it.

- A group without params matches no client.
- Every key that is set must match (AND); within a key, any pattern may match (OR). For a list
  attribute (``ipv4``, ``ipv6``, ``tag``, ``labels``) any element may match.
- A key set to ``[]`` matches only a client with no value at all for it (no tags, no IPv6
  addresses); a one-value attribute such as ``name`` always has a value, so ``[]`` never
  matches it (use ``[""]`` for an empty name).
- A pattern matches a value case-insensitively; ``*`` stands for any run of characters, and the
  pieces between stars must appear in order without overlapping (``123*31`` does not match
  ``1231``).
- ``tag`` may also be ``{"and": [...]}`` (every pattern matches some tag of the client) or
  ``{"or": [...]}`` (any pattern matches some tag). The operator's case does not matter (RPort
  accepts ``AND`` but then never matches it).
- ``labels`` patterns are ``"key: value"`` (or ``"key:value"``) strings matched against the
  client's labels written as ``"key: value"``.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from rport.core.plugin import ApiError, Client, ErrorItem, matches

PARAM_KEYS = (
    "client_id", "name", "os", "os_arch", "os_family", "os_kernel", "hostname", "ipv4", "ipv6",
    "tag", "version", "address", "client_auth_id", "connection_state", "labels",
)
"""The keys of ``params``, in the order of RPort's JSON (``labels`` is ours: RPort's docs show it)."""

READ_ONLY_FIELDS = ("client_ids", "num_clients", "num_clients_connected")
"""Computed fields of a group's JSON: accepted in a body (a GET result can be PUT back) and
ignored."""

ID_MAX_LENGTH = 30
VALID_ID_CHARS = "A-Za-z0-9_-*"
_VALID_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-*")

INVALID_GROUP = "Invalid client group."
INVALID_JSON = "Invalid JSON data."
CODE_INVALID_GROUP = "ERR_CODE_INVALID_CLIENT_GROUP"
CODE_INVALID_JSON = "ERR_CODE_INVALID_JSON"

TAG_OPERATOR_ERROR = "error, only and/or is allowed for tags group definitions"
TAG_PARSE_ERROR = "error parsing tags group definitions"


def quote(text: str) -> str:
    """A string in double quotes, as Go's ``%q`` writes it in RPort's messages."""
    return json.dumps(text, ensure_ascii=False)


# -- the model ---------------------------------------------------------------------------------


@attrs.frozen
class TagExpr:
    """``{"and": [...]}`` or ``{"or": [...]}`` as the value of the ``tag`` param."""

    operator: str  # "and" | "or"
    patterns: tuple[str, ...]

    def matches(self, tags: Sequence[str]) -> bool:
        test = all if self.operator == "and" else any
        return test(any(match_value(p, t) for t in tags) for p in self.patterns)

    def to_json(self) -> dict[str, list[str]]:
        return {self.operator: list(self.patterns)}


Param = tuple[str, ...] | TagExpr


def _readonly(value: Mapping[str, Param]) -> Mapping[str, Param]:
    return types.MappingProxyType({k: value[k] for k in PARAM_KEYS if k in value})


@attrs.frozen
class ClientGroup:
    """A stored group. ``params`` holds only the keys that are set (a ``None`` in the JSON is
    the same as an absent key)."""

    id: str
    description: str = ""
    params: Mapping[str, Param] = attrs.field(factory=dict, converter=_readonly, hash=False)
    allowed_user_groups: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def matches(self, client: Client, values: Mapping[str, Sequence[str]] | None = None) -> bool:
        """Whether ``client`` belongs to this group; ``values`` (from :func:`client_values`)
        saves recomputing them when one client is tested against many groups."""
        if not self.params:
            return False
        values = client_values(client) if values is None else values
        for key, param in self.params.items():
            if isinstance(param, TagExpr):
                if not param.matches(values["tag"]):
                    return False
            elif key == "labels":
                if not matches_one_of([_label_pattern(p) for p in param], values[key]):
                    return False
            elif not matches_one_of(param, values[key]):
                return False
        return True

    def params_json(self, *, all_keys: bool = True) -> dict[str, Any]:
        """``params`` as RPort writes it: every key, ``null`` when unset (or only the set keys)."""
        out: dict[str, Any] = {}
        for key in PARAM_KEYS:
            param = self.params.get(key)
            if param is None:
                if all_keys:
                    out[key] = None
            else:
                out[key] = param.to_json() if isinstance(param, TagExpr) else list(param)
        return out

    def to_record(self) -> dict[str, Any]:
        """What the store keeps (and :func:`parse_group` reads back)."""
        return {"id": self.id, "description": self.description,
                "params": self.params_json(all_keys=False),
                "allowed_user_groups": list(self.allowed_user_groups)}


# -- matching ----------------------------------------------------------------------------------


def match_value(pattern: str, value: str) -> bool:
    """One pattern against one value: case-insensitive equality, or with ``*`` a wildcard
    anchored at both ends whose pieces appear in order without overlapping."""
    return matches(value, pattern)


def matches_one_of(patterns: Sequence[str] | None, values: Sequence[str]) -> bool:
    """RPort's ``ParamValues.MatchesOneOf``: an unset param (None) matches anything; ``[]``
    matches only when there are no values; otherwise any pattern must match any value."""
    if patterns is None:
        return True
    if not patterns:
        return not values
    return any(match_value(p, v) for p in patterns for v in values)


def _label_pattern(pattern: str) -> str:
    """``"zone:EU"`` and ``"zone: EU"`` both as ``"zone: EU"``, the form labels are matched in."""
    key, sep, value = pattern.partition(":")
    return f"{key.strip()}: {value.strip()}" if sep else pattern


def client_values(client: Client) -> dict[str, list[str]]:
    """The values of each param key for one client, as strings (one-value attributes are lists
    of one). Taken from the client's API document, so groups see what ``GET /clients`` shows."""
    doc = client.document()

    def one(key: str) -> list[str]:
        value = doc.get(key)
        return ["" if value is None else str(value)]

    def many(key: str) -> list[str]:
        value = doc.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    return {
        "client_id": [client.id],
        **{key: one(key) for key in ("name", "os", "os_arch", "os_family", "os_kernel",
                                     "hostname", "version", "address", "client_auth_id",
                                     "connection_state")},
        "ipv4": many("ipv4"),
        "ipv6": many("ipv6"),
        "tag": many("tags"),
        "labels": [f"{k}: {v}" for k, v in (doc.get("labels") or {}).items()],
    }


def members(group: ClientGroup, clients: Iterable[Client]) -> list[Client]:
    """The clients of ``group``, by id."""
    return sorted((c for c in clients if group.matches(c)), key=lambda c: c.id)


# -- validation --------------------------------------------------------------------------------


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _parse_tag(value: Any, problems: list[str]) -> Param | None:
    if value is None:
        return None
    if _is_str_list(value):
        return tuple(value)
    if isinstance(value, dict):
        if len(value) != 1:
            problems.append(TAG_PARSE_ERROR)
            return None
        ((operator, patterns),) = value.items()
        if operator.lower() not in ("and", "or"):
            problems.append(TAG_OPERATOR_ERROR)
            return None
        if not _is_str_list(patterns):
            problems.append(TAG_PARSE_ERROR)
            return None
        if not patterns:
            problems.append(f"{TAG_PARSE_ERROR}: the {operator.lower()!r} list is empty")
            return None
        return TagExpr(operator.lower(), tuple(patterns))
    problems.append(TAG_PARSE_ERROR)
    return None


def _parse_params(raw: Any, problems: list[str]) -> dict[str, Param]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append('"params" must be an object')
        return {}
    params: dict[str, Param] = {}
    for key, value in raw.items():
        if key not in PARAM_KEYS:
            hint = ' (did you mean "tag"?)' if key == "tags" else ""
            problems.append(f"unsupported params key {quote(key)}{hint}; supported keys: "
                            + ", ".join(PARAM_KEYS))
        elif key == "tag":
            tag = _parse_tag(value, problems)
            if tag is not None:
                params[key] = tag
        elif value is None:
            continue
        elif _is_str_list(value):
            if key == "labels":
                bad = [p for p in value if ":" not in p or not p.partition(":")[0].strip()]
                if bad:  # as POST /commands: a label pattern names its key
                    problems.append(f'params "labels": {quote(bad[0])} is not "key: value"')
                    continue
            params[key] = tuple(value)
        else:
            problems.append(f"params {quote(key)} must be a list of strings")
    return params


def validate_id(group_id: str) -> list[str]:
    """RPort's checks of a group ID, with its messages."""
    if not group_id.strip():
        return ["group ID cannot be empty"]
    problems = []
    length = len(group_id.encode())
    if length > ID_MAX_LENGTH:
        problems.append(f"invalid group ID: max length {ID_MAX_LENGTH}, got {length}")
    if not set(group_id) <= _VALID_ID:
        problems.append(f"invalid group ID {quote(group_id)}: can contain only {quote(VALID_ID_CHARS)}")
    return problems


def parse_group(body: Any) -> ClientGroup:
    """Validate a group body (POST or PUT) and build the group.

    Raises a 400 :class:`ApiError`: ``Invalid JSON data.`` for a body that is not an object or
    has unknown fields (as RPort's strict JSON decoding), otherwise ``Invalid client group.``
    with one item per problem, the problem in ``detail``.
    """
    if not isinstance(body, dict):
        raise ApiError(400, INVALID_JSON, code=CODE_INVALID_JSON,
                       detail="the body must be a JSON object")
    known = {"id", "description", "params", "allowed_user_groups", *READ_ONLY_FIELDS}
    unknown = [key for key in body if key not in known]
    if unknown:
        raise ApiError(400, INVALID_JSON, code=CODE_INVALID_JSON,
                       detail=f"json: unknown field {quote(unknown[0])}")
    problems: list[str] = []
    group_id = body.get("id")
    if group_id is None:
        group_id = ""
    if not isinstance(group_id, str):
        problems.append('"id" must be a string')
        group_id = ""
    else:
        problems += validate_id(group_id)
    description = body.get("description")
    if description is None:
        description = ""
    elif not isinstance(description, str):
        problems.append('"description" must be a string')
    params = _parse_params(body.get("params"), problems)
    allowed = body.get("allowed_user_groups")
    if allowed is None:
        allowed = []
    elif not _is_str_list(allowed):
        problems.append('"allowed_user_groups" must be a list of strings')
        allowed = []
    if problems:
        raise ApiError.many(400, [ErrorItem(INVALID_GROUP, code=CODE_INVALID_GROUP, detail=p)
                                  for p in problems])
    return ClientGroup(id=group_id, description=description, params=params,
                       allowed_user_groups=allowed)
