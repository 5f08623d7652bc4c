"""Fleets of any size from real CPUs: capture documents as real hosts would write them (pure).

Each *kind* of host is one real CPU (QEMU's own ``host`` expansion recorded on it, as
libvirt's test corpus has for dozens of CPUs) seen through one real QEMU's
capabilities (``lifecycle.capture.caps_on_other_cpu``: the host-model and every
model's blockers recomputed for that CPU), under KVM, plus that QEMU's TCG
capabilities, which do not depend on the host CPU.  Variations model what microcode
and kernel updates do to a host: ``tsx-off`` (hle and rtm gone, as microcode updates
did to Skylake..Cascade Lake hosts) and ``pku-off`` (a kernel without protection keys).
A fleet of N hosts cycles through the kinds, so every kind appears about N/kinds times.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guestcpu.lifecycle.capture import SCHEMA, SCHEMA_VERSION, caps_on_other_cpu
from guestcpu.qemu.caps import QemuCaps, to_document

#: variation -> host expansion properties it turns off
VARIATIONS: dict[str, tuple[str, ...]] = {
    "": (),
    "tsx-off": ("hle", "rtm"),
    "pku-off": ("pku", "ospke"),
}


@dataclass(frozen=True)
class HostKind:
    cpu: str
    variation: str
    #: accelerator -> capabilities document
    accels: Mapping[str, Mapping[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.cpu}+{self.variation}" if self.variation else self.cpu


def host_kinds(
    cpus: Mapping[str, Mapping[str, Any]], kvm: QemuCaps, tcg: QemuCaps | None = None,
    variations: Sequence[str] = tuple(VARIATIONS),
) -> list[HostKind]:
    """One kind per CPU and variation that changes something (``cpus``: name -> QEMU host expansion props)."""
    tcg_doc = to_document(tcg) if tcg is not None else None
    kinds = []
    for name, props in sorted(cpus.items()):
        for variation in variations:
            off = [p for p in VARIATIONS[variation] if props.get(p) is True]
            if variation and not off:
                continue
            varied = {k: (False if k in off else v) for k, v in props.items()}
            accels: dict[str, Mapping[str, Any]] = {"kvm": to_document(caps_on_other_cpu(kvm, varied))}
            if tcg_doc is not None:
                accels["tcg"] = tcg_doc
            kinds.append(HostKind(name, variation, accels))
    return kinds


def capture_document(kind: HostKind, hostname: str, *, kernel: str = "6.1.0-synthetic") -> dict[str, Any]:
    some = next(iter(kind.accels.values()))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "hostname": hostname,
        "kernel": kernel,
        "captured_at": "2026-01-01T00:00:00+00:00",
        "qemu": {"binary": some.get("binary", ""), "version": some.get("qemu_version", "")},
        "cpu": {"brand": kind.cpu, "variation": kind.variation},
        "cpuid": None,
        "cpuid_error": "synthetic host: CPUID not recorded",
        "accels": {accel: dict(doc) for accel, doc in kind.accels.items()},
        "unavailable": {},
    }


def fleet(kinds: Sequence[HostKind], size: int, *, prefix: str = "host") -> Iterator[tuple[str, dict[str, Any]]]:
    """``size`` (hostname, capture document) pairs cycling through ``kinds``."""
    width = len(str(size))
    for i in range(size):
        kind = kinds[i % len(kinds)]
        name = f"{prefix}{i:0{width}d}"
        yield name, capture_document(kind, name)
