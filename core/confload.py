"""Loading configuration: TOML files read with the standard library's ``tomllib`` (a reader is
all it takes; tomlkit, which also edits files in place, costs an agent 0.8 MiB), structured into
frozen classes (attrs classes, or dataclasses on the agent's side) by one cattrs converter that
forbids unknown keys, layered defaults < file < environment < flags.

The flat classes that configurations are made of (fields of type ``str``, ``int``, ``bool``,
``Duration``, ``list[str]`` and ``dict[str, str]``) are structured by :func:`structure` itself,
exactly as that converter would (``tests/core/test_confload.py`` compares the two): cattrs and
what it imports cost an agent about 1 MiB for as long as it runs (docs/performance.md, "Agent
memory"). Any other class, or data of a shape the lean path does not model, goes to the
converter, made at first use. Nothing here imports attrs: the agent does without it (an attrs
class comes with attrs loaded by its own module).

A bad configuration is reported as every problem found, one ``key: message`` line each, by
:class:`ConfigError`; the user never sees a raw exception group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

if TYPE_CHECKING:
    import cattrs

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


@dataclasses.dataclass(frozen=True, slots=True)
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


def _strict_str(value: Any, _: Any = None) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _strict_int(value: Any, _: Any = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _strict_bool(value: Any, _: Any = None) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _strict_str_list(value: Any, _: Any = None) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {value!r}")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"expected a list of strings, got {bad[0]!r} in it")
    return list(value)


def _duration(value: Any, _: Any = None) -> Duration:
    return parse_duration(value)


def make_converter() -> cattrs.Converter:
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(Duration, _duration)
    conv.register_unstructure_hook(Duration, float)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook_func(lambda t: t == list[str], _strict_str_list)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)
    return conv


@functools.cache
def _converter() -> cattrs.Converter:
    """The one converter, made at first use."""
    return make_converter()


class _Unmodelled(Exception):
    """The lean path does not model this class or this data: the converter takes it."""


# The field types that the lean path structures itself, each with the converter's hook for it
# (list[str] and dict[str, str] are handled in _lean_value).
_SCALARS: dict[Any, Callable[[Any], Any]] = {
    str: _strict_str, int: _strict_int, bool: _strict_bool, Duration: _duration}


def _class_fields(cls: Any) -> list[tuple[str, Any, bool, bool]] | None:
    """``(name, type, required, plain)`` of each field of an attrs class or a dataclass, or None
    for another class. Types are resolved as the converter resolves them (left as written if
    they do not resolve); ``plain`` is False for a field that the lean path does not structure
    (not in ``__init__``, or under another name)."""
    if not isinstance(cls, type):
        return None
    if getattr(cls, "__attrs_attrs__", None) is not None:
        import attrs  # loaded already, by the class's own module

        with contextlib.suppress(Exception):
            attrs.resolve_types(cls)  # string annotations
        return [(f.name, f.type, f.default is attrs.NOTHING, f.init and f.alias == f.name)
                for f in attrs.fields(cls)]
    if dataclasses.is_dataclass(cls):
        try:
            hints = typing.get_type_hints(cls)
        except Exception:
            hints = {}
        return [(f.name, hints.get(f.name, f.type),
                 f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                 f.init) for f in dataclasses.fields(cls)]
    return None


def _lean_fields(cls: Any) -> list[tuple[str, Any, bool]] | None:
    """``(name, type, required)`` of each field of ``cls``, or None if the lean path does not
    cover the class (neither attrs nor a dataclass, a field it does not structure, or of
    another type)."""
    fields = _class_fields(cls)
    if fields is None:
        return None
    for _, ftype, _, plain in fields:
        if not plain or not (any(ftype is scalar for scalar in _SCALARS) or ftype == list[str]
                             or ftype == dict[str, str]):
            return None
    return [(name, ftype, required) for name, ftype, required, _ in fields]


def _lean_value(value: Any, ftype: Any, path: str, problems: list[str]) -> Any:
    """One field's value; its problems are appended to ``problems`` (the value is then None)."""
    try:
        if ftype == list[str]:
            return _strict_str_list(value)
        if ftype != dict[str, str]:
            return _SCALARS[ftype](value)
        items = list(value.items())
    except Exception as exc:  # worded as the converter's would be (a list for a table, say)
        problems += _problem(exc, path)
        return None
    if not all(isinstance(key, str) for key, _ in items):
        raise _Unmodelled
    problems += [f"{path}.{key}: expected a string, got {item!r}"
                 for key, item in items if not isinstance(item, str)]
    return dict(items)


def _lean_structure(data: dict[str, Any], cls: type[C], prefix: str) -> C:
    fields = _lean_fields(cls)
    if fields is None or not all(isinstance(key, str) for key in data):
        raise _Unmodelled
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, ftype, required in fields:
        path = _join(prefix, name)
        if name in data:
            values[name] = _lean_value(data[name], ftype, path, problems)
        elif required:
            problems.append(f"{path}: required")
    where = f"{prefix}." if prefix else ""
    unknown = sorted(set(data) - {name for name, _, _ in fields})
    problems += [f"{where}{key}: unknown key" for key in unknown]
    if problems:
        raise ConfigError(problems)
    try:
        return cls(**values)
    except Exception as exc:  # a validator of the class, reported as the converter reports it
        raise ConfigError(_problem(exc, prefix)) from None


def structure(data: Mapping[str, Any], cls: type[C], *, prefix: str = "") -> C:
    """Structure ``data`` into ``cls``; every problem found is in the :class:`ConfigError`."""
    try:
        return _lean_structure(dict(data), cls, prefix)
    except _Unmodelled:
        return _converter_structure(data, cls, prefix)


def _converter_structure(data: Mapping[str, Any], cls: type[C], prefix: str) -> C:
    from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

    try:
        return _converter().structure(dict(data), cls)
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
    from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

    if isinstance(exc, ForbiddenExtraKeysError):
        where = f"{path}." if path else ""
        return [f"{where}{key}: unknown key" for key in sorted(exc.extra_fields)]
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        lines: list[str] = []
        for sub in exc.exceptions:
            note = _note_of(sub)
            lines += _flatten(sub, _join(path, note) if note is not None else path)
        return lines
    return _problem(exc, path)


def _problem(exc: BaseException, path: str) -> list[str]:
    """The line for one error raised while structuring the value at ``path``."""
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
        for key, ftype, _, _ in _class_fields(cls) or ():
            name = f"{prefix}_{section}_{key}".upper().replace("-", "_")
            if name in environ:
                out.setdefault(section, {})[key] = _env_value(environ[name], ftype)
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
    return _converter().unstructure(obj)
