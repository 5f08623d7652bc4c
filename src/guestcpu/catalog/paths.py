"""Where guestcpu keeps files: admin drop-in models and caches (apart, so a cached CLI call needs no loader)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SYSTEM_DROPIN_DIR = Path("/etc/guestcpu/models.d")


def user_dropin_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "guestcpu" / "models.d"


def default_dropin_dirs() -> list[Path]:
    return [SYSTEM_DROPIN_DIR, user_dropin_dir()]


def trusted_dropin_dirs() -> list[Path]:
    """The default drop-in folders, refused (one clear error) when another user could write them.

    A drop-in changes every answer, so as with caches only folders and files owned by
    you or root and not writable by group or others are read.  (``--models-dir DIR``
    is the user's explicit choice and is read as given, like any input file.)
    """
    from guestcpu.errors import InputError
    from guestcpu.formats.private_dir import folder_problem

    dirs = default_dropin_dirs()
    for directory in dirs:
        try:
            st = directory.stat()
        except OSError:
            continue  # absent: nothing to read
        problem = folder_problem(st)
        if problem is None and stat.S_ISDIR(st.st_mode):
            for path in directory.iterdir():
                if path.suffix in (".json", ".toml"):
                    try:
                        file_st = path.stat()
                    except OSError:
                        continue
                    owner_problem = folder_problem(file_st) if stat.S_ISDIR(file_st.st_mode) else _file_problem(file_st)
                    if owner_problem is not None:
                        raise InputError(f"drop-in {path} is not safe to read ({owner_problem}); make it yours "
                                         "(or root's) and not group/other-writable")
            continue
        raise InputError(f"drop-in folder {directory} is not safe to read ({problem}); make it yours (or "
                         "root's) and not group/other-writable, or name a folder with --models-dir")
    return dirs


def _file_problem(st: os.stat_result) -> str | None:
    if st.st_uid not in (os.geteuid(), 0):
        return f"it is owned by uid {st.st_uid}, neither you (uid {os.geteuid()}) nor root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/guestcpu`` (``~/.cache``); ``/var/cache/guestcpu`` for root without XDG_CACHE_HOME."""
    if os.geteuid() == 0 and "XDG_CACHE_HOME" not in os.environ:
        return Path("/var/cache/guestcpu")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "guestcpu"
