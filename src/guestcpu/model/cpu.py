"""A CPU definition as libvirt's ``<cpu>`` element expresses it (host or guest form)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum


class CpuType(Enum):
    HOST = "host"
    GUEST = "guest"


class Mode(Enum):
    CUSTOM = "custom"
    HOST_MODEL = "host-model"
    HOST_PASSTHROUGH = "host-passthrough"
    MAXIMUM = "maximum"


class Match(Enum):
    MINIMUM = "minimum"
    EXACT = "exact"
    STRICT = "strict"


class Check(Enum):
    NONE = "none"
    PARTIAL = "partial"
    FULL = "full"


class Fallback(Enum):
    ALLOW = "allow"
    FORBID = "forbid"


class Policy(Enum):
    FORCE = "force"
    REQUIRE = "require"
    OPTIONAL = "optional"
    DISABLE = "disable"
    FORBID = "forbid"


@dataclass(frozen=True)
class Topology:
    sockets: int
    cores: int
    threads: int
    dies: int | None = None
    clusters: int | None = None


@dataclass(frozen=True)
class FeatureRequest:
    """One ``<feature>``: a name and, for guest CPUs, its policy (None on host CPUs)."""

    name: str
    policy: Policy | None = None


@dataclass(frozen=True)
class CpuDefinition:
    """A host or guest CPU.  Fields absent from the XML stay None.

    ``extra_xml`` keeps child elements guestcpu does not model (``cache``,
    ``maxphysaddr``, ``counter`` …) verbatim so a round trip loses nothing.
    """

    type: CpuType = CpuType.GUEST
    mode: Mode | None = None
    match: Match | None = None
    check: Check | None = None
    migratable: str | None = None
    arch: str | None = None
    model: str | None = None
    fallback: Fallback | None = None
    vendor_id: str | None = None
    vendor: str | None = None
    microcode: str | None = None
    signature: tuple[int, int, int] | None = None
    topology: Topology | None = None
    features: tuple[FeatureRequest, ...] = ()
    extra_xml: tuple[str, ...] = field(default=(), compare=False)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        # Definitions are dictionary keys in hot paths (the engine's compile memo):
        # hash the fields once, on first use, instead of on every look-up.
        if self._hash is None:
            fields = (self.type, self.mode, self.match, self.check, self.migratable, self.arch, self.model,
                      self.fallback, self.vendor_id, self.vendor, self.microcode, self.signature, self.topology,
                      self.features)
            object.__setattr__(self, "_hash", hash(fields))
        assert self._hash is not None
        return self._hash

    def with_(self, **changes: object) -> CpuDefinition:
        return replace(self, **changes)  # type: ignore[arg-type]

    def feature_policy(self, name: str) -> Policy | None:
        for feature in self.features:
            if feature.name == name:
                return feature.policy if feature.policy is not None else Policy.REQUIRE
        return None

    def names_with(self, *policies: Policy) -> list[str]:
        """Feature names whose effective policy is one of ``policies`` (host features count as require)."""
        wanted = set(policies)
        return [
            f.name for f in self.features if (f.policy if f.policy is not None else Policy.REQUIRE) in wanted
        ]
