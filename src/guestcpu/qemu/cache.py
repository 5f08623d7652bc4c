"""The on-disk capabilities cache: one JSON document per binary, arch and accelerator.

Location: ``$XDG_CACHE_HOME/guestcpu/`` (``~/.cache/guestcpu/``), or
``/var/cache/guestcpu/`` when running as root.

A document is used only when everything that can change QEMU's answers is unchanged
(the fingerprint): the binary's path, size and mtime (and its module directory),
the kernel release, the CPU microcode, whether /dev/kvm is usable, this host's CPUID
as the kernel reports it and, for KVM, what KVM says it supports
(``KVM_GET_SUPPORTED_CPUID``).  Otherwise it is re-probed.

The binary is also identified by its inode, ctime and a SHA-256 of its content
(hashed once per inode+ctime+size, memoised in ``binaries.json``), so a binary
replaced by another file of the same size and mtime is probed again.

The folder is used only when it is private (owned by you or root, not writable by
group or others); otherwise QEMU is probed without a cache and a warning says why.
Every file is opened relative to that folder, never through a symlink.  Writes are
atomic (temp file in the same directory, fsync, rename) and serialised with an
fcntl lock, so concurrent probes neither race nor leave a half-written file; a
corrupt, truncated or planted file is re-probed with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestcpu.catalog.paths import cache_home
from guestcpu.errors import GuestCpuError, InputError
from guestcpu.qemu.caps import QemuCaps, caps_from_document, to_document
from guestcpu.qemu.probe import PROBE_FORMAT, Progress, check_accel, probe
from guestcpu.qemu.process import DEFAULT_TIMEOUT, kvm_unusable_reason, resolve_binary


class CacheWarning(UserWarning):
    pass


class CacheError(GuestCpuError):
    pass


def default_cache_dir() -> Path:
    return cache_home()


# -- host facts ---------------------------------------------------------------------
_KVM_GET_SUPPORTED_CPUID = 0xC008AE05
_CPUID_ENTRY = struct.Struct("<IIIIIIIIII")


def kvm_supported_cpuid_digest() -> str | None:
    """A digest of KVM_GET_SUPPORTED_CPUID (what KVM can give a guest), or None."""
    nent = 256
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(struct.pack("<II", nent, 0) + bytes(_CPUID_ENTRY.size * nent))
        fcntl.ioctl(fd, _KVM_GET_SUPPORTED_CPUID, buf, True)
    except OSError:
        return None
    finally:
        os.close(fd)
    count = struct.unpack_from("<I", buf)[0]
    digest = hashlib.sha256()
    for i in range(count):
        leaf, sub, _flags, eax, ebx, ecx, edx = _CPUID_ENTRY.unpack_from(buf, 8 + i * _CPUID_ENTRY.size)[:7]
        # The APIC ID of whichever CPU we happen to run on is not a capability (libvirt masks it too).
        if leaf == 1:
            ebx &= 0x00FFFFFF
        elif leaf in (0xB, 0x1F):
            edx = 0
        digest.update(struct.pack("<IIIIII", leaf, sub, eax, ebx, ecx, edx))
    return digest.hexdigest()[:16]


def cpuinfo_facts(text: str) -> tuple[str, str]:
    """(microcode, digest of the first CPU's identity and flags) from /proc/cpuinfo."""
    first = text.split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    identity = "|".join(
        fields.get(k, "") for k in ("vendor_id", "cpu family", "model", "stepping", "model name", "flags")
    )
    return fields.get("microcode", ""), hashlib.sha256(identity.encode()).hexdigest()[:16]


#: Content hashes of binaries already hashed in this process, by (device, inode, ctime, size).
_HASHED: dict[str, str] = {}
_HASH_INDEX = "binaries.json"
_HASH_INDEX_KEEP = 32


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}:{st.st_size}"


def _read_hash_index(dir_fd: int) -> dict[str, str]:
    from guestcpu.formats.files import loads_json, open_regular, read_fd

    try:
        fd = open_regular(_HASH_INDEX, "the binary hash index", dir_fd=dir_fd, follow=False)
    except InputError:
        return {}
    try:
        doc = loads_json(read_fd(fd, _HASH_INDEX, "the binary hash index", 1 << 20), _HASH_INDEX, "an index")
    except (InputError, OSError):
        return {}
    finally:
        os.close(fd)
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, str) and len(v) == 64}


