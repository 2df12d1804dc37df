"""The server's side of the WebSocket opening handshake (RFC 6455 §4.2) on the agent endpoint.

An agent's opening request is a few hundred bytes, answered once: checking it and writing the
101 are a few string operations. (websockets' server did it before, with a connection object,
a handler task and a dozen other objects kept for as long as the agent stayed connected, a
quarter of the per-agent objects a full garbage collection had to walk; the link took the
connection over right after anyway.) The checks are those of RFC 6455 §4.2.1 as websockets
made them, with its status codes: 405 for another method, 505 for another HTTP version, 426
without the upgrade to websocket, 400 for a bad key, version or subprotocol.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class OpeningError(Exception):
    """The request cannot be upgraded: ``response`` is the HTTP answer to send."""

    def __init__(self, status: int, reason: str, detail: str, headers: str = "") -> None:
        super().__init__(detail)
        body = f"Failed to open a WebSocket connection: {detail}.\n".encode()
        self.status = status
        self.response = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8"
                         f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}"
                         f"\r\n").encode() + body


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _tokens(values: list[str]) -> list[str]:
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def answer(head: bytes, subprotocol: str) -> bytes:
    """The 101 answer to the opening request ``head`` (up to, without, its blank line) that
    offers ``subprotocol``; raises :class:`OpeningError` with the answer to send instead."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise OpeningError(400, "Bad Request", "invalid request line")
    method, _, version = parts
    if method != "GET":
        raise OpeningError(405, "Method Not Allowed", f"invalid HTTP method; expected GET; "
                           f"got {method[:32]}", "Allow: GET\r\n")
    if version != "HTTP/1.1":
        raise OpeningError(505, "HTTP Version Not Supported", f"invalid HTTP version; expected "
                           f"HTTP/1.1; got {version[:16]}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise OpeningError(400, "Bad Request", "invalid header line")
        headers.setdefault(name.lower(), []).append(value.strip())
    connection = _tokens(headers.get("connection", []))
    if not any(token.lower() == "upgrade" for token in connection):
        raise OpeningError(426, "Upgrade Required", "missing Connection: Upgrade",
                           "Upgrade: websocket\r\n")
    upgrade = _tokens(headers.get("upgrade", []))
    if not (len(upgrade) == 1 and upgrade[0].lower() == "websocket"):
        raise OpeningError(426, "Upgrade Required", "missing Upgrade: websocket",
                           "Upgrade: websocket\r\n")
    keys = headers.get("sec-websocket-key", [])
    if len(keys) != 1:
        raise OpeningError(400, "Bad Request", "missing or repeated Sec-WebSocket-Key header")
    try:
        raw_key = base64.b64decode(keys[0].encode(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != 16:
        raise OpeningError(400, "Bad Request", "invalid Sec-WebSocket-Key header")
    if headers.get("sec-websocket-version") != ["13"]:
        raise OpeningError(400, "Bad Request", "invalid Sec-WebSocket-Version header; "
                           "expected 13", "Sec-WebSocket-Version: 13\r\n")
    offered = _tokens(headers.get("sec-websocket-protocol", []))
    if subprotocol not in offered:
        raise OpeningError(400, "Bad Request", f"{'invalid' if offered else 'missing'} "
                           f"subprotocol; expected {subprotocol}")
    # Extensions offered (compression) are declined by not naming them.
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(keys[0])}\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n").encode()
