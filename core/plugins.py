"""Plugin managers: built by a factory, loading built-in and third-party plugins from entry points.

Built-in plugins are registered exactly like external ones (datasette's model): through the
entry points of this distribution. Blocked names from ``[plugins] disabled`` are never imported.
A plugin that fails to import or implements a misspelled hook stops start-up with a message
naming it. Hooks are called per implementation by :func:`call_each`, which awaits awaitables and
knows which plugin answered, so results can be attributed and exceptions named.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from types import ModuleType
from typing import Any, Iterable

import pluggy

from .entrypoints import EntryPoint, entry_points

log = logging.getLogger("rport.plugins")

hookimpl = pluggy.HookimplMarker("rport")


class PluginError(Exception):
    """A plugin could not be loaded, configured or started; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    builtin: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class PluginSet:
    """A plugin manager and what the core knows about each loaded plugin."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = dataclasses.field(default_factory=dict)
    disabled: list[str] = dataclasses.field(default_factory=list)

    def names(self) -> list[str]:
        return list(self.info)


def describe_plugins(plugins: PluginSet) -> list[str]:
    """Lines for ``rportd plugins`` / ``rport plugins``: name, distribution, version, module."""
    lines = []
    for info in plugins.info.values():
        origin = "built-in" if info.builtin else "third-party"
        lines.append(f"{info.name:16} {info.distribution} {info.version:10} {info.module} ({origin})")
    lines += [f"{name:16} (disabled in configuration)" for name in plugins.disabled]
    return lines


def create_plugin_manager(group: str, specs: ModuleType, *, disabled: Iterable[str] = (),
                          extra: Iterable[tuple[str, Any]] = ()) -> PluginSet:
    """Load the plugins of entry-point ``group`` except the ``disabled`` ones, then ``extra``
    (name, plugin) pairs (tests and embedders), and validate every hook implementation."""
    pm = pluggy.PluginManager("rport")
    pm.add_hookspecs(specs)
    pm.hook.rport_add_hookspecs.call_historic(kwargs={"pluginmanager": pm})
    disabled = list(dict.fromkeys(disabled))
    for name in disabled:
        pm.set_blocked(name)
    plugins = PluginSet(pm=pm, disabled=disabled)
    seen: set[str] = set()
    for ep in sorted(entry_points(group), key=_builtin_first):
        if ep.name in seen:
            raise PluginError(f"plugin {ep.name!r}: two installed distributions register this name "
                              f"in {group!r}")
        seen.add(ep.name)
        if pm.is_blocked(ep.name):
            log.info("plugin %s disabled by configuration", ep.name)
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to import: "
                              f"{exc.__class__.__name__}: {exc}") from exc
        dist = ep.dist_name if ep.dist_name is not None else "?"
        version = ep.dist_version if ep.dist_version is not None else "?"
        _register(plugins, ep.name, obj, PluginInfo(
            ep.name, ep.value, dist, version, builtin=ep.value.startswith("rport.plugins.")))
    for name, obj in extra:
        if pm.is_blocked(name):
            continue
        _register(plugins, name, obj, PluginInfo(name, getattr(obj, "__name__", repr(obj)),
                                                 "(registered in code)", "", builtin=False))
    unknown = [name for name in disabled if name not in seen and name not in dict(extra)]
    for name in unknown:
        log.warning("[plugins] disabled names %r, but no such plugin is installed", name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r}: {exc}".replace(repr(exc.plugin), repr(name))) from exc
    return plugins


def _builtin_first(ep: EntryPoint) -> tuple[bool, str]:
    return (not ep.value.startswith("rport.plugins."), ep.name)


def _register(plugins: PluginSet, name: str, obj: Any, info: PluginInfo) -> None:
    try:
        plugins.pm.register(obj, name=name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {name!r}: {exc}") from exc
    plugins.info[name] = info


async def _invoke(hook: Any, impl: Any, kwargs: dict[str, Any]) -> Any:
    """One implementation with the arguments it accepts, awaited if need be; an exception
    carries the plugin's name as a note."""
    try:
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        exc.add_note(f"in plugin {impl.plugin_name!r}, hook {hook.name}")
        raise
    return result


async def call_each(hook: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation of ``hook`` in plugin order; returns ``(plugin name, result)``
    pairs."""
    return [(impl.plugin_name, await _invoke(hook, impl, kwargs))
            for impl in reversed(hook.get_hookimpls())]


async def call_until(hook: Any, accept: Any, **kwargs: Any) -> Any:
    """Call implementations in plugin order until one returns a result ``accept(result)``
    likes; returns it, or None. Later plugins are not called (no wasted bcrypt checks)."""
    for impl in reversed(hook.get_hookimpls()):
        result = await _invoke(hook, impl, kwargs)
        if accept(result):
            return result
    return None


def call_each_sync(hook: Any, **kwargs: Any) -> list[tuple[str, Any]]:
    """Like :func:`call_each` for hooks that must not block or await (e.g. per listed client)."""
    results = []
    for impl in reversed(hook.get_hookimpls()):
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        if inspect.isawaitable(result):
            raise PluginError(f"plugin {impl.plugin_name!r}: hook {hook.name} must not be async")
        results.append((impl.plugin_name, result))
    return results


async def call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one plugin's implementation during start-up or shutdown; a failure becomes a
    :class:`PluginError` naming the plugin and the hook."""
    try:
        result = impl.function(*[kwargs[arg] for arg in impl.argnames])
        if inspect.isawaitable(result):
            result = await result
        return result
    except PluginError:
        raise
    except Exception as exc:
        if exc.__class__.__name__ == "ConfigError":
            raise
        raise PluginError(f"plugin {impl.plugin_name!r} failed in {impl.function.__name__}: "
                          f"{exc.__class__.__name__}: {exc}") from exc


def impls(hook: Any) -> list[Any]:
    """The implementations of ``hook`` in plugin order."""
    return list(reversed(hook.get_hookimpls()))
