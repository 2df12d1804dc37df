"""The command lines of rportd and rport, run as real processes: version, help, configuration
errors, generated API credentials, the example configuration files and the plugin list."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rport.agent.config import load_agent_config
from rport.core import __version__
from rport.core.config import load_server_config

from ..procs import PY, Proc, write_toml

REPO = Path(__file__).resolve().parents[2]


def command(name: str) -> list[str]:
    """The installed console script when there is one (so its entry point is tested too)."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    return [PY, "-m", {"rportd": "rport.core.cli", "rport": "rport.agent.cli"}[name]]


def run(name: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(name), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=home,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                               "XDG_DATA_HOME": str(home / "xdg")})


@pytest.mark.parametrize("name", ["rportd", "rport"])
def test_version(name: str, tmp_path: Path) -> None:
    result = run(name, "--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{name} {__version__}"


def test_help(tmp_path: Path) -> None:
    server = run("rportd", "--help", home=tmp_path)
    assert server.returncode == 0, server.stderr
    assert server.stdout.startswith("usage: rportd")
    for text in ("--config", "--address", "--api-address", "--api-auth", "--data-dir",
                 "--key-seed", "plugins", "RPORTD_"):
        assert text in server.stdout, text

    agent = run("rport", "--help", home=tmp_path)
    assert agent.returncode == 0, agent.stderr
    assert agent.stdout.startswith("usage: rport")
    for text in ("--fingerprint", "--auth", "--id", "--tag", "--label", "--config", "Example:"):
        assert text in agent.stdout, text
    assert "Traceback" not in server.stderr + agent.stderr


def test_bad_server_config_lists_every_problem(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("\n".join([
        "[server]",
        'address = "nohost:notaport"',
        'keep_alive = "5 parsecs"',
        'max_failed_login = "five"',
        "bogus_key = 1",
        "",
        "[api]",
        "max_request_bytes = true",
        "",
        "[nosuch]",
        "x = 1",
        "",
    ]))
    result = run("rportd", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert str(conf) in output
    lines = {line.strip() for line in output.splitlines()}
    expected = [
        "server.bogus_key: unknown key",
        'server.keep_alive: invalid duration "5 parsecs" (use e.g. 30s, 5m, 1h30m)',
        "server.max_failed_login: expected an integer, got 'five'",
        "api.max_request_bytes: expected an integer, got True",
        "nosuch: unknown section",
        'server.address: invalid port in address "nohost:notaport"',
    ]
    for line in expected:
        assert line in lines, output
    # It stopped before doing anything: no data directory, no key.
    assert not (tmp_path / "xdg").exists()


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("[server\naddress = 1\n")
    result = run("rportd", "-c", str(broken), home=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert str(broken) in result.stderr

    result = run("rportd", "-c", str(tmp_path / "missing.conf"), home=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert "missing.conf" in result.stderr


def test_bad_agent_config_lists_every_problem(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", "colour": "blue",
                   "use_hostname": "yes"},
        "connection": {"keep_alive": "soon", "max_retry_count": 1.5},
        "logging": {"log_level": "loud"},
    })
    result = run("rport", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    for line in ("client.colour: unknown key",
                 "client.use_hostname: expected true or false, got 'yes'",
                 'connection.keep_alive: invalid duration "soon" (use e.g. 30s, 5m, 1h30m)',
                 "connection.max_retry_count: expected an integer, got 1.5"):
        assert line in output, output


@pytest.mark.parametrize("key", ["tags", "remotes", "tunnel_allowed"])
def test_agent_list_key_given_a_string_is_an_error(tmp_path: Path, key: str) -> None:
    """A list key written as a plain string is a type error, reported as `key: message`; it
    must not be split into one entry per character (tags = "Linux" -> ["L", "i", ...])."""
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", key: "127.0.0.1"},
        # If the file were accepted, give up after one attempt instead of retrying forever.
        "connection": {"max_retry_count": 0}})
    result = run("rport", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode != 0, output
    assert f"client.{key}: " in output, output


def _start(conf: Path, log: Path) -> tuple[Proc, str]:
    proc = Proc([*command("rportd"), "-c", str(conf)], log)
    url = proc.wait_log(r"API listening on (http://\S+)").group(1)
    return proc, url


def test_generated_api_password(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"data_dir": str(data_dir), "address": "127.0.0.1:0"},
        "api": {"address": "127.0.0.1:0", "user_login_wait": "0s"},  # wrong, then right at once
    })
    proc, url = _start(conf, tmp_path / "first.log")
    try:
        match = re.search(r"the API requires user admin with password (\S+), generated once", proc.log())
        assert match, proc.log()
        password = match.group(1)
        assert len(password) >= 16
        assert re.search(r"no agent credentials configured .*: using rport:\S+", proc.log())

        with httpx.Client(base_url=url + "/api/v1", timeout=10) as api:
            resp = api.get("/status")
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"].lower().startswith("basic")
            body = resp.json()
            assert set(body) == {"errors"} and len(body["errors"]) == 1
            assert set(body["errors"][0]) == {"code", "title", "detail"}
            assert body["errors"][0]["code"] and body["errors"][0]["title"] == "unauthorized"
            assert api.get("/status", auth=("admin", "not-it")).status_code == 401
            ok = api.get("/status", auth=("admin", password))
            assert ok.status_code == 200 and ok.json()["data"]["version"] == __version__
    finally:
        assert proc.stop() == 0
    assert password in (data_dir / "rportd-api-auth").read_text()

    # A second start reuses the password kept in the data directory.
    proc, url = _start(conf, tmp_path / "second.log")
    try:
        assert f"with password {password}, generated once" in proc.log()
        with httpx.Client(base_url=url + "/api/v1", timeout=10) as api:
            assert api.get("/status", auth=("admin", password)).status_code == 200
            assert api.get("/status").status_code == 401
    finally:
        assert proc.stop() == 0


def test_example_configs_load() -> None:
    agent = load_agent_config(REPO / "rport.example.conf", environ={})
    assert agent.client.server == "127.0.0.1:8080"
    assert agent.client.auth == "rport:password123"
    assert agent.connection.keep_alive == 30 and agent.connection.max_retry_interval == 600
    assert agent.connection.max_retry_count == -1
    assert agent.logging.log_level == "info" and agent.plugins.disabled == []

    server = load_server_config(REPO / "rportd.example.conf", environ={})
    assert server.server.address == "0.0.0.0:8080"
    assert server.server.keep_disconnected_clients == 3600
    assert server.server.client_login_wait == 2 and server.server.max_failed_login == 5
    assert server.api.address == "127.0.0.1:3000" and server.api.max_request_bytes == 10240
    assert server.api.ban_time == 3600 and server.plugins.disabled == []


def test_plugins_command(tmp_path: Path) -> None:
    result = run("rportd", "plugins", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "auth_basic" in rows
    assert "rport.plugins.auth_basic.server" in rows["auth_basic"]
    assert "(built-in)" in rows["auth_basic"]

    # With a configuration that disables it, it is listed as disabled.
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"data_dir": str(tmp_path / "data"), "auth": "a:b"},
        "api": {"auth": "admin:x"},
        "plugins": {"disabled": ["auth_basic"]},
    })
    result = run("rportd", "-c", str(conf), "plugins", home=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("auth_basic")]
    assert len(lines) == 1 and "(disabled in configuration)" in lines[0]


