"""scripts, agent side: the server's ``run_script`` requests, within RPort's ``[remote-scripts]``
(off by default) and with its ``[interpreter-aliases]``. A script is run exactly as a command
is (the commands plugin's runner: ``{data_dir}/scripts/<uuid>``, live output, results delivered
after reconnects), but is not subject to ``[remote-commands]`` allow/deny, which filter command
lines, as in RPort; it needs remote commands enabled. Hook implementations only."""

from __future__ import annotations

import logging
from typing import Any

from rport.agent.plugin import ConfigError, RemoteError, hookimpl, structure_config
from rport.plugins.commands.runner import Refused

from .config import RemoteScriptsConfig, parse_aliases

NAME = "scripts"
SECTION = "remote-scripts"
ALIASES = "interpreter-aliases"
COMMANDS = "commands"
log = logging.getLogger("rport.plugins.scripts")


@hookimpl
def rport_config_sections() -> list[str]:
    return [SECTION, ALIASES]


@hookimpl
def rport_agent_startup(agent: Any) -> None:
    problems: list[str] = []
    try:
        cfg = structure_config(agent.config.extra_sections.get(SECTION, {}), RemoteScriptsConfig,
                               prefix=SECTION)
    except ConfigError as exc:
        problems += exc.problems
        cfg = RemoteScriptsConfig()
    aliases, alias_problems = parse_aliases(agent.config.extra_sections.get(ALIASES, {}))
    problems += alias_problems
    commands = agent.config.extra_sections.get("remote-commands", {})
    if cfg.enabled and isinstance(commands, dict) and commands.get("enabled") is False:
        problems.append(f"{SECTION}.enabled: remote scripts execution requires remote commands "
                        "to be enabled ([remote-commands] enabled = true)")
    if problems:
        raise ConfigError(problems)
    agent.state[NAME] = (cfg, aliases)
    if cfg.enabled:
        log.info("remote scripts are enabled%s", f" (interpreter aliases: {', '.join(sorted(aliases))})"
                 if aliases else "")


@hookimpl
def rport_register_handlers(agent: Any, register: Any) -> None:
    async def run_script(session: Any, job: Any) -> Any:
        cfg, aliases = agent.state[NAME]
        if not isinstance(job, dict) or not isinstance(job.get("command"), str) or not job.get("jid"):
            raise RemoteError("invalid run_script request")
        commands = agent.state.get(COMMANDS)
        if commands is None or not commands.cfg.enabled:
            raise RemoteError("remote commands execution is disabled on this client "
                              "([remote-commands] enabled = false)")
        if not cfg.enabled:
            raise RemoteError(f"remote scripts are disabled on this client ([{SECTION}] enabled = false)")
        interpreter = str(job.get("interpreter") or "")
        try:
            started = await commands.runner.start({**job, "interpreter": aliases.get(interpreter, interpreter)})
        except Refused as exc:  # no such interpreter, no sudo...
            raise RemoteError(str(exc)) from None
        log.debug("job %s started (pid %s): a script for %s", job["jid"], started["pid"],
                  interpreter or "/bin/sh")
        return started

    register.request("run_script", run_script)
