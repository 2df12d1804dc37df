"""Receiving ``POST /files``: a multipart/form-data body parsed as it arrives (python-multipart,
the parser Starlette's own forms use), the file part written straight to a file on disk with its
MD5 computed on the way, in a thread, so that neither a large file nor a slow disk weighs on the
server: memory holds one chunk of the request at a time. Past ``max_file`` bytes of file (or
``max_fields`` bytes of other fields) the upload is refused at once with 413, without reading
the rest."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import attrs
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from rport.core.plugin import ApiError

FILE_FIELD = "upload"
MAX_PARTS = 10_000


def bad(title: str, detail: str = "", code: str = "ERR_CODE_INVALID_UPLOAD") -> ApiError:
    return ApiError(400, title, code=code, detail=detail)


@attrs.define
class Received:
    """What the body held: its fields (every value, in order) and the file, on disk."""

    fields: dict[str, list[str]] = attrs.field(factory=dict)
    path: Path | None = None
    filename: str = ""
    size: int = 0
    md5: str = ""


class _Parts:
    """The parser's callbacks: field values kept (bounded), file data queued for the writer."""

    def __init__(self, max_file: int, max_fields: int) -> None:
        self.max_file, self.max_fields = max_file, max_fields
        self.received = Received()
        self.pending: list[bytes] = []  # file data of the current chunk of the request
        self.file_seen = False
        self._name = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._is_file = False
        self._data = bytearray()
        self._field_bytes = 0
        self._parts = 0

    def on_part_begin(self) -> None:
        self._headers, self._field, self._is_file, self._data = {}, None, False, bytearray()
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise bad("Invalid multipart data.", f"more than {MAX_PARTS} parts")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise bad("Invalid multipart data.",
                      'a part without a name (Content-Disposition: form-data; name="...")')
        self._field = options[b"name"].decode("utf-8", errors="replace")
        self._is_file = b"filename" in options
        if self._is_file and self._field == FILE_FIELD:
            if self.file_seen:
                raise bad("Only one file may be uploaded at a time.",
                          f"the form has more than one {FILE_FIELD} part")
            self.file_seen = True
            self.received.filename = options[b"filename"].decode("utf-8", errors="replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            if self._field != FILE_FIELD:
                return  # another file part: not RPort's, not kept
            self.received.size += end - start
            if self.received.size > self.max_file:
                raise too_large(self.max_file)
            self.pending.append(data[start:end])
        else:
            self._field_bytes += end - start
            if self._field_bytes > self.max_fields:
                raise ApiError(413, "request body too large", code="ERR_CODE_BODY_TOO_LARGE",
                               detail=f"the form's fields exceed {self.max_fields} bytes")
            self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file or self._field is None:
            return
        try:
            value = self._data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("Invalid multipart data.", f"the field {self._field} is not UTF-8 text") from None
        self.received.fields.setdefault(self._field, []).append(value)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "file too large", code="ERR_CODE_FILE_TOO_LARGE",
                    detail=f"the limit is {limit} bytes ([api] max_filepush_size)")


def _write(fh: BinaryIO, md5: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        fh.write(chunk)
        md5.update(chunk)


def _open(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


async def receive(request: Any, path: Path, *, max_file: int, max_fields: int) -> Received:
    """Parse the request's multipart body; the file (if any) is written to ``path`` (created,
    0600). Raises :class:`ApiError` (400, 413); ``path`` is removed on any failure."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise bad("request Content-Type isn't multipart/form-data",
                  "send the file as multipart/form-data (curl -F upload=@file -F dest=...)")
    parts = _Parts(max_file, max_fields)
    parser = MultipartParser(params[b"boundary"], {  # type: ignore[arg-type]
        "on_part_begin": parts.on_part_begin, "on_part_data": parts.on_part_data,
        "on_part_end": parts.on_part_end, "on_header_field": parts.on_header_field,
        "on_header_value": parts.on_header_value, "on_header_end": parts.on_header_end,
        "on_headers_finished": parts.on_headers_finished})
    md5 = hashlib.md5()
    fh: BinaryIO | None = None
    limit = max_file + max_fields + (1 << 20)  # room for part headers and boundaries
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large(max_file)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise bad("Invalid multipart data.", str(exc)) from None
            if parts.pending:
                if fh is None:
                    fh = await asyncio.to_thread(_open, path)
                chunks, parts.pending = parts.pending, []
                await asyncio.to_thread(_write, fh, md5, chunks)
        try:
            parser.finalize()
        except FormParserError as exc:
            raise bad("Invalid multipart data.", str(exc)) from None
        if parts.file_seen and fh is None:  # an empty file
            fh = await asyncio.to_thread(_open, path)
        if fh is not None:
            await asyncio.to_thread(fh.close)
            fh = None
    except BaseException:
        if fh is not None:
            await asyncio.to_thread(fh.close)
        await asyncio.to_thread(path.unlink, True)
        raise
    received = parts.received
    if parts.file_seen:
        received.path, received.md5 = path, md5.hexdigest()
    return received