def content_hash(binary: str, st: os.stat_result, dir_fd: int | None = None) -> str:
    """SHA-256 of the binary, computed once per (device, inode, ctime, size).

    ctime cannot be set by a user: any write, rename or chmod of the file moves it,
    so a same-key binary is the same content.  The memo lives in the private cache
    folder (``binaries.json``), so a cache hit does not re-read a 20 MB binary.
    """
    key = _stat_key(st)
    if key in _HASHED:
        return _HASHED[key]
    index = _read_hash_index(dir_fd) if dir_fd is not None else {}
    digest = index.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(binary, "rb") as fh:
            if _stat_key(os.fstat(fh.fileno())) != key:
                raise OSError(f"{binary} changed while being hashed")
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        if dir_fd is not None:
            from guestcpu.formats.files import PRIVATE_MODE, write_at

            index[key] = digest
            kept = dict(list(index.items())[-_HASH_INDEX_KEEP:])
            with contextlib.suppress(OSError):
                write_at(dir_fd, _HASH_INDEX, json.dumps(kept, indent=0).encode(), PRIVATE_MODE)
    _HASHED[key] = digest
    return digest


def binary_facts(binary: str, dir_fd: int | None = None) -> dict[str, Any]:
    st = os.stat(binary)
    facts: dict[str, Any] = {
        "binary": binary, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        # A replaced binary with the same size and mtime still has a new inode or ctime and content.
        "inode": f"{st.st_dev}:{st.st_ino}", "ctime_ns": st.st_ctime_ns, "sha256": content_hash(binary, st, dir_fd),
    }
    # QEMU's loadable modules (accelerators, devices) live beside it; libvirt keys on them too.
    for moddir in ("/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib64/qemu", "/usr/lib/qemu"):
        with contextlib.suppress(OSError):
            facts["moddir_mtime_ns"] = os.stat(moddir).st_mtime_ns
            break
    return facts


