"""The pinned CPU: a versioned JSON document whose ABI part is hashed into a fingerprint.

The ``abi`` block holds everything a guest can observe of its CPU and that guestcpu
controls: machine type, accelerator, the ``-cpu`` model with its explicit version,
vendor, family/model/stepping, level, xlevel, model-id, every feature QEMU knows as
``require`` or ``disable`` (QEMU's property names, so the pin does not depend on the
catalog's spelling), and a few machine-dependent properties (cache layout, ...).

The fingerprint is the SHA-256 of the canonical JSON of that block (sorted keys, no
spaces).  Provenance (QEMU version, binary, how the model was resolved) and policy
(host-model recomputes at a fresh start) are kept beside it but are not part of the
ABI: the same CPU made by another QEMU build has the same fingerprint.  The policy
and the pinned host can still change what a guest gets (a mode edited to host-model
would be recomputed at the next start), so a second hash, the seal, covers the ABI,
the policy and the host together, and a pin whose seal does not match is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guestcpu.errors import InputError

SCHEMA = "guestcpu/pin"
SCHEMA_VERSION = 1

REQUIRE = "require"
DISABLE = "disable"

#: How the pinned CPU is handed to QEMU.
ABI_MODES = ("custom", "host-passthrough", "maximum")
#: What the guest definition asked for (host-model becomes a custom ABI).
DEFINITION_MODES = ("custom", "host-model", "host-passthrough", "maximum")
#: The topology of a guest without one: a single vCPU (libvirt's default layout, sockets = vCPUs).
TOPOLOGY_KEYS = ("sockets", "dies", "clusters", "cores", "threads")
DEFAULT_TOPOLOGY = {"sockets": 1, "dies": 1, "clusters": 1, "cores": 1, "threads": 1}
#: Version of a model on a machine type that runs QEMU's unversioned (pre-4.1) definition.
LEGACY = "legacy"


class PinError(InputError):
    """A pin document that cannot be trusted: wrong schema, damaged, or edited by hand."""


@dataclass(frozen=True)
class Abi:
    arch: str
    accel: str
    machine: str
    mode: str
    #: the ``-cpu`` name: ``Skylake-Client-v4``, ``Skylake-Client`` (legacy), ``host``, ``max``
    model: str
    #: the model's version: N, ``legacy``, or None for host/max
    version: int | str | None
    vendor: str
    family: int
    model_number: int
    stepping: int
    level: int
    xlevel: int
    model_id: str
    #: QEMU property name -> enabled
    features: Mapping[str, bool]
    #: other guest-visible properties the machine type decides (``legacy-cache`` ...)
    props: Mapping[str, Any] = field(default_factory=dict)
    #: sockets/dies/clusters/cores/threads: CPUID leaves 0x1, 0x4, 0xb, 0x1f depend on them
    topology: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TOPOLOGY))

    @property
    def vcpus(self) -> int:
        total = 1
        for key in TOPOLOGY_KEYS:
            total *= self.topology.get(key, 1)
        return total

    @property
    def required(self) -> list[str]:
        return sorted(name for name, on in self.features.items() if on)

    @property
    def disabled(self) -> list[str]:
        return sorted(name for name, on in self.features.items() if not on)

    def to_json(self) -> dict[str, Any]:
        """The canonical form (also what the document shows)."""
        return {
            "arch": self.arch,
            "accel": self.accel,
            "machine": self.machine,
            "mode": self.mode,
            "model": self.model,
            "version": self.version,
            "vendor": self.vendor,
            "family": self.family,
            "model_number": self.model_number,
            "stepping": self.stepping,
            "level": self.level,
            "xlevel": self.xlevel,
            "model_id": self.model_id,
            "features": {name: REQUIRE if self.features[name] else DISABLE for name in sorted(self.features)},
            "props": {name: self.props[name] for name in sorted(self.props)},
            "topology": {key: self.topology.get(key, 1) for key in TOPOLOGY_KEYS},
        }

    @functools.cached_property
    def canonical(self) -> Mapping[str, Any]:
        """``to_json()`` made once, to hash (an ABI is immutable; a fleet hashes one per guest): never edit it."""
        return self.to_json()

    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint_of(self.canonical)


def canonical_bytes(abi_json: Mapping[str, Any]) -> bytes:
    return json.dumps(abi_json, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint_of(abi_json: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(abi_json)).hexdigest()


def seal_of(abi_json: Mapping[str, Any], policy_json: Mapping[str, Any], host: Mapping[str, Any] | None) -> str:
    """SHA-256 of everything that decides what the guest gets: the ABI, how it is renewed, the host it was made on."""
    return fingerprint_of({"abi": abi_json, "policy": policy_json, "host": host})


@dataclass(frozen=True)
class PinPolicy:
    """What the pin was made from and how it may be renewed."""

    #: the definition's mode (custom, host-model, host-passthrough, maximum)
    mode: str
    match: str | None = None
    #: True for host-relative modes: a fresh start recomputes the CPU from current capabilities
    recompute: bool = False
    #: the loose libvirt ``<cpu>`` the pin was made from ("" when the machine's default CPU was used)
    definition: str = ""
    existing: bool = False
    default_cpu: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "match": self.match,
            "recompute_on_fresh_start": self.recompute,
            "definition": self.definition,
            "existing": self.existing,
            "default_cpu": self.default_cpu,
        }


@dataclass(frozen=True)
class Resolution:
    """How the model name of the definition became the pinned ``-cpu`` model."""

    requested: str | None
    resolved: str
    #: explicit, alias, latest-common, v1, legacy, latest, fallback, host-model, passthrough, maximum
    rule: str
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"requested": self.requested, "resolved": self.resolved, "rule": self.rule, "notes": list(self.notes)}


@dataclass(frozen=True)
class Pin:
    abi: Abi
    policy: PinPolicy
    resolution: Resolution
    #: provenance: qemu_version, package, binary, guestcpu version
    made_with: Mapping[str, Any]
    #: for host-passthrough/maximum: QEMU's static expansion of host/max when pinned (identity of the host)
    host: Mapping[str, Any] | None = None
    #: the same CPU as a libvirt live ``<cpu mode='custom' match='exact' check='full'>``
    libvirt_cpu: str = ""
    #: what define learnt on the way (blockers on this host, ignored policies, ...)
    warnings: tuple[str, ...] = ()
    #: the guest's <name> and <uuid> from its domain XML: whose pin this is
    name: str | None = None
    uuid: str | None = None

    @property
    def fingerprint(self) -> str:
        return self.abi.fingerprint

    @property
    def seal(self) -> str:
        return seal_of(self.abi.canonical, self.policy.to_json(), dict(self.host) if self.host is not None else None)

    @property
    def passthrough(self) -> bool:
        return self.abi.mode in ("host-passthrough", "maximum")


def pin_to_document(pin: Pin) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": pin.fingerprint,
        "seal": pin.seal,
        "abi": pin.abi.to_json(),
        "policy": pin.policy.to_json(),
        "resolution": pin.resolution.to_json(),
        "made_with": dict(pin.made_with),
        "host": dict(pin.host) if pin.host is not None else None,
        "warnings": list(pin.warnings),
        "libvirt_cpu": pin.libvirt_cpu,
        "name": pin.name,
        "uuid": pin.uuid,
    }


def dumps_pin(pin: Pin) -> str:
    return json.dumps(pin_to_document(pin), indent=2) + "\n"


# -- reading ------------------------------------------------------------------------


def abi_from_json(doc: Mapping[str, Any]) -> Abi:
    """The ABI block of a document already checked against the pin schema."""
    return Abi(
        arch=doc["arch"],
        accel=doc["accel"],
        machine=doc["machine"],
        mode=doc["mode"],
        model=doc["model"],
        version=doc["version"],
        vendor=doc["vendor"],
        family=doc["family"],
        model_number=doc["model_number"],
        stepping=doc["stepping"],
        level=doc["level"],
        xlevel=doc["xlevel"],
        model_id=doc["model_id"],
        features={name: policy == REQUIRE for name, policy in doc["features"].items()},
        props=dict(doc["props"]),
        topology=dict(doc["topology"]),
    )


def pin_from_document(doc: Any, source: str = "pin") -> Pin:
    """A pin read back; a wrong schema, damage, or an edit of anything sealed is a PinError."""
    from guestcpu.schemas import DocumentError, validate

    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else None
        hint = f" (it is a {found!r} document)" if isinstance(found, str) else ""
        raise PinError(
            f"{source} is not a guestcpu pin{hint}; expected schema {SCHEMA!r}, as written by 'guestcpu define'"
        )
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise PinError(
            f"{source} has pin schema version {doc.get('schema_version')!r}; this guestcpu reads version "
            f"{SCHEMA_VERSION}; define the guest again with this guestcpu"
        )
    try:
        validate("pin", doc, source)
    except DocumentError as exc:
        raise PinError(f"{exc}; define the guest again instead of editing a pin") from None
    abi = abi_from_json(doc["abi"])
    recorded = doc["fingerprint"]
    computed = abi.fingerprint
    # The document's own abi block, hashed as written: catches edits that parsing normalises away.
    if recorded != computed or fingerprint_of(doc["abi"]) != computed:
        raise PinError(
            f"{source}: the ABI fingerprint does not match the pinned CPU (recorded {recorded}, computed {computed}); "
            "the pin was edited by hand or damaged; run 'guestcpu define' again instead of editing a pin"
        )
    policy_doc = doc["policy"]
    resolution_doc = doc["resolution"]
    policy = PinPolicy(
        mode=policy_doc["mode"],
        match=policy_doc["match"],
        recompute=policy_doc["recompute_on_fresh_start"],
        definition=policy_doc["definition"],
        existing=policy_doc["existing"],
        default_cpu=policy_doc["default_cpu"],
    )
    host = doc["host"]
    sealed = seal_of(abi.to_json(), policy.to_json(), host)
    if doc["seal"] != sealed or seal_of(doc["abi"], policy_doc, host) != sealed:
        raise PinError(
            f"{source}: the seal does not match the pin's policy and host (recorded {doc['seal']}, computed {sealed}); "
            "its policy (mode, match, recompute) or host block was edited by hand or damaged; "
            "run 'guestcpu define' again instead of editing a pin"
        )
    resolution = Resolution(
        requested=resolution_doc["requested"],
        resolved=resolution_doc["resolved"],
        rule=resolution_doc["rule"],
        notes=tuple(resolution_doc["notes"]),
    )
    return Pin(
        abi=abi,
        policy=policy,
        resolution=resolution,
        made_with=dict(doc["made_with"]),
        host=dict(host) if host is not None else None,
        libvirt_cpu=doc["libvirt_cpu"],
        warnings=tuple(doc["warnings"]),
        name=doc.get("name"),
        uuid=doc.get("uuid"),
    )


def loads_pin(text: str, source: str) -> Pin:
    from guestcpu.formats.files import loads_json

    try:
        doc = loads_json(text, source, "a pin written by 'guestcpu define'")
    except InputError as exc:
        raise PinError(str(exc)) from None
    return pin_from_document(doc, source)
