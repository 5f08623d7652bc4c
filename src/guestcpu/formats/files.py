"""Reading and writing files, with one clear error each and no surprises.

Reading is bounded: a file must be a regular file (FIFOs, devices, sockets and
directories are refused by type, before anything could block), no larger than
``GUESTCPU_MAX_INPUT`` (default 64 MiB), and JSON may nest at most ``MAX_JSON_DEPTH``
levels.  ``-`` means standard input (read with the same size limit).

Writing is atomic: a new file is created next to the target (``O_EXCL``, never
following a symlink), filled, synced and renamed over the target, all relative to
one opened directory, so a reader sees the old file or the new one, a failure
leaves nothing behind, and a symlink planted at the target is replaced, never
followed.  New files get ``0666`` minus the umask unless a tighter mode is asked for.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestcpu.errors import InputError

#: The default limit on any one input (``GUESTCPU_MAX_INPUT`` overrides it).
DEFAULT_MAX_INPUT = 64 * 1024 * 1024
#: Deeper JSON than this is refused: guestcpu's documents nest fewer than ten levels.
MAX_JSON_DEPTH = 64

_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}


def max_input_bytes() -> int:
    """The size limit on one input file: ``GUESTCPU_MAX_INPUT`` (bytes, or with K/M/G), else 64 MiB."""
    text = os.environ.get("GUESTCPU_MAX_INPUT", "").strip()
    if not text:
        return DEFAULT_MAX_INPUT
    match = re.fullmatch(r"(\d+)\s*([kKmMgG](?:iB|ib)?)?", text)
    if match is None or int(match.group(1)) <= 0:
        raise InputError(f"GUESTCPU_MAX_INPUT={text!r} is not a size; expected bytes or e.g. 64M, 1G")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def _size(limit: int) -> str:
    return f"{limit // 1024**2} MiB" if limit % 1024**2 == 0 else f"{limit} bytes"


def _file_type(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_fd(fd: int, source: str, what: str, limit: int | None = None) -> bytes:
    """All of an opened regular file, refused above ``limit`` bytes."""
    limit = max_input_bytes() if limit is None else limit
    st = os.fstat(fd)
    kind = _file_type(st.st_mode)
    if kind is not None:
        raise InputError(f"{source} is {kind}; expected {what} in a regular file")
    if st.st_size > limit:
        raise InputError(f"{source} is larger than {_size(limit)} ({st.st_size} bytes); expected {what} "
                         "(GUESTCPU_MAX_INPUT raises the limit)")
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, max(st.st_size + 1 - total, 65536))
        if not chunk:
            break
        total += len(chunk)
        if total > limit:  # grew while being read
            raise InputError(f"{source} is larger than {_size(limit)}; expected {what} "
                             "(GUESTCPU_MAX_INPUT raises the limit)")
        chunks.append(chunk)
    return b"".join(chunks)


def _read_stdin(what: str, limit: int) -> bytes:
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"standard input is larger than {_size(limit)}; expected {what} "
                         "(GUESTCPU_MAX_INPUT raises the limit)")
    return data


def open_regular(path: str | Path, what: str = "a file", *, dir_fd: int | None = None, follow: bool = True) -> int:
    """An fd of ``path`` opened for reading, refused unless it is a regular file.

    The type is checked before opening (a FIFO would block ``open``), and again on the
    opened file (``O_NONBLOCK``: a FIFO swapped in between cannot block it either).
    """
    name = str(path)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=follow)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file; expected {what}") from None
    except NotADirectoryError:
        raise InputError(f"{name}: a part of the path is not a directory; expected {what}") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    if not follow and stat.S_ISLNK(st.st_mode):
        raise InputError(f"{name} is a symbolic link; expected {what} in a regular file")
    kind = _file_type(st.st_mode)
    if kind is not None:
        raise InputError(f"{name} is {kind}; expected {what} in a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None
    kind = _file_type(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise InputError(f"{name} is {kind}; expected {what} in a regular file")
    return fd


def read_bytes(path: str | Path, what: str = "a file", limit: int | None = None) -> bytes:
    """A whole input file (``-``: standard input), bounded and refused unless regular."""
    limit = max_input_bytes() if limit is None else limit
    if str(path) == "-":
        return _read_stdin(what, limit)
    fd = open_regular(path, what)
    try:
        return read_fd(fd, str(path), what, limit)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, what: str = "a file") -> str:
    data = read_bytes(path, what)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}") from None


# -- JSON, nesting bounded ------------------------------------------------------------
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_INNERMOST = re.compile(rb"[\[{][\]}]")
_DEPTH_STEP = [1 if b in b"[{" else -1 for b in range(256)]


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the arrays and objects of ``data`` nest deeper than ``limit``.

    Escaped backslashes and quotes are dropped, then everything but brackets and
    quotes; strings (now free of escapes) are blanked, and innermost bracket pairs
    are peeled one level per pass.  Every step is one C-level scan: no recursion,
    whatever the input.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Dropping two adjacent quotes keeps every other character inside or outside a string.
    kept = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    brackets = b"".join(kept.split(b'"')[::2]) if b'"' in kept else kept  # what is outside strings
    for peeled_levels in range(limit):
        peeled = _INNERMOST.sub(b"", brackets)
        if not peeled:
            return False
        if peeled == brackets:
            # Unbalanced (json.loads reports that), but the parser would still descend this deep first.
            opened = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
            return opened + peeled_levels > limit
        brackets = peeled
    return True


def loads_json(data: bytes | str, source: str, what: str) -> Any:
    """``data`` parsed as JSON, with a clear error naming ``source`` for bad or too deep input."""
    raw = data.encode() if isinstance(data, str) else data
    if json_depth_exceeds(raw):
        raise InputError(f"{source} nests JSON deeper than {MAX_JSON_DEPTH} levels; expected {what}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{source} is not valid JSON ({exc}); expected {what}") from None
    except RecursionError:  # belt and braces: the depth check above should make this unreachable
        raise InputError(f"{source} nests JSON too deeply; expected {what}") from None


def read_json(path: str | Path, what: str) -> Any:
    return loads_json(read_bytes(path, what), str(path), what)


# -- writing, atomically --------------------------------------------------------------
#: Default mode of new files: 0666 minus the umask, as any well-behaved tool.
DEFAULT_MODE = 0o666
#: Files that describe a host (captures) or are private caches.
PRIVATE_MODE = 0o600


def _stage_at(dir_fd: int, name: str, data: bytes, mode: int) -> str:
    """A synced temporary file beside ``name`` holding ``data``; its name."""
    tmp = f".{name}.{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return tmp


def _commit_at(dir_fd: int, tmp: str, name: str) -> None:
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def write_at(dir_fd: int, name: str, data: bytes, mode: int = DEFAULT_MODE) -> None:
    """Write ``data`` to ``name`` in the opened directory ``dir_fd`` atomically.

    A temporary ``.name.XXXX.tmp`` is created there exclusively (``O_EXCL``,
    ``O_NOFOLLOW``) with ``mode`` (minus the umask), synced, and renamed over ``name``;
    rename replaces a symlink at ``name`` rather than writing where it points.
    """
    _commit_at(dir_fd, _stage_at(dir_fd, name, data, mode), name)


def open_dir(path: str | Path) -> int:
    return os.open(str(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@dataclass(frozen=True)
class Output:
    """One file a command writes: where (``-``: standard output), what, and the mode of a new file."""

    path: str
    data: bytes | str
    mode: int = DEFAULT_MODE
    what: str = "a file"

    @property
    def raw(self) -> bytes:
        return self.data.encode() if isinstance(self.data, str) else self.data


def _stage_output(out: Output) -> tuple[int, str, str]:
    target = Path(out.path)
    if not target.name or target.name in (".", ".."):
        raise InputError(f"cannot write {out.path}: give a file name to write {out.what} to")
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise InputError(f"{out.path} is a directory; give a file name to write {out.what} to")
    try:
        dir_fd = open_dir(target.parent)
    except FileNotFoundError:
        raise InputError(f"cannot write {out.path}: directory {target.parent} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot write {out.path}: {target.parent}: {exc.strerror}") from None
    try:
        return dir_fd, _stage_at(dir_fd, target.name, out.raw, out.mode), target.name
    except OSError as exc:
        os.close(dir_fd)
        raise InputError(f"cannot write {out.path}: {exc.strerror}") from None
    except BaseException:
        os.close(dir_fd)
        raise


def write_outputs(outputs: Sequence[Output]) -> None:
    """Write every output, or none: all are staged first (a failure removes them all), then renamed.

    Call it only once everything the outputs depend on has succeeded.  Each file is
    written atomically, never through a symlink planted at its name; ``-`` goes to
    standard output.
    """
    staged: list[tuple[int, str, str, Output]] = []
    try:
        for out in outputs:
            if out.path != "-":
                staged.append((*_stage_output(out), out))
        for out in outputs:
            if out.path == "-":
                sys.stdout.buffer.write(out.raw)
                sys.stdout.flush()
        while staged:
            dir_fd, tmp, name, out = staged[0]
            try:
                _commit_at(dir_fd, tmp, name)
            except IsADirectoryError:
                raise InputError(f"{out.path} is a directory; give a file name to write {out.what} to") from None
            except OSError as exc:
                raise InputError(f"cannot write {out.path}: {exc.strerror}") from None
            finally:
                os.close(dir_fd)
                staged.pop(0)
    finally:
        for dir_fd, tmp, _name, _out in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            os.close(dir_fd)


def write_output(path: str, data: bytes | str, *, mode: int = DEFAULT_MODE, what: str = "a file") -> None:
    """Write one output the user named (``-``: standard output): atomically, never through a symlink."""
    write_outputs([Output(path, data, mode, what)])
