"""Folders guestcpu keeps its own state in (caches), trusted only when nobody else can write them.

A folder is safe when it is owned by the running user or by root and is not
writable by group or others.  It is opened once (never through a symlink) and every
file operation afterwards is relative to that open directory, so renaming or
replacing the folder or a path component later cannot redirect a read or a write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from guestcpu.errors import GuestCpuError


class UnsafeDirectoryError(GuestCpuError):
    """A cache folder another user could write: its contents cannot be trusted."""


def folder_problem(st: os.stat_result) -> str | None:
    """Why a folder with these stat facts is not private, or None when it is."""
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid not in (os.geteuid(), 0):
        return f"it is owned by uid {st.st_uid}, neither you (uid {os.geteuid()}) nor root"
    writers = [who for bit, who in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "others")) if st.st_mode & bit]
    if writers:
        return f"it is writable by {' and '.join(writers)} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def file_problem(st: os.stat_result) -> str | None:
    """Why a file with these stat facts could hold another user's data, or None when it cannot."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid not in (os.geteuid(), 0):
        return f"it is owned by uid {st.st_uid}, neither you (uid {os.geteuid()}) nor root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def open_private_dir(path: Path, create: bool = True) -> int:
    """An fd of the folder ``path`` (created ``0700`` when missing), refused unless it is private."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(2):
        try:
            fd = os.open(path, flags)
            break
        except FileNotFoundError:
            if not create or attempt:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.lexists(path):
                what = "a symbolic link" if os.path.islink(path) else "not a directory"
                raise UnsafeDirectoryError(f"cache folder {path} is {what}; guestcpu does not use it") from None
            raise  # a parent is not a directory, or cannot be searched
    problem = folder_problem(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise UnsafeDirectoryError(
            f"cache folder {path} is not safe ({problem}); guestcpu does not use it: make it yours and "
            "not group/other-writable, or set XDG_CACHE_HOME to a private folder"
        )
    return fd


def open_lock(dir_fd: int, name: str) -> int:
    """An fd to lock on: created exclusively when new, never through a symlink."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"lock {name} is not a regular file")
    return fd
