"""The pinned CPU: a versioned JSON document whose ABI part is hashed into a fingerprint.

The ``abi`` block holds everything a guest can observe of its CPU and that guestcpu
controls: machine type, accelerator, the ``-cpu`` model with its explicit version,
vendor, family/model/stepping, level, xlevel, model-id, every feature QEMU knows as
``require`` or ``disable`` (QEMU's property names, so the pin does not depend on the
catalog's spelling), and a few machine-dependent properties (cache layout, ...).

The fingerprint is the SHA-256 of the canonical JSON of that block (sorted keys, no
spaces).  Provenance (QEMU version, binary, how the model was resolved) and policy
(host-model recomputes at a fresh start) are kept beside it but are not part of the
ABI: the same CPU made by another QEMU build has the same fingerprint.
"""

from __future__ import annotations

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

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.to_json())


def canonical_bytes(abi_json: Mapping[str, Any]) -> bytes:
    return json.dumps(abi_json, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint_of(abi_json: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(abi_json)).hexdigest()


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
    def passthrough(self) -> bool:
        return self.abi.mode in ("host-passthrough", "maximum")


def pin_to_document(pin: Pin) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": pin.fingerprint,
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


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], source: str, what: str = "") -> Any:
    if key not in doc:
        raise PinError(f"{source} is damaged: '{what}{key}' is missing")
    value = doc[key]
    # bool is an int in Python; a number field holding true/false is still wrong.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise PinError(f"{source} is damaged: '{what}{key}' has the wrong type ({type(value).__name__})")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def abi_from_json(doc: Any, source: str) -> Abi:
    if not isinstance(doc, dict):
        raise PinError(f"{source} is damaged: 'abi' is not an object")
    features = _get(doc, "features", dict, source, "abi.")
    parsed: dict[str, bool] = {}
    for name, policy in features.items():
        if policy not in (REQUIRE, DISABLE):
            raise PinError(f"{source}: feature '{name}' has policy {policy!r}; a pin holds only require or disable")
        parsed[name] = policy == REQUIRE
    mode = _get(doc, "mode", str, source, "abi.")
    if mode not in ABI_MODES:
        raise PinError(f"{source}: abi.mode {mode!r} is not one of {', '.join(ABI_MODES)}")
    topology = _get(doc, "topology", dict, source, "abi.")
    if set(topology) != set(TOPOLOGY_KEYS) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in topology.values()
    ):
        raise PinError(f"{source} is damaged: 'abi.topology' must give {', '.join(TOPOLOGY_KEYS)} as positive numbers")
    version = doc.get("version")
    if version is not None and not isinstance(version, (int, str)):
        raise PinError(f"{source} is damaged: 'abi.version' has the wrong type")
    return Abi(
        arch=_get(doc, "arch", str, source, "abi."),
        accel=_get(doc, "accel", str, source, "abi."),
        machine=_get(doc, "machine", str, source, "abi."),
        mode=mode,
        model=_get(doc, "model", str, source, "abi."),
        version=version,
        vendor=_get(doc, "vendor", str, source, "abi."),
        family=_get(doc, "family", int, source, "abi."),
        model_number=_get(doc, "model_number", int, source, "abi."),
        stepping=_get(doc, "stepping", int, source, "abi."),
        level=_get(doc, "level", int, source, "abi."),
        xlevel=_get(doc, "xlevel", int, source, "abi."),
        model_id=_get(doc, "model_id", str, source, "abi."),
        features=parsed,
        props=dict(_get(doc, "props", dict, source, "abi.")),
        topology=dict(topology),
    )


def pin_from_document(doc: Any, source: str = "pin") -> Pin:
    """A pin read back; a wrong schema, damage or a fingerprint mismatch is a PinError."""
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
    raw_abi = doc.get("abi")
    abi = abi_from_json(raw_abi, source)
    assert isinstance(raw_abi, dict)
    recorded = doc.get("fingerprint")
    computed = abi.fingerprint
    # The document's own abi block, hashed as written: catches edits that parsing normalises away.
    if not isinstance(recorded, str) or recorded != computed or fingerprint_of(raw_abi) != computed:
        raise PinError(
            f"{source}: the ABI fingerprint does not match the pinned CPU (recorded {recorded}, computed {computed}); "
            "the pin was edited by hand or damaged; run 'guestcpu define' again instead of editing a pin"
        )
    policy_doc = doc.get("policy") or {}
    resolution_doc = doc.get("resolution") or {}
    if not isinstance(policy_doc, dict) or not isinstance(resolution_doc, dict):
        raise PinError(f"{source} is damaged: 'policy' or 'resolution' is not an object")
    mode = policy_doc.get("mode", abi.mode)
    if mode not in DEFINITION_MODES:
        raise PinError(f"{source}: policy.mode {mode!r} is not one of {', '.join(DEFINITION_MODES)}")
    policy = PinPolicy(
        mode=mode,
        match=policy_doc.get("match"),
        recompute=bool(policy_doc.get("recompute_on_fresh_start", False)),
        definition=str(policy_doc.get("definition", "")),
        existing=bool(policy_doc.get("existing", False)),
        default_cpu=bool(policy_doc.get("default_cpu", False)),
    )
    resolution = Resolution(
        requested=resolution_doc.get("requested"),
        resolved=str(resolution_doc.get("resolved", abi.model)),
        rule=str(resolution_doc.get("rule", "explicit")),
        notes=tuple(str(n) for n in resolution_doc.get("notes", ())),
    )
    host = doc.get("host")
    for key in ("name", "uuid"):
        if not isinstance(doc.get(key), (str, type(None))):
            raise PinError(f"{source} is damaged: '{key}' is not a string")
    return Pin(
        abi=abi,
        policy=policy,
        resolution=resolution,
        made_with=dict(doc.get("made_with") or {}),
        host=dict(host) if isinstance(host, dict) else None,
        libvirt_cpu=str(doc.get("libvirt_cpu", "")),
        warnings=tuple(str(w) for w in doc.get("warnings", ())),
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
