"""Where a node keeps its files. Cheap to import: the CLI needs it to find the daemon."""

from __future__ import annotations

import os
from pathlib import Path

KEYFILE = "identity.key"
STORE = "meshnode.db"
CONFIG = "meshnode.toml"


def default_data_dir() -> Path:
    """The data directory when none is given: MESHNODE_HOME, else the XDG data dir."""
    home = os.environ.get("MESHNODE_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "meshnode"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit`` if given (``--data-dir``), else :func:`default_data_dir`."""
    return Path(explicit).expanduser() if explicit else default_data_dir()
