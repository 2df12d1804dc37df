"""The seed's examples (docs "On-demand tunnels": status and clients), run with real curl and jq
against a real rportd and a real agent started exactly as the seed does."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .procs import Server

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                                reason="curl and jq are installed by .ci/run")


def sh(cmd: str) -> str:
    return subprocess.run(["bash", "-c", cmd], check=True, capture_output=True, text=True,
                          timeout=30).stdout


def test_status_and_clients_with_curl_and_jq(server: Server, make_agent) -> None:
    base = server.api_url
    make_agent(server, "my-client-1", args=["--tag", "Linux", "--tag", "Office Berlin",
                                            "--name", "My Test VM"])
    status = json.loads(sh(f"curl -s -u admin:foobaz {base}/api/v1/status | jq"))["data"]
    assert status["fingerprint"] == server.fingerprint
    assert status["clients_connected"] == 1 and status["clients_disconnected"] == 0
    assert isinstance(status["connect_url"], list) and status["version"]

    clients = json.loads(sh(f"curl -s -u admin:foobaz {base}/api/v1/clients | jq"))["data"]
    (client,) = clients
    seed_fields = ("id name os os_arch os_family os_kernel os_full_name os_version "
                   "os_virtualization_system os_virtualization_role cpu_family cpu_model "
                   "cpu_model_name cpu_vendor num_cpus mem_total timezone hostname ipv4 ipv6 tags "
                   "version address tunnels labels connection_state disconnected_at").split()
    assert set(seed_fields) <= set(client)
    assert client["id"] == "my-client-1" and client["name"] == "My Test VM"
    assert client["tags"] == ["Linux", "Office Berlin"]
    assert client["num_cpus"] >= 1 and client["mem_total"] > 0 and client["os_kernel"] == "linux"
    assert client["connection_state"] == "connected" and client["tunnels"] == []

    # The seed's jq selection of one client's tunnels.
    out = sh(f"curl -s -u admin:foobaz -X GET {base}/api/v1/clients "
             "| jq '.data[] | select(.id==\"my-client-1\")|.tunnels'")
    assert json.loads(out) == []
