"""Compare a guest CPU with a host CPU: identical, superset or incompatible, and why.

Same rules as libvirt's x86Compute: vendor must match when the guest names one;
forbidden features present on the host, or required features missing from it, make
the pair incompatible; extra host features make it a superset, which ``match='strict'``
refuses.  Every answer names the features that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from guestcpu.catalog.catalog import Catalog
from guestcpu.engine.cpubits import CpuBits, compile_cpu
from guestcpu.errors import InputError
from guestcpu.model.cpu import CpuDefinition, CpuType, Match

X86_ARCHES = ("i686", "x86_64")


class CompareResult(Enum):
    IDENTICAL = "identical"
    SUPERSET = "superset"
    INCOMPATIBLE = "incompatible"


@dataclass(frozen=True)
class Comparison:
    """The verdict and the feature bits that decided it; names are computed on demand."""

    result: CompareResult
    catalog: Catalog = field(repr=False, compare=False)
    missing_bits: int = 0
    extra_bits: int = 0
    forbidden_bits: int = 0
    #: for verdicts not about features (arch, vendor)
    note: str = ""

    @property
    def missing_features(self) -> list[str]:
        return self.catalog.names(self.missing_bits)

    @property
    def extra_features(self) -> list[str]:
        return self.catalog.names(self.extra_bits)

    @property
    def forbidden_features(self) -> list[str]:
        return self.catalog.names(self.forbidden_bits)

    @property
    def reason(self) -> str:
        if self.note:
            return self.note
        if self.forbidden_bits:
            return f"host CPU provides forbidden features: {', '.join(self.forbidden_features)}"
        if self.missing_bits:
            return f"host CPU does not provide required features: {', '.join(self.missing_features)}"
        if self.result is CompareResult.INCOMPATIBLE:
            return f"host CPU does not strictly match guest CPU: extra features: {', '.join(self.extra_features)}"
        if self.result is CompareResult.IDENTICAL:
            return "host CPU provides exactly the guest CPU's features"
        return f"host CPU provides every guest feature and {self.extra_bits.bit_count()} more"

    @property
    def summary(self) -> str:
        """The reason in a few words, without the feature list."""
        if self.note and self.missing_bits:
            return f"{self.note.partition(': missing')[0]}: {self.missing_bits.bit_count()} feature(s) missing"
        if self.note:
            return self.note
        if self.forbidden_bits:
            return f"host CPU provides {self.forbidden_bits.bit_count()} forbidden feature(s)"
        if self.missing_bits:
            return f"host CPU lacks {self.missing_bits.bit_count()} required feature(s)"
        if self.result is CompareResult.INCOMPATIBLE:
            return f"match='strict' and the host has {self.extra_bits.bit_count()} extra feature(s)"
        return self.reason

    def as_dict(self) -> dict[str, object]:
        return {
            "result": self.result.value,
            "missing_features": self.missing_features,
            "extra_features": self.extra_features,
            "forbidden_features": self.forbidden_features,
            "reason": self.reason,
        }


def compare_bits(
    host: CpuBits, guest: CpuBits, catalog: Catalog, *, guest_arch: str | None = None, strict: bool = False
) -> Comparison:
    if guest_arch is not None and guest_arch not in X86_ARCHES:
        return Comparison(CompareResult.INCOMPATIBLE, catalog, note=f"CPU arch {guest_arch} does not match host arch")
    if guest.vendor is not None and guest.vendor != host.vendor:
        return Comparison(
            CompareResult.INCOMPATIBLE,
            catalog,
            note=f"host CPU vendor {host.vendor or 'unknown'} does not match required CPU vendor {guest.vendor}",
        )
    host_all = host.all
    forbidden = guest.forbid & host_all
    if forbidden:
        return Comparison(CompareResult.INCOMPATIBLE, catalog, forbidden_bits=forbidden)
    required = guest.required_with_model & ~(guest.force | guest.optional | guest.disable)
    missing = required & ~host_all
    extra = host_all & ~(guest.optional | required | guest.disable | guest.force)
    if missing:
        return Comparison(CompareResult.INCOMPATIBLE, catalog, missing_bits=missing, extra_bits=extra)
    if not extra:
        return Comparison(CompareResult.IDENTICAL, catalog)
    if strict:
        return Comparison(CompareResult.INCOMPATIBLE, catalog, extra_bits=extra)
    return Comparison(CompareResult.SUPERSET, catalog, extra_bits=extra)


def compare(host: CpuDefinition, guest: CpuDefinition, catalog: Catalog) -> Comparison:
    """Compare ``guest`` against ``host``.  Unknown models or features raise ``UnknownNameError``."""
    if host.model is None:
        raise InputError("the host CPU has no model; expected a host <cpu> with <model> or a CPUID dump")
    if host.vendor is not None:
        catalog.vendor(host.vendor, "host CPU")
    host_bits = compile_cpu(host, catalog, "host CPU")
    guest_bits = compile_cpu(guest, catalog, "guest CPU")
    strict = guest.type is CpuType.GUEST and guest.match is Match.STRICT
    return compare_bits(host_bits, guest_bits, catalog, guest_arch=guest.arch, strict=strict)
