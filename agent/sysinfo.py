"""System facts the agent reports to rportd when it registers.

The server shows them in ``GET /api/v1/clients`` under RPort's own field names and in
RPort's formats (``os``, ``os_arch``, ``os_family``, ``cpu_model_name``, ``timezone``...).
Everything is read in-process (psutil, distro, platform, /proc and /sys); no process is
spawned. :func:`gather` is blocking (it reads files), so async code should run it in a
thread, e.g. ``await asyncio.to_thread(gather)``. It never raises: a field that cannot be
determined is ``"unknown"`` (``0`` for numbers, ``[]`` for lists).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Callable

import distro
import psutil

log = logging.getLogger(__name__)

UNKNOWN = "unknown"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "i386": "386", "i686": "386", "x86": "386", "armv7l": "arm", "armv6l": "arm"}
_FAMILY = {"debian": "debian", "ubuntu": "debian", "raspbian": "debian", "linuxmint": "debian",
           "rhel": "rhel", "centos": "rhel", "rocky": "rhel", "almalinux": "rhel", "ol": "rhel",
           "amzn": "rhel", "scientific": "rhel", "fedora": "fedora", "alpine": "alpine",
           "arch": "arch", "manjaro": "arch", "suse": "suse", "opensuse": "suse", "sles": "suse"}
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
# (substring of DMI product_name/sys_vendor, virtualization system), checked in order.
_DMI_HINTS = (("KVM", "kvm"), ("QEMU", "kvm"), ("VMware", "vmware"), ("VirtualBox", "vbox"),
              ("Xen", "xen"), ("Microsoft Corporation", "hyperv"), ("Hyper-V", "hyperv"))
_CPU_KEYS = {"cpu_family": "cpu family", "cpu_model": "model",
             "cpu_model_name": "model name", "cpu_vendor": "vendor_id"}


def _is_linux() -> bool:
    return platform.system() == "Linux"


def _read(path: str) -> str:
    """A file's text, or "" when it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _os_uname_string() -> str:
    if not hasattr(os, "uname") or not _is_linux():
        return platform.platform()
    u = os.uname()
    text = f"{u.sysname} {u.nodename} {u.release} {u.version} {u.machine}"
    return text + " GNU/Linux" if platform.libc_ver()[0] == "glibc" else text


def _os_arch() -> str:
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine) or UNKNOWN


def _os_family() -> str:
    dist_id = distro.id().lower()
    for name in [dist_id, *distro.like().lower().split()]:
        key = "opensuse" if name.startswith("opensuse") else name
        if key in _FAMILY:
            return _FAMILY[key]
    return dist_id or platform.system().lower() or UNKNOWN


def _os_full_name() -> str:
    if _is_linux() and distro.name():
        return f"{distro.name()} {distro.version()}".strip()
    return f"{platform.system()} {platform.release()}".strip() or UNKNOWN


def _os_version() -> str:
    return (distro.version() if _is_linux() else "") or platform.release() or UNKNOWN


def _virtualization() -> tuple[str, str]:
    """(system, role) like gopsutil's VirtualizationWithContext; ("", "") on bare metal."""
    if not _is_linux():
        return "", ""
    if Path("/.dockerenv").exists() or "docker" in _read("/proc/1/cgroup"):
        return "docker", "guest"
    dmi = _read("/sys/class/dmi/id/product_name") + " " + _read("/sys/class/dmi/id/sys_vendor")
    for hint, system in _DMI_HINTS:
        if hint in dmi:
            return system, "guest"
    if Path("/proc/xen").exists():
        return "xen", "guest"
    if any(line.startswith("flags") and " hypervisor" in line
           for line in _read("/proc/cpuinfo").splitlines()):
        return "", "guest"
    return "", ""


def _first_cpu() -> dict[str, str]:
    """Key/value pairs of the first processor block in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_fields() -> dict[str, str]:
    if not _is_linux():
        return {name: UNKNOWN for name in _CPU_KEYS} | {
            "cpu_model_name": platform.processor() or UNKNOWN}
    cpu = _first_cpu()
    out = {name: cpu.get(key) or UNKNOWN for name, key in _CPU_KEYS.items()}
    out["cpu_vendor"] = _VENDORS.get(out["cpu_vendor"], out["cpu_vendor"])
    return out


def _num_cpus() -> int:
    return psutil.cpu_count(logical=True) or os.cpu_count() or 0


def _timezone() -> str:
    """Go layout "MST (UTC-07:00)", e.g. "CEST (UTC+02:00)"."""
    now = time.localtime()
    offset = now.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    utc = f"UTC{sign}{hours:02d}:{minutes:02d}"
    abbr = time.strftime("%Z", now) or utc
    return f"{abbr} ({utc})"


def _addresses() -> tuple[list[str], list[str]]:
    """(ipv4, ipv6) of all interfaces, loopback excluded, sorted and unique."""
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(addr.address.split("%", 1)[0])
            except ValueError:
                continue
            if ip.is_loopback:
                continue
            (v4 if isinstance(ip, ipaddress.IPv4Address) else v6).add(ip)  # type: ignore[arg-type]
    return [str(ip) for ip in sorted(v4)], [str(ip) for ip in sorted(v6)]


def _safe(name: str, fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:  # one broken fact must not cost the others
        log.debug("cannot determine %s", name, exc_info=True)
        return default


def gather() -> dict[str, Any]:
    """The system facts, keyed by RPort's field names. Blocking; never raises."""
    virt = _safe("virtualization", _virtualization, (UNKNOWN, UNKNOWN))
    cpu = _safe("cpu", _cpu_fields, {name: UNKNOWN for name in _CPU_KEYS})
    ipv4, ipv6 = _safe("addresses", _addresses, ([], []))
    return {
        "os": _safe("os", _os_uname_string, UNKNOWN),
        "os_arch": _safe("os_arch", _os_arch, UNKNOWN),
        "os_family": _safe("os_family", _os_family, UNKNOWN),
        "os_kernel": _safe("os_kernel", lambda: platform.system().lower() or UNKNOWN, UNKNOWN),
        "os_full_name": _safe("os_full_name", _os_full_name, UNKNOWN),
        "os_version": _safe("os_version", _os_version, UNKNOWN),
        "os_virtualization_system": virt[0],
        "os_virtualization_role": virt[1],
        **cpu,
        "num_cpus": _safe("num_cpus", _num_cpus, 0),
        "mem_total": _safe("mem_total", lambda: int(psutil.virtual_memory().total), 0),
        "timezone": _safe("timezone", _timezone, UNKNOWN),
        "hostname": _safe("hostname", lambda: socket.gethostname() or UNKNOWN, UNKNOWN),
        "ipv4": ipv4,
        "ipv6": ipv6,
    }
