"""Settings of the uploads plugin on the agent: RPort's ``[file-reception]`` table."""

from __future__ import annotations

import attrs

DEFAULT_PROTECTED = ["/bin", "/sbin", "/boot", "/usr/bin", "/usr/sbin", "/dev", "/lib*", "/run"]
"""RPort's defaults on Unix: no file is written into these folders or below them."""


@attrs.frozen
class FileReceptionConfig:
    enabled: bool = True
    protected: list[str] = attrs.field(factory=lambda: list(DEFAULT_PROTECTED))
    sudo: bool = True
    """Use ``sudo -n`` (only what the operator's sudoers rules allow) to chown a received file
    to another user and to move it where the agent's user may not write, as RPort does."""
