"""The on-disk capabilities cache: one JSON document per binary, arch and accelerator.

Location: ``$XDG_CACHE_HOME/guestcpu/`` (``~/.cache/guestcpu/``), or
``/var/cache/guestcpu/`` when running as root.

A document is used only when everything that can change QEMU's answers is unchanged
(the fingerprint): the binary's path, size and mtime (and its module directory),
the kernel release, the CPU microcode, whether /dev/kvm is usable, this host's CPUID
as the kernel reports it and, for KVM, what KVM says it supports
(``KVM_GET_SUPPORTED_CPUID``).  Otherwise it is re-probed.

Writes are atomic (temp file in the same directory, fsync, rename) and serialised
with an fcntl lock, so concurrent probes neither race nor leave a half-written file;
a corrupt or truncated file is re-probed with a warning, never a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
import tempfile
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


def binary_facts(binary: str) -> dict[str, Any]:
    st = os.stat(binary)
    facts: dict[str, Any] = {"binary": binary, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    # QEMU's loadable modules (accelerators, devices) live beside it; libvirt keys on them too.
    for moddir in ("/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib64/qemu", "/usr/lib/qemu"):
        with contextlib.suppress(OSError):
            facts["moddir_mtime_ns"] = os.stat(moddir).st_mtime_ns
            break
    return facts


def host_facts(binary: str, accel: str) -> dict[str, Any]:
    """Everything that, when it changes, can change what QEMU reports."""
    facts = binary_facts(binary)
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


def cache_path(cache_dir: Path, binary: str, arch: str, accel: str) -> Path:
    digest = hashlib.sha256(binary.encode()).hexdigest()[:12]
    return cache_dir / f"qemu-{arch}-{accel}-{Path(binary).name}-{digest}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _default_warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=3)


def _read(path: Path, warn: Callable[[str], None]) -> tuple[QemuCaps | None, str]:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, "missing"
    except OSError as exc:
        warn(f"cannot read capabilities cache {path}: {exc.strerror}; probing QEMU again")
        return None, "unreadable"
    try:
        return caps_from_document(json.loads(data), str(path), check=False), ""
    except (ValueError, InputError, RecursionError) as exc:
        warn(f"capabilities cache {path} is corrupt ({str(exc).splitlines()[0][:120]}); probing QEMU again")
        return None, "corrupt"


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

    ``facts`` replaces the host facts (tests simulate kernel or microcode changes
    with it); ``warn`` receives the warnings (default: ``warnings.warn``).
    """
    warn = warn or _default_warn
    path_binary = resolve_binary(binary, arch)
    check_accel(accel)
    current = dict(facts) if facts is not None else host_facts(path_binary, accel)
    directory = cache_dir or default_cache_dir()
    path = cache_path(directory, path_binary, arch, accel)

    status = "refresh"
    if not refresh:
        cached, status = _read(path, warn)
        if cached is not None:
            changed = changed_facts(cached.fingerprint, current)
            if not changed:
                return CacheResult(cached, path, "hit")
            status = "changed: " + ", ".join(changed)

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the capabilities cache directory {directory}: {exc.strerror}; "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None
    with _locked(path):
        if not refresh:
            # Another process may have probed while we waited for the lock.
            again, _ = _read(path, lambda _m: None)
            if again is not None and not changed_facts(again.fingerprint, current):
                return CacheResult(again, path, "hit")
        caps = probe(path_binary, accel, arch=arch, timeout=timeout, progress=progress, fingerprint=current)
        data = json.dumps(to_document(caps), separators=(",", ":")).encode()
        try:
            write_atomic(path, data)
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
