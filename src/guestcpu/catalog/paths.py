"""Where guestcpu keeps files: admin drop-in models and caches (apart, so a cached CLI call needs no loader)."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DROPIN_DIR = Path("/etc/guestcpu/models.d")


def user_dropin_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "guestcpu" / "models.d"


def default_dropin_dirs() -> list[Path]:
    return [SYSTEM_DROPIN_DIR, user_dropin_dir()]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/guestcpu`` (``~/.cache``); ``/var/cache/guestcpu`` for root without XDG_CACHE_HOME."""
    if os.geteuid() == 0 and "XDG_CACHE_HOME" not in os.environ:
        return Path("/var/cache/guestcpu")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guestcpu"
