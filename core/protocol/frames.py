"""Binary frames of the agent link.

One WebSocket binary message carries one frame: a 1-byte type, a 4-byte big-endian id (request
id or stream id) and a payload. Control payloads are JSON; DATA payloads are raw bytes; WINDOW
carries a 4-byte credit increment. Anything else on the wire is a protocol violation.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

from ..session import ProtocolViolation

HEADER = struct.Struct("!BI")
CREDIT = struct.Struct("!I")


class T(enum.IntEnum):
    HELLO = 0x01      # agent -> server, first frame: protocol versions, credentials, facts
    WELCOME = 0x02    # server -> agent: accepted, chosen protocol version
    REFUSED = 0x03    # server -> agent: refused, with the reason; the server then closes
    REQUEST = 0x10    # {"name": str, "body": any}
    RESPONSE = 0x11   # {"ok": bool, "body": any, "error": str}
    OPEN = 0x20       # {"kind": str, "meta": {...}, "window": int}
    OPEN_OK = 0x21    # {"window": int}
    OPEN_FAIL = 0x22  # {"error": str}
    DATA = 0x23       # raw bytes
    WINDOW = 0x24     # u32 credit increment
    EOF = 0x25        # half-close, no payload
    RESET = 0x26      # utf-8 reason; aborts the stream both ways


_TYPES = {int(t): t for t in T}


def encode(ftype: T, ident: int, payload: bytes | memoryview = b"") -> bytes:
    return b"".join((HEADER.pack(ftype, ident), payload))


def encode_json(ftype: T, ident: int, obj: Any) -> bytes:
    return HEADER.pack(ftype, ident) + json.dumps(obj, separators=(",", ":")).encode()


def encode_credit(ident: int, credit: int) -> bytes:
    return HEADER.pack(T.WINDOW, ident) + CREDIT.pack(credit)


def decode(message: bytes | str) -> tuple[T, int, bytes]:
    if isinstance(message, str):
        raise ProtocolViolation("text message on the agent link (only binary frames are allowed)")
    if len(message) < HEADER.size:
        raise ProtocolViolation(f"frame of {len(message)} bytes is shorter than its header")
    code, ident = HEADER.unpack_from(message)
    ftype = _TYPES.get(code)
    if ftype is None:
        raise ProtocolViolation(f"unknown frame type 0x{code:02x}")
    return ftype, ident, message[HEADER.size:]


MAX_DEPTH = 32
"""Nesting of arrays and objects a JSON payload may have (ours have 5 at most): deeper ones are
refused before anything walks or stores them (a deep one would exhaust Python's recursion)."""


def decode_json(ftype: T, payload: bytes) -> Any:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolViolation(f"{ftype.name} frame with invalid JSON: {exc}") from None
    except RecursionError:
        obj = None
    else:
        # (no deeper than the brackets it has, strings' included: most frames are not walked)
        if (not isinstance(obj, (dict, list))
                or payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH
                or _depth_within(obj, MAX_DEPTH)):
            return obj
    raise ProtocolViolation(f"{ftype.name} frame with JSON nested more than {MAX_DEPTH} levels "
                            "deep")


def _depth_within(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests at most ``limit`` arrays/objects deep (iteratively: no recursion)."""
    level: list[Any] = [obj]
    for _ in range(limit):
        deeper: list[Any] = []
        for node in level:
            values = node.values() if type(node) is dict else node
            deeper.extend(v for v in values if type(v) is dict or type(v) is list)
        if not deeper:
            return True
        level = deeper
    return False


def decode_json_object(ftype: T, payload: bytes, *required: str) -> dict[str, Any]:
    obj = decode_json(ftype, payload)
    if not isinstance(obj, dict):
        raise ProtocolViolation(f"{ftype.name} frame must carry a JSON object")
    missing = [key for key in required if key not in obj]
    if missing:
        raise ProtocolViolation(f"{ftype.name} frame lacks {', '.join(missing)}")
    return obj


def decode_credit(payload: bytes) -> int:
    if len(payload) != CREDIT.size:
        raise ProtocolViolation("WINDOW frame must carry a 4-byte credit")
    return CREDIT.unpack(payload)[0]
