"""The public API for agent plugins: everything an agent plugin (built-in or third-party) may
import. Anything else under ``rport.agent`` or ``rport.core`` is private and may change."""

from __future__ import annotations

from rport.core.confload import ConfigError, Duration, HostPort, parse_duration, parse_host_port
from rport.core.confload import structure as structure_config
from rport.core.plugins import PluginError, hookimpl
from rport.core.protocol.pipe import SocketPipe
from rport.core.session import (
    ProtocolViolation,
    RemoteError,
    Session,
    SessionClosed,
    SessionError,
    Stream,
    StreamRefused,
    StreamSink,
)

__all__ = [
    "ConfigError", "Duration", "HostPort", "PluginError", "ProtocolViolation", "RemoteError",
    "Session", "SessionClosed", "SessionError", "SocketPipe", "Stream", "StreamRefused",
    "StreamSink", "hookimpl",
    "parse_duration", "parse_host_port", "structure_config",
]
