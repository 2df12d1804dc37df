"""``rportd``: the server's command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .confload import ConfigError
from .fdlimit import raise_open_files_limit
from .gcpolicy import Collector
from .config import load_server_config
from .logs import run, setup_logging
from .plugins import PluginError, describe_plugins
from .server import create_server
from .store import StoreError

log = logging.getLogger("rport.server")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rportd",
        description="rport server: agents connect to it; you manage them through its REST API.",
        epilog="Without -c, rportd runs on its embedded defaults (agents on 0.0.0.0:8080, API on "
               "127.0.0.1:3000) and generates credentials it prints. Flags override the file; "
               "RPORTD_<SECTION>_<KEY> variables (e.g. RPORTD_API_AUTH) sit in between.")
    p.add_argument("-c", "--config", type=Path, help="configuration file (TOML), e.g. rportd.conf")
    p.add_argument("--version", action="version", version=f"rportd {__version__}")
    p.add_argument("--address", help="agent endpoint address (server.address)")
    p.add_argument("--url", action="append", help="URL agents are told to connect to (server.url)")
    p.add_argument("--key-seed", help="seed of the server key (server.key_seed)")
    p.add_argument("--auth", help="agent credentials id:password (server.auth)")
    p.add_argument("--auth-file", help="agent credentials file (server.auth_file)")
    p.add_argument("--data-dir", help="data directory (server.data_dir)")
    p.add_argument("--api-address", help="API address (api.address), empty to disable")
    p.add_argument("--api-auth", help="API credentials user:password (api.auth)")
    p.add_argument("--api-auth-file", help="API users file (api.auth_file)")
    p.add_argument("--api-cert-file", help="TLS certificate of the API (api.cert_file)")
    p.add_argument("--api-key-file", help="TLS key of the API (api.key_file)")
    p.add_argument("--log-level", choices=["error", "warning", "info", "debug"])
    p.add_argument("--log-file")
    p.add_argument("command", nargs="?", choices=["run", "plugins"], default="run",
                   help="run: run the server (default); plugins: list the plugins it loads, and exit")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    table = {
        ("server", "address"): args.address, ("server", "url"): args.url,
        ("server", "key_seed"): args.key_seed, ("server", "auth"): args.auth,
        ("server", "auth_file"): args.auth_file, ("server", "data_dir"): args.data_dir,
        ("api", "address"): args.api_address, ("api", "auth"): args.api_auth,
        ("api", "auth_file"): args.api_auth_file, ("api", "cert_file"): args.api_cert_file,
        ("api", "key_file"): args.api_key_file, ("logging", "log_level"): args.log_level,
        ("logging", "log_file"): args.log_file,
    }
    out: dict[str, Any] = {}
    for (section, key), value in table.items():
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_server_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"rportd: {exc.render()}", file=sys.stderr)
        return 2
    setup_logging(config.logging.log_level, config.logging.log_file)
    _open_files_limit(config)
    try:
        server = create_server(config)
    except (ConfigError, PluginError) as exc:
        print(f"rportd: {exc.render() if isinstance(exc, ConfigError) else exc}", file=sys.stderr)
        return 2
    if args.command == "plugins":
        print("\n".join(describe_plugins(server.plugins)))
        return 0
    log.info("rportd %s starting", __version__)
    # Whatever rportd or a plugin creates (the store and its -wal/-shm files, keys, credentials)
    # is for its own user only; it runs no programs of others that would inherit this.
    os.umask(0o077)
    try:
        return run(_run(server))
    except KeyboardInterrupt:
        return 0


def _open_files_limit(config: Any) -> None:
    before, after = raise_open_files_limit()
    if after > before:
        log.info("open files limit raised from %d to %d (the hard limit)", before, after)
    # What the connection caps may hold at once, plus room for agents, tunnels and the store.
    need = config.server.max_pending_connections + config.api.max_connections + 1024
    if after and after < need:
        log.warning("the open files limit is %d, below the %d that the connection caps "
                    "(server.max_pending_connections, api.max_connections) and agents may need: "
                    "raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower the caps",
                    after, need)


async def _run(server: Any) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, main_task.cancel)
    # Process-wide, so here rather than in the server (see gcpolicy); from before the server
    # starts, so that what start-up makes (every known client) is set aside before the API and
    # the agents are served, not in their first seconds.
    collector = Collector(lambda: server.endpoint.connections)
    collector.start()
    try:
        await server.serve_forever()
    except asyncio.CancelledError:
        return 0
    except ConfigError as exc:  # found by a plugin as it started: the configuration's fault
        log.error("%s", exc.render())
        return 2
    except StoreError as exc:  # the database is unreachable, refuses us, or a migration failed
        log.error("%s", exc)
        return 2
    except PluginError as exc:  # e.g. the address is in use
        log.error("%s", exc)
        return 1
    finally:
        await collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