# Mistakes that only a plugin finds as it starts are configuration errors all the same: exit
# status 2, which the systemd units in docs/operations.md do not restart on
# (RestartPreventExitStatus=2). A failure while starting, such as a port in use, is 1.
SERVER_STARTUP_MISTAKES = {
    "used_ports reversed": ({"server": {"used_ports": ["20000-10000"]}},
                            'server.used_ports: invalid port range "20000-10000"'),
    "proxy cert without key": ({"server": {"tunnel_proxy_cert_file": "/nope.crt"}},
                               "must be set together"),
    "proxy cert unreadable": ({"server": {"tunnel_proxy_cert_file": "/nope.crt",
                                          "tunnel_proxy_key_file": "/nope.key"}},
                              "cannot load /nope.crt / /nope.key"),
    "auth_jwt without auth_basic": ({"plugins": {"disabled": ["auth_basic"]}},
                                    "auth_jwt needs the auth_basic plugin"),
    "bad agent credentials": ({"server": {"auth": "no-colon"}}, "must be"),
    "scripts without commands": ({"plugins": {"disabled": ["commands", "scheduler"]}},
                                 "the scripts plugin runs scripts as jobs of the commands plugin"),
    "scheduler without commands": ({"plugins": {"disabled": ["commands", "scripts"]}},
                                   "the scheduler plugin runs schedules as jobs of the commands plugin"),
    "max_filepush_size zero": ({"api": {"max_filepush_size": 0}}, "api.max_filepush_size"),
}


