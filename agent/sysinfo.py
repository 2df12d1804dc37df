"""System facts the agent reports to rportd when it registers.

The server shows them in ``GET /api/v1/clients`` under RPort's own field names and in
RPort's formats (``os``, ``os_arch``, ``os_family``, ``cpu_model_name``, ``timezone``...).
Everything is read in-process; no process is spawned. On Linux the standard library does it all
(``os.uname``, /etc/os-release read as :func:`platform.freedesktop_os_release` reads it, /proc
and /sys, the memory size from ``sysconf``, the addresses from the kernel over netlink);
``platform``, ``distro`` and ``psutil`` are imported only where that is not enough (no
os-release file, another system), since the agent keeps whatever it imports for as long as it
runs (together 1 MiB, see docs/performance.md). :func:`gather` is blocking (it reads files), so async code should run it
in a thread, e.g. ``await asyncio.to_thread(gather)``. It never raises: a field that cannot be
determined is ``"unknown"`` (``0`` for numbers, ``[]`` for lists).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import struct
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

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


def _platform() -> ModuleType:
    """The platform module, for the systems where ``os.uname`` does not say it all."""
    import platform

    return platform


def _uname(field: str) -> str:
    """``platform.system()``, ``.release()`` or ``.machine()``: ``os.uname()``'s field where
    there is one (what platform reads too)."""
    if hasattr(os, "uname"):
        return str(getattr(os.uname(), {"system": "sysname"}.get(field, field)))
    return str(getattr(_platform(), field)())


def _is_linux() -> bool:
    return _uname("system") == "Linux"


def _libc_name() -> str:
    """``platform.libc_ver()[0]``, which first asks ``confstr`` ("glibc 2.36") as here."""
    try:
        parts = os.confstr("CS_GNU_LIBC_VERSION").split(maxsplit=1)  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        parts = []
    return parts[0] if len(parts) == 2 else _platform().libc_ver()[0]


# platform.freedesktop_os_release's reading of os-release(5), on the files it tries in order.
_OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
_OS_RELEASE_LINE = re.compile(
    "^(?P<name>[a-zA-Z0-9_]+)=(?P<quote>[\"\']?)(?P<value>.*)(?P=quote)$")
_OS_RELEASE_ESCAPE = re.compile(r"\\([\\\$\"\'`])")


def os_release() -> dict[str, str]:
    """/etc/os-release (or /usr/lib/os-release) as ``platform.freedesktop_os_release()`` gives
    it; OSError when neither can be read."""
    error = None
    for candidate in _OS_RELEASE_FILES:
        try:
            with open(candidate, encoding="utf-8") as file:
                info = {"NAME": "Linux", "ID": "linux", "PRETTY_NAME": "Linux"}
                for line in file:
                    match = _OS_RELEASE_LINE.match(line)
                    if match is not None:
                        info[match["name"]] = _OS_RELEASE_ESCAPE.sub(r"\1", match["value"])
                return info
        except OSError as exc:
            error = exc.errno
    raise OSError(error, f"Unable to read files {', '.join(_OS_RELEASE_FILES)}")


def _read(path: str) -> str:
    """A file's text, or "" when it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _os_uname_string() -> str:
    if not hasattr(os, "uname") or not _is_linux():
        return _platform().platform()
    u = os.uname()
    text = f"{u.sysname} {u.nodename} {u.release} {u.version} {u.machine}"
    return text + " GNU/Linux" if _libc_name() == "glibc" else text


def _os_arch() -> str:
    machine = _uname("machine").lower()
    return _GOARCH.get(machine, machine) or UNKNOWN


def _release() -> dict[str, str]:
    """The distribution's id, id_like, name and version: os-release's ID, ID_LIKE, NAME and
    VERSION_ID, as ``distro`` reports them (which is asked only when there is no os-release,
    for its older sources: lsb_release, /etc/*-release)."""
    if not _is_linux():
        return {"id": "", "like": "", "name": "", "version": ""}
    try:
        info = os_release()
    except OSError:
        import distro
        return {"id": distro.id(), "like": distro.like(), "name": distro.name(),
                "version": distro.version()}
    return {"id": info.get("ID", "linux"), "like": info.get("ID_LIKE", ""),
            "name": info.get("NAME", ""), "version": info.get("VERSION_ID", "")}


def _os_family(release: dict[str, str]) -> str:
    dist_id = release["id"].lower()
    for name in [dist_id, *release["like"].lower().split()]:
        key = "opensuse" if name.startswith("opensuse") else name
        if key in _FAMILY:
            return _FAMILY[key]
    return dist_id or _uname("system").lower() or UNKNOWN


def _os_full_name(release: dict[str, str]) -> str:
    if release["name"]:
        return f"{release['name']} {release['version']}".strip()
    return f"{_uname('system')} {_uname('release')}".strip() or UNKNOWN


