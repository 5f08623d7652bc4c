"""Raw CPUID and MSR values of one CPU, as read from hardware or a dump."""

from __future__ import annotations

from dataclasses import dataclass, field

REGISTERS = ("eax", "ebx", "ecx", "edx")


@dataclass(frozen=True)
class Signature:
    """Family/model/stepping as x86 software sees them (extended fields folded in)."""

    family: int
    model: int
    stepping: int

    @classmethod
    def from_eax(cls, eax: int) -> Signature:
        base_family = (eax >> 8) & 0xF
        ext_family = (eax >> 20) & 0xFF
        base_model = (eax >> 4) & 0xF
        ext_model = (eax >> 16) & 0xF
        # As libvirt's x86DataToSignatureFull: extended fields are always folded in.
        family = base_family + ext_family
        model = (ext_model << 4) | base_model
        return cls(family, model, eax & 0xF)

    def to_eax(self) -> int:
        """The leaf-1 EAX value that encodes this signature (x86MakeSignature)."""
        family = self.family
        base_family = min(family, 0xF)
        ext_family = family - 0xF if family > 0xF else 0
        return (
            (ext_family << 20)
            | ((self.model >> 4) << 16)
            | (base_family << 8)
            | ((self.model & 0xF) << 4)
            | (self.stepping & 0xF)
        )


@dataclass(frozen=True)
class CpuidData:
    """CPUID leaves keyed by (leaf, subleaf) -> (eax, ebx, ecx, edx), and MSRs by index."""

    leaves: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)
    msrs: dict[int, int] = field(default_factory=dict)
    brand: str | None = None

    def register(self, leaf: int, subleaf: int, reg: str) -> int:
        values = self.leaves.get((leaf, subleaf))
        return values[REGISTERS.index(reg)] if values else 0

    @property
    def vendor_string(self) -> str:
        leaf0 = self.leaves.get((0, 0))
        if leaf0 is None:
            return ""
        _, ebx, ecx, edx = leaf0
        raw = b"".join(v.to_bytes(4, "little") for v in (ebx, edx, ecx))
        return raw.decode("ascii", errors="replace").rstrip("\0")

    @property
    def signature(self) -> Signature | None:
        leaf1 = self.leaves.get((1, 0))
        return Signature.from_eax(leaf1[0]) if leaf1 else None

    @property
    def signature_eax(self) -> int:
        """Leaf-1 EAX masked as libvirt does (no reserved bits)."""
        leaf1 = self.leaves.get((1, 0))
        return leaf1[0] & 0x0FFF3FFF if leaf1 else 0

    def model_name_string(self) -> str | None:
        """The brand string of leaves 0x80000002-4, if present."""
        max_ext = self.leaves.get((0x80000000, 0), (0, 0, 0, 0))[0]
        if max_ext < 0x80000004:
            return None
        # Dumps leave out all-zero leaves: a missing brand leaf is four zero registers.
        parts = [self.leaves.get((leaf, 0), (0, 0, 0, 0)) for leaf in (0x80000002, 0x80000003, 0x80000004)]
        raw = b"".join(v.to_bytes(4, "little") for p in parts for v in p)
        return raw.decode("ascii", errors="replace").strip("\0 ").strip() or None
