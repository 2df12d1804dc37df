"""What a connected agent keeps in memory: the modules of the libraries it does not need are not
loaded (each costs the agent memory for as long as it runs; docs/performance.md).

A real agent, built by the same functions as ``rport`` (arguments, a configuration file, the
plugins from their entry points), connects to a real rportd and reports the modules it has
loaded once connected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..procs import Server, write_toml

# Libraries an agent has no use for (the server's, the proxy's), or that it does without:
# cryptography (the key is pinned with the standard library, rport.core.pinning), websockets'
# client (rport.agent.dial) and package (only its C masking is loaded, by
# rport.core.protocol.websocket), psutil and distro (rport.agent.sysinfo, on Linux), tomlkit
# (tomllib reads the configuration), platform (on Linux, os.uname and os-release say it all),
# importlib.metadata and its backport with what they import
# (rport.core.entrypoints reads the entry points), cattrs (rport.core.confload structures the
# configuration's flat classes itself), shutil with bz2 and lzma (argparse imports it to size its
# help: rport.agent.cli sizes it itself), the server's configuration classes, attrs (the agent's
# classes are dataclasses), uuid (rport.agent.client writes its two ids itself; the commands
# runner imports it at the first command), the idna codec.
NOT_LOADED = ("cryptography", "bcrypt", "_cffi_backend", "httpx", "httpcore", "h11", "httptools",
              "uvicorn", "starlette", "anyio", "sniffio", "jwt", "websockets.asyncio",
              "websockets.client", "websockets.legacy", "websockets.sync", "websockets.version",
              "websockets.imports", "tomlkit", "importlib_metadata", "importlib.metadata",
              "importlib.resources", "email", "zipfile", "csv", "tempfile", "cattrs",
              "typing_extensions", "shutil", "bz2", "lzma", "rport.core.config", "attr", "attrs",
              "uuid", "encodings.idna", "sqlite3")
LINUX_ONLY = ("psutil", "distro", "platform")

DRIVER = """
import asyncio, json, sys
from rport.agent.cli import build_parser, _overrides
from rport.agent.client import create_agent
from rport.agent.config import load_agent_config
from rport.core.logs import run, setup_logging

args = build_parser().parse_args(sys.argv[1:])
config = load_agent_config(args.config, overrides=_overrides(args))
setup_logging(config.logging.log_level)
agent = create_agent(config)

async def main():
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.connected.wait(), 60)
    print(json.dumps(sorted(sys.modules)))
    task.cancel()

run(main())
"""


def test_connected_agent_loads_only_what_it_needs(server: Server, tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": server.agent_url, "auth": "user1:1234", "id": "footprint",
                   "fingerprint": server.fingerprint, "data_dir": str(tmp_path / "data")}})
    result = subprocess.run([sys.executable, "-c", DRIVER, "-c", str(conf)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "rport.plugins.tunnels.agent" in modules and "rport.plugins.commands.agent" in modules
    forbidden = NOT_LOADED + (LINUX_ONLY if sys.platform == "linux" else ())
    loaded = [m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert loaded == []
    assert server.client("footprint") is not None  # it did register (and has gone since)