@pytest.mark.parametrize("case", list(SERVER_STARTUP_MISTAKES))
def test_server_configuration_mistakes_found_at_startup_exit_2(tmp_path: Path, case: str) -> None:
    extra, message = SERVER_STARTUP_MISTAKES[case]
    data: dict = {"server": {"data_dir": str(tmp_path / "data"), "address": "127.0.0.1:0",
                             "auth": "a:b"},
                  "api": {"address": "127.0.0.1:0", "auth": "admin:x"}}
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    conf = write_toml(tmp_path / "rportd.conf", data)
    result = run("rportd", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == 2, output
    assert "invalid configuration" in output and message in output, output


@pytest.mark.parametrize("client", [
    {"tunnel_allowed": ["not-an-address/99"]},
    {"tunnel_allowed": ["", "127.0.0.1:22"]},  # not "anything": an error (RPort's too)
    {"remotes": ["0:0:0:0:0"]},
])
def test_agent_configuration_mistakes_found_at_startup_exit_2(tmp_path: Path,
                                                               client: dict) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", "data_dir": str(tmp_path / "d"),
                   **client},
        "connection": {"max_retry_count": 0}})
    result = run("rport", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == 2, output
    assert "client.remotes / tunnel_allowed: " in output, output


def test_agent_remote_commands_mistake_exits_2(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", "data_dir": str(tmp_path / "d")},
        "connection": {"max_retry_count": 0},
        "remote-commands": {"order": ["allow", "allow"]}})
    result = run("rport", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "remote-commands.order: must be ['allow', 'deny'] or ['deny', 'allow']" in output


@pytest.mark.parametrize("key, content", [
    ("api", '[{"username": "admin", "password": "x", "groups": ["Administrators"]},'
            ' {"username": "guest", "password": ""}]'),
    ("server", '{"agent1": "secret", "agent2": ""}'),
])
def test_empty_password_in_an_auth_file_exits_2(tmp_path: Path, key: str, content: str) -> None:
    """An empty password would let anyone in with the name alone."""
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(content)
    data: dict = {"server": {"data_dir": str(tmp_path / "data"), "address": "127.0.0.1:0",
                             "auth": "a:b"},
                  "api": {"address": "127.0.0.1:0", "auth": "admin:x"}}
    del data[key]["auth"]
    data[key]["auth_file"] = str(auth_file)
    result = run("rportd", "-c", str(write_toml(tmp_path / "rportd.conf", data)), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "has an empty password" in output, output


def test_server_port_in_use_exits_1(tmp_path: Path) -> None:
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = write_toml(tmp_path / "rportd.conf", {
            "server": {"data_dir": str(tmp_path / "data"), "address": f"127.0.0.1:{port}",
                       "auth": "a:b"},
            "api": {"address": "127.0.0.1:0", "auth": "admin:x"}})
        result = run("rportd", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"cannot listen on 127.0.0.1:{port}" in output, output


BAD_FILES = {
    # case: (bytes of the file, what the message says)
    "duplicated-key": (b'[server]\naddress = "127.0.0.1:0"\naddress = "127.0.0.1:1"\n',
                       r'Cannot overwrite a value \(at line 3, column \d+\)'),
    "duplicated-table": (b'[logging]\nlog_level = "info"\n[logging]\nlog_file = ""\n',
                         r"Cannot declare \('logging',\) twice \(at line 3"),
    "invalid-utf-8": (b'[logging]\nlog_file = "caf\xe9.log"\n',
                      r"not UTF-8 text: byte 0xe9 at line 2 col 16"),
    "deeply-nested": (b"[logging]\nx = " + b"[" * 5000 + b"]" * 5000 + b"\n", r"nested"),
}


@pytest.mark.parametrize("name", ["rportd", "rport"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unreadable_config_file_is_a_clear_message(tmp_path: Path, name: str, case: str) -> None:
    content, message = BAD_FILES[case]
    if name == "rport" and case == "duplicated-key":
        content = content.replace(b"[server]", b"[client]").replace(b"address", b"server")
        message = message.replace("address", "server")
    conf = tmp_path / "bad.conf"
    conf.write_bytes(content)
    result = run(name, "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    assert re.search(rf"{name}: invalid configuration in {re.escape(str(conf))}:\n"
                     rf"  {re.escape(str(conf))}: .*{message}", output), output


def test_agent_remote_commands_mistakes_are_all_reported(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:1", "auth": "a:b", "data_dir": str(tmp_path / "d")},
        "connection": {"max_retry_count": 0},
        "remote-commands": {"order": ["allow", "allow"], "allow": ["^/usr/bin/(", "^/bin/.*"],
                            "deny": ["[unclosed"], "alow": ["x"], "send_back_limit": "4M"}})
    result = run("rport", "-c", str(conf), home=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    for line in ("remote-commands.alow: unknown key",
                 "remote-commands.send_back_limit: expected an integer, got '4M'",
                 "remote-commands.order: must be ['allow', 'deny'] or ['deny', 'allow']",
                 "remote-commands.allow: invalid pattern '^/usr/bin/(': missing ),",
                 "remote-commands.deny: invalid pattern '[unclosed': unterminated character set"):
        assert f"  {line}" in output, output


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_server_data_dir_and_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"address": "127.0.0.1:0", "data_dir": str(data)},
        "api": {"address": "127.0.0.1:0"}})
    proc = Proc(command("rportd") + ["-c", str(conf)], tmp_path / "rportd.log")
    try:
        proc.wait_log(r"API listening on")
        assert _mode(data) == 0o700
        files = sorted(p.name for p in data.iterdir())
        for name in ("rportd-key.pem", "rportd-fingerprint.txt", "rportd-cert.pem",
                     "rportd-tls-key.pem", "rportd.db", "rportd-agent-auth", "rportd-api-auth"):
            assert name in files, files
        assert {p.name: oct(_mode(p)) for p in data.iterdir() if p.is_file()} == {
            name: oct(0o600) for name in files}
    finally:
        proc.stop()
    # An existing directory others can read: a warning (it is left as it is); files already
    # there from an older version are made private.
    data.chmod(0o755)
    (data / "rportd-cert.pem").chmod(0o644)
    proc = Proc(command("rportd") + ["-c", str(conf)], tmp_path / "rportd-2.log")
    try:
        proc.wait_log(r"API listening on")
        assert re.search(rf"WARNING rport\.server: data directory {re.escape(str(data))} can be "
                         rf"accessed by other users \(mode 0755\)", proc.log()), proc.log()
        assert _mode(data) == 0o755
        assert all(_mode(p) == 0o600 for p in data.iterdir() if p.is_file())
    finally:
        proc.stop()


def test_agent_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "agent" / "data"
    for attempt in (1, 2):
        conf = write_toml(tmp_path / "rport.conf", {
            "client": {"server": "127.0.0.1:1", "auth": "a:b", "data_dir": str(data)},
            "connection": {"max_retry_count": 0}})
        result = run("rport", "-c", str(conf), home=tmp_path)
        assert result.returncode == 1, result.stderr  # nobody listens on port 1: gives up
        if attempt == 1:
            assert _mode(data) == 0o700
            assert "can be accessed by other users" not in result.stderr
            data.chmod(0o750)
        else:
            assert f"data directory {data} can be accessed by other users (mode 0750)" \
                in result.stderr, result.stderr


def test_the_printed_agent_command_runs_as_printed(tmp_path: Path) -> None:
    """On its defaults (agents on 0.0.0.0, generated credentials) rportd prints a command that
    attaches an agent when pasted as it is: the installed agent's path, and an address agents
    can reach (not 0.0.0.0), which GET /status shows too."""
    conf = write_toml(tmp_path / "rportd.conf", {
        "server": {"address": "0.0.0.0:0", "data_dir": str(tmp_path / "data")},
        "api": {"address": "127.0.0.1:0", "auth": "admin:foobaz"}})
    server = Proc(command("rportd") + ["-c", str(conf)], tmp_path / "rportd.log")
    agent: Proc | None = None
    try:
        printed = server.wait_log(r"attach an agent with: (.*)").group(1)
        api = re.search(r"API listening on (http://\S+)", server.log())
        assert api, server.log()
        argv = shlex.split(printed)
        assert Path(argv[0]).is_file() and Path(argv[0]).name == "rport", printed
        url = argv[-1]
        assert url.startswith("https://") and "0.0.0.0" not in url, printed
        status = httpx.get(f"{api.group(1)}/api/v1/status", auth=("admin", "foobaz")).json()
        assert status["data"]["connect_url"] == [url]
        # The command as printed; its data directory (by default /var/lib/rport for root) is
        # kept in the test's directory through the environment.
        agent = Proc(argv, tmp_path / "rport.log", env={
            "HOME": str(tmp_path / "home"), "RPORT_CLIENT_DATA_DIR": str(tmp_path / "agent")})
        agent.wait_log(rf"connected to wss://{re.escape(url[len('https://'):])}/ as client")
        server.wait_log(r"client \S+ \(.*\) connected from")
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
