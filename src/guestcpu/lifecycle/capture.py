"""``capture``: this host's CPUID and QEMU capabilities under both accelerators, one portable document.

Another machine checks migrations and restores against it (``migrate-check --to``),
and two captures of the same host, before and after an update, show what changed
(``diff``).  The document embeds the ``guestcpu/qemu-caps`` documents of the QEMU
backend unchanged, and the host's CPUID as a libvirt ``<cpudata>`` dump (readable by
``guestcpu host --cpuid``).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guestcpu.errors import GuestCpuError, InputError
from guestcpu.model.cpuid import CpuidData
from guestcpu.qemu.caps import Expansion, QemuCaps, caps_from_document, compact_props, to_document
from guestcpu.qemu.offer import HOST_MODELS, supported_features

SCHEMA = "guestcpu/host-capture"
SCHEMA_VERSION = 1
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class HostCapture:
    hostname: str
    kernel: str
    captured_at: str
    binary: str
    qemu_version: str
    #: accelerator -> capabilities
    accels: Mapping[str, QemuCaps]
    #: accelerator -> why it could not be captured
    unavailable: Mapping[str, str] = field(default_factory=dict)
    #: this host's CPUID as a libvirt <cpudata> dump, when it could be read
    cpuid: str | None = None
    cpuid_error: str | None = None
    cpu: Mapping[str, Any] = field(default_factory=dict)
    #: the CPU microcode revision (/proc/cpuinfo; "" when unknown): a microcode update can remove features
    microcode: str = ""

    def caps(self, accel: str) -> tuple[QemuCaps | None, str | None]:
        """The capabilities under ``accel``, or None and why not."""
        found = self.accels.get(accel)
        if found is not None:
            return found, None
        return None, self.unavailable.get(accel, f"the capture has no {accel} capabilities")


def _cpu_summary(data: CpuidData) -> dict[str, Any]:
    signature = data.signature
    return {
        "vendor": data.vendor_string,
        "brand": data.brand or data.model_name_string(),
        "family": signature.family if signature else None,
        "model": signature.model if signature else None,
        "stepping": signature.stepping if signature else None,
    }


def capture_host(
    binary: str | None = None,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
    read_cpuid: Callable[[], CpuidData] | None = None,
) -> HostCapture:
    """Probe (or take from the cache) both accelerators and read this host's CPUID."""
    from guestcpu.formats.hostcpuid import read_host_cpuid
    from guestcpu.formats.libvirt_xml import format_cpudata
    from guestcpu.qemu.cache import load_caps
    from guestcpu.qemu.process import kvm_unusable_reason, resolve_binary

    path = resolve_binary(binary)
    accels: dict[str, QemuCaps] = {}
    unavailable: dict[str, str] = {}
    for accel in ACCELS:
        reason = kvm_unusable_reason() if accel == "kvm" else None
        if reason is not None:
            unavailable[accel] = reason
            continue
        accels[accel] = load_caps(path, accel, cache_dir=cache_dir, refresh=refresh).caps
    cpuid_xml = cpuid_error = None
    cpu: dict[str, Any] = {}
    try:
        data = (read_cpuid or read_host_cpuid)()
        cpuid_xml = format_cpudata(data)
        cpu = _cpu_summary(data)
    except GuestCpuError as exc:
        cpuid_error = str(exc)
    versions = {c.qemu_version for c in accels.values()}
    return HostCapture(
        microcode=this_microcode(),
        hostname=socket.gethostname(),
        kernel=os.uname().release,
        captured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        binary=path,
        qemu_version=", ".join(sorted(versions)),
        accels=accels,
        unavailable=unavailable,
        cpuid=cpuid_xml,
        cpuid_error=cpuid_error,
        cpu=cpu,
    )


def this_microcode() -> str:
    """This host's CPU microcode revision ("" when /proc/cpuinfo does not say)."""
    from guestcpu.qemu.cache import cpuinfo_facts

    try:
        return cpuinfo_facts(Path("/proc/cpuinfo").read_text(errors="replace"))[0]
    except OSError:
        return ""


def capture_to_document(capture: HostCapture) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "hostname": capture.hostname,
        "kernel": capture.kernel,
        "microcode": capture.microcode,
        "captured_at": capture.captured_at,
        "qemu": {"binary": capture.binary, "version": capture.qemu_version},
        "cpu": dict(capture.cpu),
        "cpuid": capture.cpuid,
        "cpuid_error": capture.cpuid_error,
        "accels": {accel: to_document(caps) for accel, caps in sorted(capture.accels.items())},
        "unavailable": dict(sorted(capture.unavailable.items())),
    }


def capture_from_document(doc: Any, source: str = "capture") -> HostCapture:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        hint = f" (it is a {found!r} document)" if isinstance(found, str) else ""
        raise InputError(
            f"{source} is not a guestcpu host capture{hint}; expected schema {SCHEMA!r}, "
            "as written by 'guestcpu capture'"
        )
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"{source} has host-capture schema version {doc.get('schema_version')!r}; this guestcpu reads version "
            f"{SCHEMA_VERSION}; capture the host again with this guestcpu"
        )
    from guestcpu.schemas import validate

    validate("host-capture", doc, source)
    qemu = doc["qemu"]
    return HostCapture(
        hostname=doc["hostname"],
        kernel=doc["kernel"],
        microcode=str(doc.get("microcode", "")),
        captured_at=doc["captured_at"],
        binary=qemu["binary"],
        qemu_version=qemu["version"],
        # the embedded capabilities were validated with the capture
        accels={accel: caps_from_document(caps_doc, f"{source} ({accel})", check=False)
                for accel, caps_doc in doc["accels"].items()},
        unavailable=dict(doc["unavailable"]),
        cpuid=doc.get("cpuid"),
        cpuid_error=doc.get("cpuid_error"),
        cpu=dict(doc["cpu"]),
    )


def caps_on_other_cpu(caps: QemuCaps, host_props: Mapping[str, Any]) -> QemuCaps:
    """The same QEMU and accelerator on another CPU, known by QEMU's static ``host`` expansion there.

    A what-if for a host that is not at hand: libvirt's test corpus, for one, records
    that expansion on dozens of real CPUs.  The host-model and every model's blockers
    are recomputed; what QEMU grants beyond the host expansion (KVM's ``topoext``) is
    carried over, and nothing is assumed about non-migratable features.
    """
    if caps.host_static is None:
        raise InputError(f"the capabilities of {caps.binary} ({caps.accel}) have no host expansion to replace")
    granted = supported_features(caps) - set(caps.host_static.enabled) - set(caps.non_migratable)
    host = Expansion("base", compact_props(host_props))
    offer = set(host.enabled) | granted
    models = []
    for model in caps.models:
        if model.expansion is None or model.name in HOST_MODELS:
            models.append(model)
            continue
        blockers = tuple(name for name in model.expansion.enabled if name not in offer)
        models.append(replace(model, blockers=blockers, usable=not blockers))
    return replace(caps, host_static=host, host_full=None, non_migratable=(), models=tuple(models))
