"""Which clients a multi-client request targets (RPort's ``api_helper_clients.go``), from the
request body, the clients the server knows and the stored client groups.

A body targets clients in exactly one of three ways:

- ``client_ids`` and/or ``group_ids``: the listed clients in the given order (connected or
  not: running on a disconnected client is the caller's error to report), then the members
  of the groups that are not listed yet, by id;
- ``tags`` only: ``{"operator": "AND"|"OR", "tags": [...]}``; ``AND`` needs every tag, ``OR``
  any (the operator's case does not matter; without one, ``OR``). Tags compare exactly,
  case-sensitively;
- ``labels`` only: ``{"operator": ..., "labels": ["zone:EU", "env: prod1"]}``, each label
  ``"key:value"`` or ``"key: value"``; the key and the value compare exactly.

Tags and labels select connected and disconnected clients, by id. A key whose value is
``null`` counts as absent; ``[]`` counts as given (and selects nothing), as in RPort.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rport.core.plugin import ApiError, Client

from .groups import ClientGroup, client_values, quote

TARGET_KEYS = ("client_ids", "group_ids", "tags", "labels")
TARGETING_RULE = "use client_ids and/or group_ids, or tags only, or labels only"


def _bad(title: str, code: str, detail: str = "", status: int = 400) -> ApiError:
    return ApiError(status, title, code=code, detail=detail)


def _invalid(detail: str) -> ApiError:
    return _bad("Invalid JSON data.", "ERR_CODE_INVALID_JSON", detail)


def _str_list(body: Mapping[str, Any], key: str, where: str = "") -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f'"{where}{key}" must be a list of strings')
    return value


def _operator(spec: Mapping[str, Any], what: str) -> str:
    operator = spec.get("operator")
    if operator is None or operator == "":
        return "or"
    if not isinstance(operator, str) or operator.lower() not in ("and", "or"):
        raise _bad(f"Invalid {what} operator.", "ERR_CODE_INVALID_OPERATOR",
                   f'"{what}.operator" must be "AND" or "OR", got {quote(str(operator))}')
    return operator.lower()


def _object(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body[key]
    if not isinstance(value, dict):
        raise _invalid(f'"{key}" must be an object {{"operator": "AND"|"OR", "{key}": [...]}}')
    unknown = sorted(set(value) - {"operator", key})
    if unknown:
        raise _invalid(f'json: unknown field "{unknown[0]}" in "{key}"')
    return value


def parse_label(text: str) -> tuple[str, str]:
    """``"zone:EU"`` / ``"zone: EU"`` -> ``("zone", "EU")``: the key and value without the blanks
    around them (as the agent's ``--label`` option reads them)."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise _bad(f"Invalid label {quote(text)}.", "ERR_CODE_INVALID_LABEL",
                   'a label is "key: value"')
    return key.strip(), value.strip()


def by_tags(clients: Iterable[Client], tags: Sequence[str], operator: str) -> list[Client]:
    """Clients with every tag (``and``) or any tag (``or``), exact and case-sensitive, by id."""
    test = all if operator == "and" else any
    return sorted((c for c in clients if test(t in c.tags for t in tags)), key=lambda c: c.id)


def by_labels(clients: Iterable[Client], labels: Sequence[tuple[str, str]],
              operator: str) -> list[Client]:
    """Clients with every label (``and``) or any label (``or``), key and value exact, by id."""
    test = all if operator == "and" else any
    return sorted((c for c in clients if test(c.labels.get(k) == v for k, v in labels)),
                  key=lambda c: c.id)


def group_members(clients: Iterable[Client], groups: Sequence[ClientGroup]) -> list[Client]:
    """Clients that belong to any of ``groups``, by id."""
    found = []
    for client in clients:
        values = client_values(client)
        if any(group.matches(client, values) for group in groups):
            found.append(client)
    return sorted(found, key=lambda c: c.id)


