"""Loading configuration: TOML files read with the standard library's ``tomllib`` (a reader is
all it takes; tomlkit, which also edits files in place, costs an agent 0.8 MiB), structured into
frozen attrs classes by one cattrs converter that forbids unknown keys, layered defaults < file <
environment < flags.

A bad configuration is reported as every problem found, one ``key: message`` line each, by
:class:`ConfigError`; the user never sees a raw exception group.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

C = TypeVar("C")


class ConfigError(Exception):
    """Every problem found in a configuration, each as ``key: message``."""

    def __init__(self, problems: Iterable[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))

    def render(self) -> str:
        head = f"invalid configuration{f' in {self.source}' if self.source else ''}:"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class Duration(float):
    """Seconds, written in config as a number of seconds or a Go duration such as ``1h30m``."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value!r} must not be negative")
        return Duration(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    if text in ("0", ""):
        return Duration(0)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f'invalid duration "{value}" (use e.g. 30s, 5m, 1h30m)')
    return Duration(total)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


@attrs.frozen
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: str, *, default_host: str = "0.0.0.0") -> HostPort:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port``."""
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f'invalid address "{value}" (use [ipv6]:port)')
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise ValueError(f'invalid address "{value}" (write IPv6 addresses as [ipv6]:port)')
    else:
        host, port = "", text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'invalid port in address "{value}"')
    return HostPort(host or default_host, int(port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(Duration, lambda v, _: parse_duration(v))
    conv.register_unstructure_hook(Duration, float)

    def strict_str(value: Any, _: type) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value

    def strict_int(value: Any, _: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value

    def strict_bool(value: Any, _: type) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

    def strict_str_list(value: Any, _: type) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of strings, got {value!r}")
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ValueError(f"expected a list of strings, got {bad[0]!r} in it")
        return list(value)

    conv.register_structure_hook(str, strict_str)
    conv.register_structure_hook_func(lambda t: t == list[str], strict_str_list)
    conv.register_structure_hook(int, strict_int)
    conv.register_structure_hook(bool, strict_bool)
    return conv


CONVERTER = make_converter()


def structure(data: Mapping[str, Any], cls: type[C], *, prefix: str = "") -> C:
    """Structure ``data`` into ``cls``, turning cattrs' exception groups into :class:`ConfigError`."""
    try:
        return CONVERTER.structure(dict(data), cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        raise ConfigError(_flatten(exc, prefix)) from None


def structure_sections(data: Mapping[str, Any], sections: Mapping[str, type],
                       problems: list[str]) -> dict[str, Any]:
    """Structure each ``[section]`` table of ``data`` into its class; every problem found is
    appended to ``problems`` (``section: must be a table``, ``section.key: ...``)."""
    out: dict[str, Any] = {}
    for name, cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, Mapping):
            problems.append(f"{name}: must be a table")
            continue
        try:
            out[name] = structure(raw, cls, prefix=name)
        except ConfigError as exc:
            problems += exc.problems
    return out


def _flatten(exc: BaseException, path: str) -> list[str]:
    """Flatten a cattrs validation error tree into ``key: message`` lines."""
    if isinstance(exc, ForbiddenExtraKeysError):
        where = f"{path}." if path else ""
        return [f"{where}{key}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        lines: list[str] = []
        for sub in exc.exceptions:
            note = _note_of(sub)
            lines += _flatten(sub, _join(path, note) if note is not None else path)
        return lines
    if isinstance(exc, KeyError):
        return [f"{path}: required"]
    message = str(exc) if isinstance(exc, ValueError) else f"invalid value ({exc})"
    return [f"{path or 'config'}: {message}"]


def _note_of(exc: BaseException) -> str | int | None:
    for note in getattr(exc, "__notes__", []):
        name = getattr(note, "name", None)
        if name is not None:
            return name
        index = getattr(note, "index", None)
        if index is not None:
            return index
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def read_toml(path: Path) -> dict[str, Any]:
    """The file as plain Python data; a syntax error is a :class:`ConfigError` naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} "
                           f"col {column} (save the file as UTF-8)"], source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # duplicated keys and tables too, with their line
        raise ConfigError([f"{path}: {exc}"], source=str(path)) from None
    except RecursionError:
        raise ConfigError([f"{path}: arrays or tables nested too deeply"],
                          source=str(path)) from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, other values replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def env_overrides(prefix: str, sections: Mapping[str, type], environ: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """``{PREFIX}_{SECTION}_{KEY}`` variables for the string, number and boolean keys of each
    section, e.g. ``RPORTD_API_AUTH=admin:secret``. Values are given as strings and parsed as
    TOML scalars where they look like one (numbers, booleans), else kept as strings."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for section, cls in sections.items():
        for field in attrs.fields(cls):
            name = f"{prefix}_{section}_{field.name}".upper().replace("-", "_")
            if name in environ:
                out.setdefault(section, {})[field.name] = _env_value(environ[name], field.type)
    return out


def _env_value(raw: str, ftype: Any) -> Any:
    if ftype in (bool, "bool"):
        return {"true": True, "1": True, "false": False, "0": False}.get(raw.lower(), raw)
    if ftype in (int, "int"):
        return int(raw) if raw.lstrip("-").isdigit() else raw
    if ftype in (list[str], "list[str]"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def unstructure(obj: Any) -> Any:
    return CONVERTER.unstructure(obj)