def _os_version(release: dict[str, str]) -> str:
    return release["version"] or _uname("release") or UNKNOWN


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
            "cpu_model_name": _platform().processor() or UNKNOWN}
    cpu = _first_cpu()
    out = {name: cpu.get(key) or UNKNOWN for name, key in _CPU_KEYS.items()}
    out["cpu_vendor"] = _VENDORS.get(out["cpu_vendor"], out["cpu_vendor"])
    return out


def _num_cpus() -> int:
    return os.cpu_count() or 0


def _mem_total() -> int:
    if _is_linux():  # the kernel's totalram, /proc/meminfo's MemTotal
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    import psutil
    return int(psutil.virtual_memory().total)


def _timezone() -> str:
    """Go layout "MST (UTC-07:00)", e.g. "CEST (UTC+02:00)"."""
    now = time.localtime()
    offset = now.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    utc = f"UTC{sign}{hours:02d}:{minutes:02d}"
    abbr = time.strftime("%Z", now) or utc
    return f"{abbr} ({utc})"


# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type
_RTM_NEWADDR, _RTM_GETADDR, _NLMSG_ERROR, _NLMSG_DONE = 20, 22, 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFA_ADDRESS, _IFA_LOCAL = 1, 2


def _netlink_addresses() -> list[str]:
    """Every address of every interface, as ``ip address`` lists them (RTM_GETADDR dump)."""
    found: list[str] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:  # NETLINK_ROUTE
        sock.settimeout(5)
        sock.bind((0, 0))
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(_NLMSG.pack(_NLMSG.size + len(body), _RTM_GETADDR,
                              _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
        while True:
            data = sock.recv(1 << 16)
            pos = 0
            while pos + _NLMSG.size <= len(data):
                length, kind = _NLMSG.unpack_from(data, pos)[:2]
                if length < _NLMSG.size or pos + length > len(data):
                    raise OSError("malformed netlink message")
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    raise OSError("netlink refused the address dump")
                if kind == _RTM_NEWADDR:
                    family = data[pos + _NLMSG.size]
                    attrs: dict[int, bytes] = {}
                    at, end = pos + _NLMSG.size + _IFADDRMSG.size, pos + length
                    while at + _RTATTR.size <= end:
                        size, attr = _RTATTR.unpack_from(data, at)
                        if size < _RTATTR.size or at + size > end:
                            break
                        attrs[attr] = data[at + _RTATTR.size:at + size]
                        at += (size + 3) & ~3
                    # IFA_LOCAL is the interface's own address where IFA_ADDRESS is the peer's
                    # (point-to-point links).
                    raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
                    if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                        found.append(socket.inet_ntop(family, raw))
                pos += (length + 3) & ~3


def _interface_addresses() -> list[str]:
    if _is_linux():
        try:
            return _netlink_addresses()
        except OSError:
            log.debug("netlink address dump failed; asking psutil", exc_info=True)
    import psutil
    return [addr.address for addrs in psutil.net_if_addrs().values() for addr in addrs
            if addr.family in (socket.AF_INET, socket.AF_INET6)]


def _addresses() -> tuple[list[str], list[str]]:
    """(ipv4, ipv6) of all interfaces, loopback excluded, sorted and unique."""
    v4: set[ipaddress.IPv4Address] = set()
    v6: set[ipaddress.IPv6Address] = set()
    for address in _interface_addresses():
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
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
    release = _safe("release", _release, {"id": "", "like": "", "name": "", "version": ""})
    virt = _safe("virtualization", _virtualization, (UNKNOWN, UNKNOWN))
    cpu = _safe("cpu", _cpu_fields, {name: UNKNOWN for name in _CPU_KEYS})
    ipv4, ipv6 = _safe("addresses", _addresses, ([], []))
    return {
        "os": _safe("os", _os_uname_string, UNKNOWN),
        "os_arch": _safe("os_arch", _os_arch, UNKNOWN),
        "os_family": _safe("os_family", lambda: _os_family(release), UNKNOWN),
        "os_kernel": _safe("os_kernel", lambda: _uname("system").lower() or UNKNOWN, UNKNOWN),
        "os_full_name": _safe("os_full_name", lambda: _os_full_name(release), UNKNOWN),
        "os_version": _safe("os_version", lambda: _os_version(release), UNKNOWN),
        "os_virtualization_system": virt[0],
        "os_virtualization_role": virt[1],
        **cpu,
        "num_cpus": _safe("num_cpus", _num_cpus, 0),
        "mem_total": _safe("mem_total", _mem_total, 0),
        "timezone": _safe("timezone", _timezone, UNKNOWN),
        "hostname": _safe("hostname", lambda: socket.gethostname() or UNKNOWN, UNKNOWN),
        "ipv4": ipv4,
        "ipv6": ipv6,
    }
