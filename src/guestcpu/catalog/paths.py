"""Where admin drop-in model files live (kept apart so a cached CLI call needs no loader)."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DROPIN_DIR = Path("/etc/guestcpu/models.d")


def user_dropin_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "guestcpu" / "models.d"


def default_dropin_dirs() -> list[Path]:
    return [SYSTEM_DROPIN_DIR, user_dropin_dir()]
