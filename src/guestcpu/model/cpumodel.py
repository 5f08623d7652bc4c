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


def release_key(release: str) -> tuple[int, int, int]:
    """``"10.0"`` -> ``(10, 0, 0)``: QEMU releases compared as numbers (``"9.2" < "10.0" < "10.0.2"``)."""
    parts = release.split(".")
    try:
        if not 2 <= len(parts) <= 3:
            raise ValueError
        major, minor, micro = (int(p) for p in (*parts, "0")[:3])
    except ValueError:
        raise ValueError(f"'{release}' is not a QEMU release (expected MAJOR.MINOR[.MICRO], e.g. 10.0)") from None
    return major, minor, micro


@dataclass(frozen=True)
class QemuReleases:
    """The QEMU releases that define a model version, ``since`` to ``until`` (None: still defined).

    ``since`` is the oldest release recorded when the model was there already (6.2, the
    oldest the catalog is generated from, stands for "6.2 or earlier").
    """

    since: str
    until: str | None = None

    def __post_init__(self) -> None:
        release_key(self.since)
        if self.until is not None and release_key(self.until) < release_key(self.since):
            raise ValueError(f"QEMU release range {self.since}..{self.until} ends before it starts")

    def includes(self, release: str) -> bool:
        key = release_key(release)
        if key < release_key(self.since):
            return False
        if self.until is None:
            return True
        # "until 7.0" covers the 7.0.x stable updates too
        until = release_key(self.until)
        return key <= until if self.until.count(".") == 2 else key[:2] <= until[:2]

    def __str__(self) -> str:
        return f"{self.since}-{self.until}" if self.until else f"{self.since}+"

    def to_json(self) -> dict[str, str]:
        return {"since": self.since, **({"until": self.until} if self.until else {})}


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
    #: the QEMU releases that define this model version (None: no QEMU does)
    qemu: QemuReleases | None = None
    source: str = "built-in"
    notes: str = ""

    def defined_by_qemu(self, release: str) -> bool:
        """Whether QEMU ``release`` (``"7.2"``, ``"10.0.2"``) defines this model version, as recorded."""
        return self.qemu is not None and self.qemu.includes(release)

    @property
    def canonical(self) -> str:
        return self.alias_of or self.name

    def matches_signature(self, family: int, model: int, stepping: int) -> bool:
        return any(s.matches(family, model, stepping) for s in self.signatures)
