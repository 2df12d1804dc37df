"""What nodes send each other over NATS: a JSON header and raw bytes, signed with the cluster's
secret (HMAC-SHA256), so that a node acts only on messages of the cluster's members, whatever
else may reach the NATS subjects."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any

MAC = hashlib.sha256().digest_size
_LEN = struct.Struct("!I")


class BadMessage(Exception):
    """Not signed with our secret, or malformed: dropped."""


def signing_key(secret: str) -> bytes:
    return hashlib.sha256(b"rport-cluster\0" + secret.encode("utf-8")).digest()


def pack(key: bytes, header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    payload = _LEN.pack(len(head)) + head + body
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


def unpack(key: bytes, data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < MAC + _LEN.size:
        raise BadMessage("too short")
    mac, payload = data[:MAC], data[MAC:]
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise BadMessage("bad signature (another cluster secret?)")
    (size,) = _LEN.unpack_from(payload)
    try:
        header = json.loads(payload[_LEN.size:_LEN.size + size])
    except ValueError as exc:
        raise BadMessage(f"bad header: {exc}") from None
    if not isinstance(header, dict):
        raise BadMessage("bad header")
    return header, payload[_LEN.size + size:]
