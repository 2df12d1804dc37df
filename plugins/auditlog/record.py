"""From an AuditEvent to the rows of the audit log: secrets redacted, sizes bounded, the
address obfuscated when asked, one row per client."""

from __future__ import annotations

import ipaddress
import math
import json
import time
from typing import Any, Callable

SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "key", "credentials")
REDACTED = "<redacted>"
FIELDS = ("timestamp", "username", "remote_ip", "application", "action", "affected_id",
          "client_id", "client_hostname", "request", "response")
"""RPort's fields of an entry (AuditLog.yaml), in its order."""


_SECRET: dict[str, bool] = {}
"""is_secret's answers by key (the same few dozen keys come in every entry), at most
:data:`_SECRET_KEPT` of them (keys come from request bodies)."""
_SECRET_KEPT = 4096


def is_secret(key: str) -> bool:
    """Keys whose values are never recorded: ``password``, ``auth_password``, ``new_password``,
    ``jwt_secret``, ``token``, ``private_key``... (a suffix: ``token-lifetime`` is kept)."""
    known = _SECRET.get(key)
    if known is None:
        known = key.lower().replace("-", "_").endswith(SECRET_SUFFIXES)
        if len(_SECRET) < _SECRET_KEPT:
            _SECRET[key] = known
    return known


def redact(value: Any) -> Any:
    """``value`` with the values of secret keys replaced, at any depth."""
    return _clean(value, None, None)


def bounded(value: Any, max_chars: int, max_items: int | None = None) -> Any:
    """``value`` with every string longer than ``max_chars`` cut, saying by how much, and every
    list longer than ``max_items`` ending with a note of how many more items it had (and, as
    everything recorded, secrets redacted)."""
    return _clean(value, max_chars, max_items)


def _clean(value: Any, max_chars: int | None, max_items: int | None) -> Any:
    """Secrets redacted and long strings and lists cut, in one walk: an entry is made for every
    job that ends, a thousand at once in a fan-out."""
    if type(value) is str or isinstance(value, str):
        if max_chars is not None and len(value) > max_chars:
            return value[:max_chars] + f"... [{len(value) - max_chars} more characters]"
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret(k) and v not in (None, "")
                    else _clean(v, max_chars, max_items)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if max_items is not None and len(value) > max_items:
            return [*(_clean(v, max_chars, max_items) for v in value[:max_items]),
                    f"... [{len(value) - max_items} more items]"]
        return [_clean(v, max_chars, max_items) for v in value]
    return value


TEXT_FACTOR = 4
"""A recorded text is at most this many times max_value_chars (a job: its stdout, its stderr
and the rest)."""


def as_text(value: Any, max_chars: int, max_items: int | None = None) -> str:
    """The JSON text recorded for a request or response ("" for none): every string cut at
    ``max_chars``, and the whole at most ``TEXT_FACTOR`` times that (a value made of very many
    strings is recorded as a note saying so); lists longer than ``max_items`` are cut."""
    if value is None:
        return ""
    text = json.dumps(_clean(value, max_chars, max_items), ensure_ascii=False, default=str)
    if len(text) > TEXT_FACTOR * max_chars:
        return json.dumps({"truncated": f"{len(text)} characters, more than the "
                                        f"{TEXT_FACTOR * max_chars} recorded "
                                        "(plugins.auditlog.max_value_chars)"})
    return text


def obfuscate(address: str) -> str:
    """RPort's use_ip_obfuscation: an IPv4 address keeps its first three bytes
    (``192.0.2.x``); an IPv6 address keeps its /48 (``2001:db8:1::x``). Others unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return ".".join(str(ip).split(".")[:3]) + ".x"
    network = ipaddress.IPv6Network(f"{ip}/48", strict=False)
    return str(network.network_address).rstrip(":") + "::x"


def rows(event: Any, hostname_of: Callable[[str], str], *, obfuscate_ip: bool,
         max_chars: int, max_items: int | None = None) -> list[dict[str, Any]]:
    """The table rows of one AuditEvent: one per client, or one without a client."""
    remote_ip = obfuscate(event.remote_ip) if obfuscate_ip and event.remote_ip else event.remote_ip
    # whole microseconds, as the API shows them: a time read from an entry selects it again
    timestamp = math.floor(float(event.timestamp or time.time()) * 1e6) / 1e6
    base = {
        "timestamp": timestamp, "username": event.username or "",
        "remote_ip": remote_ip or "", "application": event.application, "action": event.action,
        "affected_id": event.affected_id or "",
        "request": as_text(event.request, max_chars, max_items),
        "response": as_text(event.response, max_chars, max_items),
    }
    return [{**base, "client_id": client_id, "client_hostname": hostname_of(client_id) if client_id else ""}
            for client_id in (event.client_ids or ("",))]


def timestamp_text(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, as the API's other times (``...T09:57:15.123456Z``)."""
    whole, micros = divmod(int(round(seconds * 1e6)), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"
