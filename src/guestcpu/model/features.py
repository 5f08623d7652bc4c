"""CPU features and sets of them.

A feature is one CPUID or MSR bit.  A ``FeatureSet`` is an immutable bitset over the
catalog's feature index: bit *i* set means the catalog's feature *i* is present.  The
engine works on the raw ``int`` for speed; ``FeatureSet`` gives it names and order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    index: int
    name: str
    #: "cpuid" or "msr"
    kind: str
    #: CPUID leaf and subleaf, or the MSR index (subleaf 0)
    leaf: int
    subleaf: int
    #: eax/ebx/ecx/edx for CPUID; "msr" for MSRs (a 64-bit value)
    register: str
    bit: int
    qemu_names: tuple[str, ...]
    migratable: bool = True

    @property
    def qemu_name(self) -> str:
        """QEMU's preferred property name."""
        return self.qemu_names[0] if self.qemu_names else self.name

    @property
    def location(self) -> str:
        if self.kind == "msr":
            return f"MSR 0x{self.leaf:x} bit {self.bit}"
        sub = f".{self.subleaf}" if self.subleaf else ""
        return f"CPUID 0x{self.leaf:x}{sub} {self.register.upper()}[{self.bit}]"


def iter_bits(bits: int) -> Iterator[int]:
    """Indices of the set bits, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


@dataclass(frozen=True)
class FeatureSet:
    """A set of catalog features; iteration is in catalog order."""

    bits: int
    features: Sequence[Feature]

    def __iter__(self) -> Iterator[Feature]:
        for i in iter_bits(self.bits):
            yield self.features[i]

    def __len__(self) -> int:
        return self.bits.bit_count()

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self]

    def __or__(self, other: FeatureSet) -> FeatureSet:
        return FeatureSet(self.bits | other.bits, self.features)

    def __and__(self, other: FeatureSet) -> FeatureSet:
        return FeatureSet(self.bits & other.bits, self.features)

    def __sub__(self, other: FeatureSet) -> FeatureSet:
        return FeatureSet(self.bits & ~other.bits, self.features)

    def issubset(self, other: FeatureSet) -> bool:
        return self.bits & ~other.bits == 0


def bits_of(indices: Iterable[int]) -> int:
    value = 0
    for i in indices:
        value |= 1 << i
    return value