def _at_least_one(found: list[Client]) -> list[Client]:
    if not found:
        raise _bad("at least 1 client should be specified", "ERR_CODE_NO_TARGETS")
    return found


def resolve_targets(body: Mapping[str, Any], clients: Iterable[Client],
                    groups: Mapping[str, ClientGroup],
                    matchable: Iterable[Client] | None = None) -> list[Client]:
    """The clients ``body`` targets, in order; raises :class:`ApiError` with RPort's messages:

    - 400 ``Missing targeting parameters.`` (none of the four keys);
    - 400 ``Multiple targeting parameters.`` (tags or labels with anything else);
    - 400 ``No tags specified.`` / ``No labels specified.``;
    - 400 ``Unknown group with id="g".``; 404 ``Client with id="x" not found.``;
    - 400 ``no active clients belong to the selected group(s)`` (groups only, all empty);
    - 400 ``at least 1 client should be specified`` (nothing selected);
    - 400 ``Invalid JSON data.`` for a key of the wrong type.

    ``matchable`` (default: ``clients``) are the clients tags, labels and groups may select: a
    non-admin's visible ones, so that guessing a tag never reveals a hidden client; a group
    with none of them is unknown to that caller. ``client_ids`` are looked up among ``clients``
    (the caller named them; the route then refuses hidden ones with its 403).
    """
    given = [key for key in TARGET_KEYS if body.get(key) is not None]
    if not given:
        raise _bad("Missing targeting parameters.", "ERR_CODE_MISSING_TARGETS",
                   f"specify the clients to target: {TARGETING_RULE}")
    if len(given) > 1 and ("tags" in given or "labels" in given):
        raise _bad("Multiple targeting parameters.", "ERR_CODE_MULTIPLE_TARGETS",
                   f"{', '.join(given)} given together: {TARGETING_RULE}")
    clients = list(clients)
    pool = clients if matchable is None else list(matchable)

    if given == ["tags"]:
        spec = _object(body, "tags")
        if spec.get("tags") is None or spec.get("tags") == []:
            raise _bad("No tags specified.", "ERR_CODE_NO_TAGS", "please specify tags in the tags list")
        tags = _str_list(spec, "tags", "tags.")
        return _at_least_one(by_tags(pool, tags, _operator(spec, "tags")))

    if given == ["labels"]:
        spec = _object(body, "labels")
        if spec.get("labels") is None or spec.get("labels") == []:
            raise _bad("No labels specified.", "ERR_CODE_NO_LABELS",
                       "please specify labels in the labels list")
        labels = [parse_label(text) for text in _str_list(spec, "labels", "labels.")]
        return _at_least_one(by_labels(pool, labels, _operator(spec, "labels")))

    client_ids = _str_list(body, "client_ids") if "client_ids" in given else []
    group_ids = _str_list(body, "group_ids") if "group_ids" in given else []
    chosen = []
    for group_id in group_ids:
        group = groups.get(group_id)
        if group is None or (matchable is not None and not group_members(pool, [group])):
            raise _bad(f"Unknown group with id={quote(group_id)}.", "ERR_CODE_UNKNOWN_GROUP")
        chosen.append(group)
    in_groups = group_members(pool, chosen) if chosen else []
    by_id = {c.id: c for c in clients}
    ordered: dict[str, Client] = {}
    for client_id in client_ids:
        client = by_id.get(client_id)
        if client is None:
            raise _bad(f"Client with id={quote(client_id)} not found.", "ERR_CODE_CLIENT_NOT_FOUND",
                       status=404)
        ordered.setdefault(client_id, client)
    if group_ids and not in_groups and not client_ids:
        raise _bad("no active clients belong to the selected group(s)", "ERR_CODE_NO_TARGETS",
                   f"groups: {', '.join(group_ids)}")
    for client in in_groups:
        ordered.setdefault(client.id, client)
    return _at_least_one(list(ordered.values()))
