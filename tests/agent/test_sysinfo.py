"""The agent's system facts: real values from this machine, in RPort's names and formats."""

from __future__ import annotations

import ipaddress
import os
import platform
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from rport.agent import sysinfo
from rport.agent.sysinfo import gather

STR_KEYS = (
    "os", "os_arch", "os_family", "os_kernel", "os_full_name", "os_version",
    "os_virtualization_system", "os_virtualization_role",
    "cpu_family", "cpu_model", "cpu_model_name", "cpu_vendor", "timezone", "hostname",
)
INT_KEYS = ("num_cpus", "mem_total")
LIST_KEYS = ("ipv4", "ipv6")


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return gather()


def test_exact_keys_and_types(info: dict[str, Any]) -> None:
    assert set(info) == set(STR_KEYS + INT_KEYS + LIST_KEYS)
    for key in STR_KEYS:
        assert isinstance(info[key], str), key
    for key in INT_KEYS:
        assert type(info[key]) is int, key
    for key in LIST_KEYS:
        assert isinstance(info[key], list), key
        assert all(isinstance(item, str) for item in info[key]), key


def test_counts_and_names(info: dict[str, Any]) -> None:
    assert info["num_cpus"] == os.cpu_count()
    assert info["mem_total"] > 0
    assert info["hostname"] == socket.gethostname()


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux-specific values")
def test_linux_kernel_and_uname(info: dict[str, Any]) -> None:
    assert info["os_kernel"] == "linux"
    assert info["os"].startswith(f"Linux {os.uname().nodename} {os.uname().release} ")
    assert info["os_full_name"] not in ("", "unknown")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="only on x86_64")
def test_arch_uses_go_naming(info: dict[str, Any]) -> None:
    assert info["os_arch"] == "amd64"


def test_timezone_format(info: dict[str, Any]) -> None:
    assert re.match(r"^\S+ \(UTC[+-]\d\d:\d\d\)$", info["timezone"]), info["timezone"]


def test_addresses_sorted_unique_without_loopback(info: dict[str, Any]) -> None:
    for key, version in (("ipv4", 4), ("ipv6", 6)):
        ips = [ipaddress.ip_address(a) for a in info[key]]
        assert all(ip.version == version for ip in ips), key
        assert not any(ip.is_loopback for ip in ips), key
        assert ips == sorted(set(ips)), key
    assert all("%" not in a for a in info["ipv6"])


@pytest.mark.skipif(platform.system() != "Linux", reason="read without psutil and distro on Linux")
def test_linux_facts_agree_with_psutil_and_distro(info: dict[str, Any]) -> None:
    """On Linux the facts come from the standard library (os-release, sysconf, netlink): they
    are what psutil and distro report."""
    import distro
    import psutil

    assert info["mem_total"] == psutil.virtual_memory().total
    assert info["os_full_name"] == f"{distro.name()} {distro.version()}".strip()
    assert info["os_version"] == (distro.version() or platform.release())
    expected: dict[int, set[Any]] = {4: set(), 6: set()}
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(addr.address.split("%", 1)[0])
                if not ip.is_loopback:
                    expected[ip.version].add(ip)
    assert info["ipv4"] == [str(ip) for ip in sorted(expected[4])]
    assert info["ipv6"] == [str(ip) for ip in sorted(expected[6])]


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux-specific values")
def test_linux_facts_without_the_platform_module_are_platforms() -> None:
    # rport.agent.sysinfo reads on Linux what the platform module would give (which it does not
    # import there: tests/agent/test_footprint.py).
    assert sysinfo._uname("system") == platform.system() == "Linux"
    assert sysinfo._uname("release") == platform.release()
    assert sysinfo._uname("machine") == platform.machine()
    assert sysinfo._libc_name() == platform.libc_ver()[0]
    try:
        expected: dict[str, str] | None = platform.freedesktop_os_release()
    except OSError:
        expected = None
    if expected is not None:
        assert sysinfo.os_release() == expected


OS_RELEASE = """NAME="Some Linux"
ID=some
ID_LIKE='debian ubuntu'
  VERSION_ID="1.2"
PRETTY_NAME="Some \\"quoted\\" \\$name \\\\ `x`"
# a comment
BAD LINE=1
EMPTY=
MISMATCHED="quote'
UNICODE="Ünïcode"
"""


def test_os_release_is_read_as_platform_reads_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "os-release").write_text(OS_RELEASE, encoding="utf-8")
    monkeypatch.setattr(sysinfo, "_OS_RELEASE_FILES", (str(tmp_path / "absent"),
                                                       str(tmp_path / "os-release")))
    ours = sysinfo.os_release()
    with open(tmp_path / "os-release", encoding="utf-8") as file:
        assert ours == platform._parse_os_release(file)  # type: ignore[attr-defined]
    assert ours["PRETTY_NAME"] == 'Some "quoted" $name \\ `x`' and ours["ID_LIKE"] == "debian ubuntu"
    monkeypatch.setattr(sysinfo, "_OS_RELEASE_FILES", (str(tmp_path / "absent"),))
    with pytest.raises(OSError):
        sysinfo.os_release()