def host_facts(binary: str, accel: str, dir_fd: int | None = None) -> dict[str, Any]:
    """Everything that, when it changes, can change what QEMU reports."""
    facts = binary_facts(binary, dir_fd)
    facts["accel"] = accel
    facts["probe_format"] = PROBE_FORMAT  # what a probe records; older cache entries are probed again
    facts["kernel"] = os.uname().release
    try:
        microcode, cpu = cpuinfo_facts(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        microcode, cpu = "", ""
    facts["microcode"] = microcode
    facts["host_cpuid"] = cpu
    facts["kvm_usable"] = kvm_unusable_reason() is None
    if accel == "kvm":
        facts["kvm_cpuid"] = kvm_supported_cpuid_digest()
    return facts


def changed_facts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# -- the cache ----------------------------------------------------------------------
@dataclass(frozen=True)
class CacheResult:
    caps: QemuCaps
    path: Path
    #: "hit", or why it was probed: "missing", "refresh", "changed: kernel, microcode", "corrupt"
    status: str

    @property
    def hit(self) -> bool:
        return self.status == "hit"


def cache_name(binary: str, arch: str, accel: str) -> str:
    digest = hashlib.sha256(binary.encode()).hexdigest()[:12]
    return f"qemu-{arch}-{accel}-{Path(binary).name}-{digest}.json"


def cache_path(cache_dir: Path, binary: str, arch: str, accel: str) -> Path:
    return cache_dir / cache_name(binary, arch, accel)


@contextlib.contextmanager
def _locked(dir_fd: int, name: str) -> Iterator[None]:
    from guestcpu.formats.private_dir import open_lock

    fd = open_lock(dir_fd, name + ".lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _default_warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=3)


def _read(dir_fd: int, path: Path, warn: Callable[[str], None]) -> tuple[QemuCaps | None, str]:
    from guestcpu.formats.files import loads_json, open_regular, read_fd

    try:
        fd = open_regular(path.name, "a capabilities cache", dir_fd=dir_fd, follow=False)
    except InputError as exc:
        if not os.path.lexists(path):
            return None, "missing"
        warn(f"capabilities cache {path} is not used ({str(exc).split('; ')[0].removeprefix(path.name + ' ')}); "
             "probing QEMU again")
        return None, "unreadable"
    try:
        data = read_fd(fd, str(path), "a capabilities cache")
        doc = loads_json(data, str(path), "a capabilities document")
        return caps_from_document(doc, str(path), check=False), ""
    except OSError as exc:
        warn(f"cannot read capabilities cache {path}: {exc.strerror}; probing QEMU again")
        return None, "unreadable"
    except (ValueError, InputError, RecursionError) as exc:
        warn(f"capabilities cache {path} is corrupt ({str(exc).splitlines()[0][:120]}); probing QEMU again")
        return None, "corrupt"
    finally:
        os.close(fd)


def _open_cache_dir(directory: Path, warn: Callable[[str], None]) -> int | None:
    """The private cache folder's fd; None (with a warning) when it is not safe to use."""
    from guestcpu.formats.private_dir import UnsafeDirectoryError, open_private_dir

    try:
        return open_private_dir(directory, create=True)
    except UnsafeDirectoryError as exc:
        warn(f"{exc}; probing QEMU without a cache")
        return None
    except OSError as exc:
        raise CacheError(
            f"cannot create the capabilities cache directory {directory}: {exc.strerror}; "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None


def load_caps(
    binary: str | None = None,
    accel: str = "tcg",
    *,
    arch: str = "x86_64",
    cache_dir: Path | None = None,
    refresh: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> CacheResult:
    """The capabilities of ``binary`` under ``accel``: from the cache when still valid, else probed.

    The cache folder is used only when it is private (``formats.private_dir``);
    otherwise QEMU is probed without it and ``warn`` says why.  ``facts`` replaces
    the host facts (tests simulate kernel or microcode changes with it); ``warn``
    receives the warnings (default: ``warnings.warn``).
    """
    warn = warn or _default_warn
    path_binary = resolve_binary(binary, arch)
    check_accel(accel)
    directory = cache_dir or default_cache_dir()
    path = cache_path(directory, path_binary, arch, accel)
    dir_fd = _open_cache_dir(directory, warn)
    try:
        current = dict(facts) if facts is not None else host_facts(path_binary, accel, dir_fd)
        if dir_fd is None:
            caps = probe(path_binary, accel, arch=arch, timeout=timeout, progress=progress, fingerprint=current)
            return CacheResult(caps, path, "uncached")
        return _load_in(dir_fd, path, path_binary, accel, arch, current, refresh, timeout, progress, warn)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _load_in(
    dir_fd: int, path: Path, binary: str, accel: str, arch: str, current: dict[str, Any], refresh: bool,
    timeout: float, progress: Progress | None, warn: Callable[[str], None],
) -> CacheResult:
    from guestcpu.formats.files import write_at

    status = "refresh"
    if not refresh:
        cached, status = _read(dir_fd, path, warn)
        if cached is not None:
            changed = changed_facts(cached.fingerprint, current)
            if not changed:
                return CacheResult(cached, path, "hit")
            status = "changed: " + ", ".join(changed)

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked(dir_fd, path.name))
        except OSError as exc:
            # e.g. a symlink planted at the lock's name: never followed, and the cache is not written.
            warn(f"cannot lock capabilities cache {path}: {exc.strerror or exc}; probing QEMU without the cache")
            caps = probe(binary, accel, arch=arch, timeout=timeout, progress=progress, fingerprint=current)
            return CacheResult(caps, path, "uncached")
        if not refresh:
            # Another process may have probed while we waited for the lock.
            again, _ = _read(dir_fd, path, lambda _m: None)
            if again is not None and not changed_facts(again.fingerprint, current):
                return CacheResult(again, path, "hit")
        caps = probe(binary, accel, arch=arch, timeout=timeout, progress=progress, fingerprint=current)
        data = json.dumps(to_document(caps), separators=(",", ":")).encode()
        try:
            write_at(dir_fd, path.name, data)
        except OSError as exc:
            warn(f"cannot write capabilities cache {path}: {exc.strerror}; continuing without it")
    return CacheResult(caps, path, status)


_CAPTURE_SCHEMA = "guestcpu/host-capture"


def read_caps_file(path: str, accel: str | None = None) -> QemuCaps:
    """A capabilities document given by the user (``--caps FILE``), with clear errors.

    A host capture (``guestcpu capture``) holds one document per accelerator: ``accel``
    picks one, else KVM when it was captured (what production guests run on), else TCG.
    """
    from guestcpu.formats.files import read_json

    doc = read_json(path, "a capabilities document ('guestcpu caps --document') or a host capture")
    if isinstance(doc, dict) and doc.get("schema") == _CAPTURE_SCHEMA:
        from guestcpu.schemas import validate

        validate("host-capture", doc, path)
        found = doc.get("accels")
        accels: dict[str, Any] = found if isinstance(found, dict) else {}
        chosen = accel or ("kvm" if "kvm" in accels else "tcg")
        if chosen not in accels:
            why = (doc.get("unavailable") or {}).get(chosen, "it was not captured")
            captured = ", ".join(sorted(accels)) or "none"
            raise InputError(f"{path}: the capture has no {chosen} capabilities ({why}); captured: {captured}")
        # validated above with the whole capture
        return caps_from_document(accels[chosen], f"{path} ({chosen})", check=False)
    return caps_from_document(doc, path)
