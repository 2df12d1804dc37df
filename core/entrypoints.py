"""The entry points of the installed distributions, found as ``importlib.metadata`` finds them,
without importing it.

``importlib.metadata`` brings ``email``, ``zipfile`` (and with it ``shutil``, ``bz2``, ``lzma``),
``csv``, ``importlib.resources`` and ``tempfile``: 2.6 MiB that an agent would hold for as long as
it runs, for one look at a few small text files at start-up (docs/performance.md, "Agent
memory"). For the ordinary case, directories on ``sys.path`` and the standard path finder, this
module reads what ``importlib.metadata.entry_points(group=...)`` reads, the same way:

- every ``*.dist-info`` and ``*.egg-info`` directory of every ``sys.path`` entry (``""`` being the
  current directory), in path order and, within a directory, in ``os.listdir`` order;
- one distribution per normalized name (PEP 503, dashes as underscores), the first one found;
- its ``entry_points.txt``: ``[group]`` headers and ``name = value`` lines, blank lines and ``#``
  comments skipped;
- the distribution's name and version from the ``Name:`` and ``Version:`` headers of its
  ``METADATA`` (``PKG-INFO`` for an egg-info).

Anything else (a zip file on ``sys.path``, a meta path finder with distributions of its own) is
left to ``importlib.metadata`` itself, imported then.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import import_module
from importlib.machinery import PathFinder
from typing import Any, Iterator

_NORMALIZE = re.compile(r"[-_.]+")
# importlib.metadata.EntryPoint.pattern: "module", "module:attr.attr", optional [extras].
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class EntryPoint:
    """One entry point: ``name = value`` of ``group``, from distribution ``dist_name``
    ``dist_version`` (``None`` where the distribution's metadata does not say)."""

    __slots__ = ("name", "value", "group", "dist_name", "dist_version")

    def __init__(self, name: str, value: str, group: str, dist_name: str | None,
                 dist_version: str | None) -> None:
        self.name, self.value, self.group = name, value, group
        self.dist_name, self.dist_version = dist_name, dist_version

    def load(self) -> Any:
        """The object named by ``value``, imported (as ``importlib.metadata.EntryPoint.load``)."""
        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"invalid entry point value {self.value!r}")
        obj: Any = import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            obj = getattr(obj, attr)
        return obj

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` of every installed distribution, in discovery order."""
    if not _plain_paths_only():
        return _from_importlib_metadata(group)
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for info in _metadata_dirs():
        key = _normalize(os.path.basename(info).rpartition(".")[0].partition("-")[0])
        if key in seen:
            continue
        seen.add(key)
        text = _read(info, "entry_points.txt")
        if text is None:
            continue
        entries = [(name, value) for section, name, value in _section_pairs(text) if section == group]
        if not entries:
            continue
        dist_name, dist_version = _name_version(info)
        found += [EntryPoint(name, value, group, dist_name, dist_version) for name, value in entries]
    return found


def _plain_paths_only() -> bool:
    """Whether every distribution lives in a directory on ``sys.path`` that the standard path
    finder searches (no zip files, no other finder of distributions)."""
    if any(finder is not PathFinder and hasattr(finder, "find_distributions")
           for finder in sys.meta_path):
        return False
    return not any(os.path.isfile(entry) for entry in _path_entries() if entry)


def _metadata_dirs() -> Iterator[str]:
    for entry in _path_entries():
        try:
            children = os.listdir(entry or ".")
        except OSError:
            continue  # absent, or not a directory (such as a path hook's marker)
        for child in children:
            if child.lower().endswith((".dist-info", ".egg-info")):
                yield os.path.join(entry, child)


def _path_entries() -> list[str]:
    return [os.fspath(entry) for entry in sys.path if isinstance(entry, (str, os.PathLike))]


def _normalize(name: str) -> str:
    return _NORMALIZE.sub("-", name).lower().replace("-", "_")


def _read(info: str, name: str) -> str | None:
    try:
        with open(os.path.join(info, name), encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):  # no such file, or an egg-info that is a file
        return None


def _section_pairs(text: str) -> Iterator[tuple[str, str, str]]:
    section: str | None = None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"invalid entry point line {line!r} in [{section}]")
        yield section, name.strip(), value.strip()


def _name_version(info: str) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the headers of the distribution's metadata file."""
    text = next((t for t in (_read(info, "METADATA"), _read(info, "PKG-INFO")) if t is not None), "")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        if line[:1] in (" ", "\t"):
            continue  # a continued header
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields.get("name"), fields.get("version")


def _from_importlib_metadata(group: str) -> list[EntryPoint]:
    from importlib import metadata

    out = []
    for ep in metadata.entry_points(group=group):
        dist = ep.dist
        out.append(EntryPoint(ep.name, ep.value, ep.group, dist.name if dist else None,
                              dist.version if dist else None))
    return out
