"""The data directory of rportd and of the agent: private to the user they run as.

It holds the server's key, generated credentials and the store: it is created with mode 0700
(missing parents too), and its files with 0600. An existing directory is left as it is, since an
operator may share it on purpose, but a warning says when other users can enter or read it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def prepare_data_dir(path: Path, log: logging.Logger) -> None:
    """Create ``path`` (mode 0700), or warn if it exists and is open to group or others."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=PRIVATE_DIR, parents=True)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is reduced by the umask
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("data directory %s can be accessed by other users (mode %04o); it holds keys, "
                    "credentials and the store: chmod 700 %s", path, mode, path)


def make_private(path: Path, log: logging.Logger) -> None:
    """Mode 0600 for a file of ours that an older version (or a umask) left readable by others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, PRIVATE_FILE)
        log.info("%s was readable by other users (mode %04o): now 0600", path, mode)
