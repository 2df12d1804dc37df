"""The lean structuring path of ``rport.core.confload.structure`` (which keeps cattrs out of the
agent) gives what the cattrs converter gives: the same object, or the same problems in the same
order, for every configuration class of the project (attrs classes and dataclasses) and for
values of every kind in each field; classes and data it does not model go to the converter."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Optional

import attrs
import pytest

from rport.agent.config import ClientSection, ConnectionSection
from rport.core import confload
from rport.core.confload import ConfigError, Duration, structure
from rport.core.config import ApiSection, DatabaseSection, LoggingSection, ServerSection
from rport.plugins.auth_jwt.config import AuthJwtConfig
from rport.plugins.commands.config import CommandsConfig, RemoteCommandsConfig
from rport.plugins.dashboard.config import DashboardConfig
from rport.plugins.idle.config import IdleConfig
from rport.plugins.tunnels.config import TunnelsConfig


@attrs.frozen
class Strict:
    """A plugin's kind of class: a required field, a validator, a table of strings."""

    name: str
    port: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    labels: dict[str, str] = attrs.field(factory=dict)
    wait: Duration = Duration(5)
    on: bool = False
    paths: list[str] = attrs.field(factory=list)


@dataclasses.dataclass(frozen=True)
class StrictData:
    """The same as a dataclass."""

    name: str
    port: int = 1
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    wait: Duration = Duration(5)
    on: bool = False
    paths: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.port < 0:
            raise ValueError(f"'port' must be >= 0: {self.port}")


@attrs.frozen
class Other:
    """Fields the lean path leaves to the converter."""

    ratio: float = 1.0
    maybe: Optional[str] = None


CLASSES = [ClientSection, ConnectionSection, LoggingSection, ServerSection, ApiSection,
           DatabaseSection, AuthJwtConfig, IdleConfig, TunnelsConfig, DashboardConfig,
           CommandsConfig, RemoteCommandsConfig, Strict, StrictData]

VALUES: list[Any] = ["text", "", "30s", "1h30m", "5x", 0, 7, -1, 1.5, True, False, [], ["a", "b"],
                     ["a", 1], [[1]], {}, {"k": "v"}, {"k": 1, "j": "w", "i": [2]}, {1: "v"}, None]


def outcome(fn: Any, data: dict[str, Any], cls: type, prefix: str) -> tuple[str, Any]:
    try:
        return "ok", fn(data, cls, prefix=prefix) if fn is structure else fn(data, cls, prefix)
    except ConfigError as exc:
        return "problems", exc.problems


def names_of(cls: type) -> list[str]:
    return [name for name, *_ in confload._class_fields(cls) or ()]


def cases(cls: type) -> list[dict[str, Any]]:
    names = names_of(cls)
    out: list[dict[str, Any]] = [{}, {"bogus": 1}, {"zz": 1, "aa": "x"}]
    out += [{name: value} for name in names for value in VALUES]
    # Several fields at once, some wrong, with an unknown key: every problem, in order.
    for first, second in itertools.pairwise(names):
        out += [{first: value, second: other, "unknown_key": 0}
                for value, other in ((1, "x"), ([1], {"a": 2}), ("1m", True))]
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_lean_path_gives_what_the_converter_gives(cls: type) -> None:
    assert confload._lean_fields(cls) is not None  # the lean path does serve it
    for data in cases(cls):
        for prefix in ("section", ""):
            lean = outcome(structure, data, cls, prefix)
            reference = outcome(confload._converter_structure, data, cls, prefix)
            assert lean == reference, (data, prefix)
            if lean[0] == "ok":  # same types too (Duration, not a bare float)
                assert [type(getattr(lean[1], name)) for name in names_of(cls)] == \
                    [type(getattr(reference[1], name)) for name in names_of(cls)]


def test_other_classes_and_data_go_to_the_converter() -> None:
    assert confload._lean_fields(Other) is None
    assert structure({"ratio": "2.5"}, Other) == Other(ratio=2.5)  # the converter's float()
    with pytest.raises(ConfigError) as info:
        structure({"ratio": "x", "nope": 1}, Other, prefix="plugins.other")
    assert info.value.problems == ["plugins.other.ratio: could not convert string to float: 'x'",
                                   "plugins.other.nope: unknown key"]
    # A table with a key that is not a string (not from TOML, but from code) is the converter's.
    assert outcome(structure, {"name": "n", "labels": {1: "a"}}, Strict, "p") == (
        "problems", ["p.labels[1]: expected a string, got 1"])
