"""Pushing a file to clients (RPort's ``/files``): the upload is received to
``{data_dir}/filepush/<uuid>_rport_filepush`` (as RPort keeps it), recorded with every target
client's result ``pending``, then sent to each client over a flow-controlled stream of its
session: the client first says whether it wants the data (it may refuse by its policy, or
ignore a file that exists), then receives it and answers with RPort's result (``success``,
``error`` or ``ignored``). At most ``PARALLEL`` clients receive at a time; the server reads the
file in chunks, so memory stays bounded whatever the file's size and the number of clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import sqlalchemy as sa

from rport.core.plugin import (
    ApiError,
    AuditEvent,
    Client,
    RemoteError,
    SessionClosed,
    StreamRefused,
    check_client_access,
    visible_clients,
)

from . import store
from .form import parse_options, parse_targets
from .receive import bad, receive

log = logging.getLogger("rport.plugins.uploads")

STREAM = "upload"
CHUNK = 256 * 1024
PARALLEL = 32
"""Clients receiving a file at the same time (the others wait their turn)."""
MAX_ANSWER = 64 * 1024
STOPPED = "the server stopped before the file reached this client"


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class UploadService:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.dir = server.data_dir / "filepush"
        self._parallel = asyncio.Semaphore(PARALLEL)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def clean(self) -> None:
        """At start: files left in ``filepush/`` by a server that stopped without finishing
        (killed, or the machine went down) can never be sent any more."""
        def clean() -> int:
            if not self.dir.is_dir():
                return 0
            gone = 0
            for entry in self.dir.iterdir():
                if entry.name.endswith("_rport_filepush") or entry.name.endswith(".part"):
                    entry.unlink(missing_ok=True)
                    gone += 1
            return gone
        gone = await asyncio.to_thread(clean)
        if gone:
            log.warning("removed %d file(s) of unfinished uploads from %s", gone, self.dir)

    # -- receiving ----------------------------------------------------------------------------

    async def create(self, request: Any) -> dict[str, Any]:
        """Receive an upload, check it, record it, and start sending it; RPort's answer."""
        user = request.state.user
        await asyncio.to_thread(self.dir.mkdir, 0o700, True, True)
        part = self.dir / f".{uuid.uuid4()}.part"
        max_file = self.server.config.api.max_filepush_size
        max_fields = 64 * 1024 + 2 * self.server.clients.ids_json_size()
        received = await receive(request, part, max_file=max_file, max_fields=max_fields)
        try:
            fields = received.fields
            if received.path is None:
                raise bad("Missing file.", "the multipart field upload holds the file")
            options = parse_options(fields)
            if options["md5"] and options["md5"] != received.md5:
                raise bad("md5 check failed",
                          f"the md5 given ({options['md5']}) doesn't equal the checksum of the "
                          f"file received ({received.md5})", code="ERR_CODE_MD5_MISMATCH")
            clients = await self._targets(parse_targets(fields), user)
            check_client_access(self.server, user, clients)
            path = self.dir / f"{options['uuid']}_rport_filepush"
            upload = {**options, "md5": received.md5, "size": received.size,
                      "filename": received.filename, "created": time.time(),
                      "created_at": _now(), "created_by": user.username,
                      "client_ids": [c.id for c in clients]}
            pending = [{"client_id": c.id, "uuid": upload["uuid"], "filepath": "", "size": 0,
                        "message": "", "status": "pending"} for c in clients]
            try:
                stored = await self.server.store.run(store.insert, upload, pending)
            except sa.exc.IntegrityError:
                stored = False
            if not stored:
                raise ApiError(409, "an upload with this id exists", code="ERR_CODE_ALREADY_EXIST",
                               detail=f"id {upload['uuid']}: give another id, or none")
            await asyncio.to_thread(part.rename, path)
            note = getattr(request.state, "audit", None)
            if note is not None:  # the route's audit entry: one per client, the upload's fields
                note.client_ids = upload["client_ids"]
                note.request = audited(upload)
        except BaseException:
            await asyncio.to_thread(part.unlink, True)
            raise
        log.info("upload %s by %s: %s (%d bytes, md5 %s) to %d client(s)", upload["uuid"],
                 user.username, upload["filepath"], upload["size"], upload["md5"], len(clients))
        task = asyncio.create_task(self._distribute(upload, clients, path))
        self._tasks[upload["uuid"]] = task
        task.add_done_callback(lambda _t, key=upload["uuid"]: self._tasks.pop(key, None))
        return {"uuid": upload["uuid"], "filepath": upload["filepath"], "size": upload["size"]}

    async def _targets(self, targets: Mapping[str, Any], user: Any) -> list[Client]:
        matchable = None if user.is_admin else visible_clients(self.server, user)
        targeting = self.server.state.get("targeting")
        if targeting is not None:
            return await targeting.resolve(targets, matchable)
        if any(targets.get(k) for k in ("group_ids", "tags")):
            raise ApiError(400, "Targeting by group_id or tags is not available.",
                           code="ERR_CODE_TARGETING_DISABLED",
                           detail="group_id and tags need the targeting plugin, which is disabled")
        clients = []
        for cid in targets.get("client_ids") or []:
            client = self.server.clients.get(cid)
            if client is None:
                raise ApiError(404, f'Client with id="{cid}" not found.', code="ERR_CODE_CLIENT_NOT_FOUND")
            clients.append(client)
        if not clients:
            raise ApiError(400, "Missing targeting parameters.", code="ERR_CODE_MISSING_TARGETS",
                           detail="client_id, group_id or tags")
        return clients

    # -- sending ------------------------------------------------------------------------------

    async def _distribute(self, upload: dict[str, Any], clients: list[Client], path: Path) -> None:
        try:
            await asyncio.gather(*(self._send_one(upload, c.id, path) for c in clients))
        finally:
            await asyncio.to_thread(path.unlink, True)

    async def _send_one(self, upload: dict[str, Any], client_id: str, path: Path) -> None:
        async with self._parallel:
            try:
                result = await self._send(upload, client_id, path)
            except Exception as exc:  # never leave a result pending for an unexpected failure
                log.exception("upload %s to %s failed", upload["uuid"], client_id)
                result = {"status": "error", "message": f"{exc.__class__.__name__}: {exc}"}
        result = {"client_id": client_id, "uuid": upload["uuid"],
                  "filepath": str(result.get("filepath") or ""),
                  "size": result.get("size") if isinstance(result.get("size"), int) else 0,
                  "message": str(result.get("message") or ""),
                  "status": result.get("status") if result.get("status") in ("success", "ignored")
                  else "error"}
        await self.server.store.run(store.set_result, upload["uuid"], result)
        # Each client's result in the audit log, as RPort records it (uploads success/failed).
        self.server.bus.publish(AuditEvent(
            "uploads", "failed" if result["status"] == "error" else "success",
            username=upload["created_by"], affected_id=upload["uuid"], client_ids=(client_id,),
            request=audited(upload), response=result))
        if result["status"] == "error":
            log.error("upload failure: %s, file id: %s, file path: %s, client %s", result["message"],
                      upload["uuid"], upload["filepath"], client_id)
        else:
            log.info("upload %s, file id: %s, file path: %s, client %s", result["status"],
                     upload["uuid"], upload["filepath"], client_id)

    async def _send(self, upload: dict[str, Any], client_id: str, path: Path) -> dict[str, Any]:
        session = self.server.clients.session(client_id)
        if session is None:
            return {"status": "error", "message": "client is not connected"}
        meta = {k: upload[k] for k in ("uuid", "filepath", "mode", "user", "group", "force",
                                       "sync", "md5", "size")}
        try:
            stream = await session.open_stream(STREAM, meta)
        except StreamRefused as exc:
            reason = str(exc)
            if reason.startswith("unknown stream kind"):
                reason = ("the client does not receive files (its uploads plugin is not loaded, "
                          "or it is too old)")
            return {"status": "error", "message": reason}
        except (SessionClosed, TimeoutError) as exc:
            return {"status": "error", "message": f"failed to reach the client: {exc or 'timeout'}"}
        try:
            decision = json.loads(await _read_line(stream))
            if not isinstance(decision, dict):
                raise ValueError("not an object")
            if not decision.get("send"):
                return decision.get("result") or {"status": "error", "message": "no result"}
            await _send_file(stream, path)
            await stream.write_eof()
            return json.loads(await _read_rest(stream))
        except SessionClosed:
            return {"status": "error",
                    "message": f"the transfer was interrupted: {stream.reset_reason or 'disconnected'}"}
        except (ValueError, RemoteError) as exc:
            stream.reset("invalid answer")
            return {"status": "error", "message": f"invalid answer from the client: {exc}"}
        finally:
            if not stream.done:
                stream.reset("upload finished")

    async def close(self) -> None:
        tasks = list(self._tasks.items())
        for _, task in tasks:
            task.cancel()
        await asyncio.gather(*(t for _, t in tasks), return_exceptions=True)
        for upload_id, _ in tasks:
            with contextlib.suppress(Exception):
                await self.server.store.run(store.fail_pending, upload_id, STOPPED)


def audited(upload: dict[str, Any]) -> dict[str, Any]:
    """What the audit log records of an upload (RPort's ``UploadedFile``, without the
    server's own bookkeeping)."""
    return {k: upload.get(k) for k in ("uuid", "filename", "filepath", "size", "md5", "mode",
                                       "user", "group", "force", "sync")}


async def _read_line(stream: Any) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        chunk = await stream.read()
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError("answer too long")
    line, _, rest = bytes(data).partition(b"\n")
    if rest:
        raise ValueError("data after the decision")
    return line


async def _read_rest(stream: Any) -> bytes:
    data = bytearray()
    while chunk := await stream.read():
        data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError("answer too long")
    return bytes(data)


def _open(path: Path) -> BinaryIO:
    return open(path, "rb")


async def _send_file(stream: Any, path: Path) -> None:
    fh = await asyncio.to_thread(_open, path)
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            await stream.write(chunk)
    finally:
        await asyncio.to_thread(fh.close)

