"""``rport``: the agent's command line (RPort's flags)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from rport.core import __version__
from rport.core.confload import ConfigError
from rport.core.fdlimit import raise_open_files_limit
from rport.core.logs import run, setup_logging
from rport.core.plugins import PluginError, describe_plugins

from .client import create_agent
from .config import load_agent_config

log = logging.getLogger("rport.agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rport",
        description="rport agent: connects out to an rportd server and serves it.",
        usage="rport [flags] <server> [remote ...]   or   rport -c rport.conf   or   rport plugins",
        epilog="Example: rport --id my-client-1 --fingerprint <FP> --tag Linux --tag "
               "\"Office Berlin\" --name \"My Test VM\" --auth user1:1234 node1.example.com:8080")
    p.add_argument("server", nargs="?", help="server address: host:port or http(s)://host:port")
    p.add_argument("remotes", nargs="*", help="tunnels to open on connect, e.g. 2222:22")
    p.add_argument("-c", "--config", type=Path, help="configuration file (TOML), e.g. rport.conf")
    p.add_argument("--version", action="version", version=f"rport {__version__}")
    p.add_argument("--fallback-server", action="append", dest="fallback_servers", metavar="ADDRESS",
                   help="a server to try when the main one is unreachable; repeat for several "
                        "(client.fallback_servers)")
    p.add_argument("--fingerprint", help="expected fingerprint of the server's key (a prefix is enough)")
    p.add_argument("--auth", help="credentials id:password (env RPORT_AUTH)")
    p.add_argument("--id", help="client id (default: the machine id)")
    p.add_argument("--name", help="client name (default: the host name)")
    p.add_argument("-t", "--tag", action="append", help="a tag; repeat for several")
    p.add_argument("-l", "--label", action="append", metavar="KEY:VALUE",
                   help='a label "key: value" (or key=value); repeat for several')
    p.add_argument("--keepalive", help="keepalive interval, e.g. 30s (connection.keep_alive)")
    p.add_argument("--max-retry-count", type=int, help="give up after N failed attempts (-1: never)")
    p.add_argument("--data-dir", help="data directory (client.data_dir)")
    p.add_argument("--log-level", choices=["error", "warning", "info", "debug"])
    p.add_argument("--log-file")
    return p


def parse_label(text: str) -> tuple[str, str]:
    for sep in (":", "="):
        key, found, value = text.partition(sep)
        if found and key.strip():
            return key.strip(), value.strip()
    raise ValueError(f'invalid label {text!r}: use "key: value"')


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    client: dict[str, Any] = {}
    for key in ("server", "fingerprint", "auth", "id", "name", "data_dir"):
        if getattr(args, key) is not None:
            client[key] = getattr(args, key)
    if args.fallback_servers:
        client["fallback_servers"] = args.fallback_servers
    if args.tag:
        client["tags"] = args.tag
    if args.label:
        client["labels"] = dict(parse_label(text) for text in args.label)
    if args.remotes:
        client["remotes"] = args.remotes
    out: dict[str, Any] = {"client": client} if client else {}
    if args.keepalive is not None:
        out["connection"] = {"keep_alive": args.keepalive}
    if args.max_retry_count is not None:
        out.setdefault("connection", {})["max_retry_count"] = args.max_retry_count
    logging_ = {k: v for k, v in (("log_level", args.log_level), ("log_file", args.log_file)) if v}
    if logging_:
        out["logging"] = logging_
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    listing = args.server == "plugins" and not args.remotes
    if listing:  # `rport plugins`: list them and exit, no server needed
        args.server = args.server if args.config else "127.0.0.1:0"
        args.auth = args.auth or "list:plugins"
    try:
        config = load_agent_config(args.config, overrides=_overrides(args))
    except ValueError as exc:
        parser.error(str(exc))
    except ConfigError as exc:
        print(f"rport: {exc.render()}", file=sys.stderr)
        return 2
    setup_logging(config.logging.log_level, config.logging.log_file)
    raise_open_files_limit()  # each tunnelled connection holds a file descriptor
    try:
        agent = create_agent(config)
    except (ConfigError, PluginError, ValueError) as exc:
        print(f"rport: {exc.render() if isinstance(exc, ConfigError) else exc}", file=sys.stderr)
        return 2
    if listing:
        print("\n".join(describe_plugins(agent.plugins)))
        return 0
    log.info("rport %s starting (client id %s)", __version__, agent.client_id or "chosen by the server")
    try:
        return run(_run(agent))
    except KeyboardInterrupt:
        return 0


async def _run(agent: Any) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await agent.run()
    except asyncio.CancelledError:
        log.info("stopped")
        return 0
    except ConfigError as exc:  # found by a plugin as it started: the configuration's fault
        log.error("%s", exc.render())
        return 2
    except PluginError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
