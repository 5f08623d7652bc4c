"""A named CPU model of the catalog (one version, or an alias resolved to its target)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSignature:
    """A family/model pair a model stands for, optionally limited to some steppings."""

    family: int
    model: int
    #: bitmap of allowed steppings (bit n = stepping n); None = any stepping
    steppings: int | None = None

    def matches(self, family: int, model: int, stepping: int) -> bool:
        if family != self.family or model != self.model:
            return False
        return self.steppings is None or bool(self.steppings >> stepping & 1)


@dataclass(frozen=True)
class CpuidIdentity:
    """What a model puts in CPUID besides features (QEMU's definition)."""

    vendor: str
    family: int
    model: int
    stepping: int
    level: int
    xlevel: int
    model_id: str


@dataclass(frozen=True)
class CpuModel:
    name: str
    #: decode/preference order: a later model is newer (libvirt's index order)
    order: int
    vendor: str | None
    #: feature bitset over the catalog index (removed features excluded)
    features: int
    #: features QEMU dropped from the model but libvirt keeps explicit (mpx, …)
    removed: int = 0
    #: features QEMU always enables that libvirt learnt of later (vmx-* …)
    added: int = 0
    signatures: tuple[ModelSignature, ...] = ()
    alias_of: str | None = None
    version: int | None = None
    family: str = ""
    decode_host: bool = True
    decode_guest: bool = True
    compat_check: bool = False
    deprecated: bool = False
    identity: CpuidIdentity | None = None
    in_qemu_7_2: bool = False
    source: str = "built-in"
    notes: str = ""

    @property
    def canonical(self) -> str:
        return self.alias_of or self.name

    def matches_signature(self, family: int, model: int, stepping: int) -> bool:
        return any(s.matches(family, model, stepping) for s in self.signatures)
