"""uploads, agent side: the server's ``upload`` streams, within RPort's ``[file-reception]``.
Hook implementations only; see :mod:`.reception`."""

from __future__ import annotations

import logging
import os
from typing import Any

from rport.agent.plugin import ConfigError, StreamRefused, hookimpl, structure_config

from .config import FileReceptionConfig
from .reception import Push, ReceptionError, Receiver, compile_protected, line, result_of_error

NAME = "uploads"
SECTION = "file-reception"
log = logging.getLogger("rport.plugins.uploads")


@hookimpl
def rport_config_sections() -> list[str]:
    return [SECTION]


@hookimpl
def rport_agent_startup(agent: Any) -> None:
    cfg = structure_config(agent.config.extra_sections.get(SECTION, {}), FileReceptionConfig,
                           prefix=SECTION)
    protected, problems = compile_protected(cfg.protected)
    if problems:
        raise ConfigError(problems)
    umask = os.umask(0o022)
    os.umask(umask)
    agent.state[NAME] = Receiver(agent.data_dir, cfg, protected, umask)


@hookimpl
def rport_register_handlers(agent: Any, register: Any) -> None:
    async def upload(session: Any, stream: Any) -> None:
        receiver: Receiver = agent.state[NAME]
        try:
            push = Push.from_meta(stream.meta)
            ignored = await receiver.decide(push)
        except ReceptionError as exc:
            log.warning("file push refused: %s", exc)
            raise StreamRefused(str(exc)) from None
        await stream.accept()
        if ignored is not None:
            log.info("file push %s: %s", push.uuid, ignored)
            await stream.write(line({"send": False, "result": {
                "uuid": push.uuid, "filepath": push.filepath, "size": 0, "message": ignored,
                "status": "ignored"}}))
            await stream.write_eof()
            return
        await stream.write(line({"send": True}))
        try:
            result = await receiver.receive(push, stream)
            log.info("file push %s: %s (%d bytes)", push.uuid, push.filepath, result["size"])
        except ReceptionError as exc:
            if stream.done:
                return  # reset: nothing more can be said
            log.error("file push %s to %s failed: %s", push.uuid, push.filepath, exc)
            result = result_of_error(push.uuid, str(exc))
        await stream.write(line(result))
        await stream.write_eof()

    register.stream("upload", upload)
