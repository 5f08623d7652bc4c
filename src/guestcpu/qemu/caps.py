"""What one QEMU binary can give a guest under one accelerator (a pure value type).

``QemuCaps`` is built from parsed QMP replies (``caps_from_replies``) and stored as a
versioned JSON document (``to_document`` / ``caps_from_document``).  It keeps QEMU's
own property names; mapping them onto catalog features happens where it is used
(``hypervisor``), so a capabilities document stays valid whatever the catalog.

Expansions are stored compactly: the properties that are ``true`` plus every
non-boolean property (a missing boolean is false).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from guestcpu.errors import InputError
from guestcpu.formats.qmp_replies import (
    CpuDefinition,
    MachineInfo,
    ModelInfo,
    parse_definitions,
    parse_expansion,
    parse_machines,
    parse_properties,
    parse_version,
)
from guestcpu.model.names import split_version

SCHEMA = "guestcpu/qemu-caps"
SCHEMA_VERSION = 1

#: How a machine type resolves an unversioned model name (QEMU's default_cpu_version).
RESOLVE_V1 = "v1"
RESOLVE_LEGACY = "legacy"
RESOLVE_LATEST = "latest"

_PC_MACHINE = re.compile(r"^pc-(?:i440fx|q35)-(?P<major>\d+)\.(?P<minor>\d+)")


@dataclass(frozen=True)
class Expansion:
    """A ``query-cpu-model-expansion`` result: model name and compact props."""

    name: str
    props: Mapping[str, Any]

    @property
    def enabled(self) -> list[str]:
        return [k for k, v in self.props.items() if v is True]

    def get(self, key: str, default: Any = None) -> Any:
        return self.props.get(key, default)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "props": dict(self.props)}

    @classmethod
    def from_reply(cls, reply: Any) -> Expansion:
        return cls.from_model(parse_expansion(reply))

    @classmethod
    def from_model(cls, model: ModelInfo) -> Expansion:
        return cls(model.name, compact_props(model.props))


def compact_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """Drop false booleans (absent means false); keep everything else, sorted."""
    return {k: props[k] for k in sorted(props) if props[k] is not False}


@dataclass(frozen=True)
class ModelCaps:
    name: str
    usable: bool
    #: ``unavailable-features`` in QEMU's spelling, de-duplicated, QEMU's order
    blockers: tuple[str, ...]
    alias_of: str | None = None
    deprecated: bool = False
    typename: str | None = None
    static: bool = False
    migration_safe: bool = True
    #: static expansion of the model under this accelerator
    expansion: Expansion | None = None
    #: properties this model's QOM type has beyond the ones every model has (``QemuCaps.cpu_properties``)
    extra_properties: tuple[str, ...] = ()


@dataclass(frozen=True)
class MachineCaps(MachineInfo):
    """A machine type as ``query-machines`` gives it, and how it resolves an unversioned CPU model."""

    #: RESOLVE_V1 / RESOLVE_LEGACY / RESOLVE_LATEST
    resolves: str = RESOLVE_V1

    @property
    def default_cpu(self) -> str | None:
        """The default CPU model name (``qemu64-x86_64-cpu`` -> ``qemu64``)."""
        if not self.default_cpu_type:
            return None
        for suffix in ("-x86_64-cpu", "-i386-cpu", "-s390x-cpu"):
            if self.default_cpu_type.endswith(suffix):
                return self.default_cpu_type[: -len(suffix)]
        return self.default_cpu_type


@dataclass(frozen=True)
class QemuCaps:
    arch: str
    accel: str
    binary: str
    qemu_version: str
    package: str
    machines: tuple[MachineCaps, ...]
    models: tuple[ModelCaps, ...]
    #: static expansion of ``host`` (KVM) or ``max`` (TCG), migratable features only
    host_static: Expansion | None
    #: full expansion of the same (level, xlevel, phys-bits … and every alias name)
    host_full: Expansion | None
    #: properties only the ``migratable=false`` expansion turns on (invtsc …)
    non_migratable: tuple[str, ...] = ()
    #: every boolean property name the static expansion knows (QEMU's feature names)
    known_props: frozenset[str] = frozenset()
    #: every property of this QEMU's CPU objects (``qom-list-properties`` of the model types);
    #: empty when the document predates it (then only feature names can be judged)
    cpu_properties: frozenset[str] = frozenset()
    #: the host facts the probe ran with (what the cache is keyed on)
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    probed_at: float = 0.0
    probe_seconds: float = 0.0
    _by_name: dict[str, ModelCaps] = field(default_factory=dict, init=False, repr=False, compare=False)
    #: values derived from these (immutable) capabilities, computed once: fleets ask per host many times
    memo: dict[object, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for model in self.models:
            self._by_name[model.name] = model

    # -- look-ups -----------------------------------------------------------------
    def model(self, name: str) -> ModelCaps | None:
        return self._by_name.get(name)

    def has_model(self, name: str) -> bool:
        return name in self._by_name

    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def machine(self, name: str) -> MachineCaps | None:
        for machine in self.machines:
            if name in (machine.name, machine.alias):
                return machine
        return None

    def default_machine(self) -> MachineCaps | None:
        return next((m for m in self.machines if m.is_default), None)

    def latest_versions(self) -> dict[str, str]:
        """Unversioned name -> its newest ``-vN`` (what a ``latest`` machine resolves to)."""
        newest: dict[str, tuple[int, str]] = {}
        for name in self._by_name:
            base, version = split_version(name)
            if version is not None and (base not in newest or newest[base][0] < version):
                newest[base] = (version, name)
        return {base: name for base, (_, name) in newest.items()}

    def resolve(self, name: str, machine: str | None = None) -> tuple[str, str]:
        """The versioned model QEMU runs for ``name`` on ``machine``, and how it was resolved.

        Returns ``(versioned name, rule)``; ``rule`` is ``versioned`` (already -vN or no
        alias), ``alias`` (a fixed alias such as ``Skylake-Client-IBRS``), ``v1``,
        ``latest`` or ``legacy`` (pc <= 4.0: the unversioned definition, v1's content).
        """
        entry = self._by_name.get(name)
        if entry is None or entry.alias_of is None:
            return name, "versioned"
        base, version = split_version(entry.alias_of)
        fixed = version is None or base != name
        if fixed:
            return entry.alias_of, "alias"
        how = RESOLVE_V1
        if machine is not None:
            found = self.machine(machine)
            how = found.resolves if found else machine_resolution(machine)
        if how == RESOLVE_LATEST:
            return self.latest_versions().get(name, entry.alias_of), RESOLVE_LATEST
        return entry.alias_of, how

    def has_property(self, model: str, prop: str) -> bool | None:
        """Whether ``model``'s CPU object has property ``prop`` here (None: this document cannot say)."""
        if not self.cpu_properties:
            return None
        if prop in self.cpu_properties:
            return True
        found = self._by_name.get(model)
        return found is not None and prop in found.extra_properties

    @property
    def host_model_name(self) -> str:
        return "host" if self.accel == "kvm" else "max"


def machine_resolution(name: str) -> str:
    """QEMU 4.1+'s rule: pc <= 4.0 and isapc are legacy, microvm is latest, the rest v1."""
    if name == "isapc":
        return RESOLVE_LEGACY
    if name == "microvm":
        return RESOLVE_LATEST
    match = _PC_MACHINE.match(name)
    if match and (int(match["major"]), int(match["minor"])) < (4, 1):
        return RESOLVE_LEGACY
    return RESOLVE_V1


# -- building from replies (pure) ---------------------------------------------------
def machine_caps(machines: tuple[MachineInfo, ...]) -> tuple[MachineCaps, ...]:
    result = [MachineCaps(**asdict(m), resolves=machine_resolution(m.name)) for m in machines]
    return tuple(sorted(result, key=lambda m: m.name))


def model_caps(
    definitions: tuple[CpuDefinition, ...],
    expansions: Mapping[str, Expansion] | None = None,
    extra_properties: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[ModelCaps, ...]:
    expansions = expansions or {}
    extra_properties = extra_properties or {}
    return tuple(
        ModelCaps(
            name=d.name,
            usable=d.usable,
            blockers=d.unavailable,
            alias_of=d.alias_of,
            deprecated=d.deprecated,
            typename=d.typename,
            static=d.static,
            migration_safe=d.migration_safe,
            expansion=expansions.get(d.name),
            extra_properties=extra_properties.get(d.typename or "", ()),
        )
        for d in definitions
    )


def caps_from_replies(
    *,
    arch: str,
    accel: str,
    binary: str,
    version: Any,
    machines: Any,
    definitions: Any,
    host_static: Any | None,
    host_full: Any | None,
    host_static_nonmigratable: Any | None,
    model_expansions: Mapping[str, Any],
    model_properties: Mapping[str, Any] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    probed_at: float = 0.0,
    probe_seconds: float = 0.0,
) -> QemuCaps:
    """Assemble capabilities from the QMP ``return`` values of a probe (each parsed once, checked)."""
    qemu = parse_version(version)
    expansions = {name: Expansion.from_reply(r) for name, r in model_expansions.items()}
    static_model = parse_expansion(host_static) if host_static is not None else None
    static = Expansion.from_model(static_model) if static_model is not None else None
    full = Expansion.from_reply(host_full) if host_full is not None else None
    non_migratable: tuple[str, ...] = ()
    known: set[str] = set()
    if host_static_nonmigratable is not None and static is not None:
        nm = Expansion.from_reply(host_static_nonmigratable)
        non_migratable = tuple(sorted(set(nm.enabled) - set(static.enabled)))
    if static_model is not None:
        known = {k for k, v in static_model.props.items() if isinstance(v, bool)}
    by_type = {t: frozenset(p.name for p in parse_properties(r)) for t, r in (model_properties or {}).items()}
    # x86 models share one property set; host/max add a few (migratable, host-cache-info ...).
    common = frozenset.intersection(*by_type.values()) if by_type else frozenset()
    extras = {t: tuple(sorted(found - common)) for t, found in by_type.items() if found - common}
    return QemuCaps(
        arch=arch,
        accel=accel,
        binary=binary,
        qemu_version=qemu.text,
        package=qemu.package,
        machines=machine_caps(parse_machines(machines)) if machines is not None else (),
        models=model_caps(parse_definitions(definitions), expansions, extras),
        host_static=static,
        host_full=full,
        non_migratable=non_migratable,
        known_props=frozenset(known),
        cpu_properties=common,
        fingerprint=dict(fingerprint or {}),
        probed_at=probed_at,
        probe_seconds=probe_seconds,
    )


# -- the JSON document --------------------------------------------------------------
def to_document(caps: QemuCaps) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "arch": caps.arch,
        "accel": caps.accel,
        "binary": caps.binary,
        "qemu_version": caps.qemu_version,
        "package": caps.package,
        "probed_at": caps.probed_at,
        "probe_seconds": caps.probe_seconds,
        "fingerprint": dict(caps.fingerprint),
        "host_static": caps.host_static.to_json() if caps.host_static else None,
        "host_full": caps.host_full.to_json() if caps.host_full else None,
        "non_migratable": list(caps.non_migratable),
        "known_props": sorted(caps.known_props),
        "cpu_properties": sorted(caps.cpu_properties),
        "machines": [
            {
                "name": m.name,
                "alias": m.alias,
                "is_default": m.is_default,
                "default_cpu_type": m.default_cpu_type,
                "deprecated": m.deprecated,
                "cpu_max": m.cpu_max,
                "resolves": m.resolves,
            }
            for m in caps.machines
        ],
        "models": [
            {
                "name": m.name,
                "usable": m.usable,
                "blockers": list(m.blockers),
                "alias_of": m.alias_of,
                "deprecated": m.deprecated,
                "typename": m.typename,
                "static": m.static,
                "migration_safe": m.migration_safe,
                "expansion": m.expansion.to_json() if m.expansion else None,
                "extra_properties": list(m.extra_properties),
            }
            for m in caps.models
        ],
    }


def _expansion(doc: Any) -> Expansion | None:
    if doc is None:
        return None
    return Expansion(doc["name"], dict(doc["props"]))


def caps_from_document(doc: Any, source: str = "capabilities document", *, check: bool = True) -> QemuCaps:
    """Read a document written by ``to_document``; a wrong schema or shape is an InputError naming the field.

    ``check=False`` skips the JSON Schema for guestcpu's own cache, which it wrote
    atomically itself and must read in a few milliseconds (validation costs ~50 ms);
    there a damaged file still fails as ``CorruptDocumentError`` and is probed again.
    """
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{source} is not a guestcpu QEMU capabilities document (schema {SCHEMA!r} expected)")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"{source} has schema version {doc.get('schema_version')!r}; this guestcpu reads version {SCHEMA_VERSION}"
        )
    if check:
        from guestcpu.schemas import validate

        validate("qemu-caps", doc, source)
        return _caps(doc)
    try:
        return _caps(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptDocumentError(f"{source} is damaged ({type(exc).__name__})") from None


class CorruptDocumentError(InputError):
    """An unchecked (cache) document that could not be read."""


def _caps(doc: Mapping[str, Any]) -> QemuCaps:
    """The capabilities of a document of the qemu-caps schema's shape."""
    return QemuCaps(
        arch=doc["arch"],
        accel=doc["accel"],
        binary=doc["binary"],
        qemu_version=doc["qemu_version"],
        package=doc.get("package", ""),
        machines=tuple(
            MachineCaps(
                name=m["name"],
                alias=m.get("alias"),
                is_default=m.get("is_default", False),
                default_cpu_type=m.get("default_cpu_type"),
                deprecated=m.get("deprecated", False),
                cpu_max=m.get("cpu_max"),
                resolves=m.get("resolves", RESOLVE_V1),
            )
            for m in doc["machines"]
        ),
        models=tuple(
            ModelCaps(
                name=m["name"],
                usable=m["usable"],
                blockers=tuple(m["blockers"]),
                alias_of=m.get("alias_of"),
                deprecated=m.get("deprecated", False),
                typename=m.get("typename"),
                static=m.get("static", False),
                migration_safe=m.get("migration_safe", True),
                expansion=_expansion(m.get("expansion")),
                extra_properties=tuple(m.get("extra_properties", ())),
            )
            for m in doc["models"]
        ),
        host_static=_expansion(doc["host_static"]),
        host_full=_expansion(doc["host_full"]),
        non_migratable=tuple(doc.get("non_migratable", ())),
        known_props=frozenset(doc.get("known_props", ())),
        cpu_properties=frozenset(doc.get("cpu_properties", ())),
        fingerprint=dict(doc.get("fingerprint", {})),
        probed_at=float(doc.get("probed_at", 0.0)),
        probe_seconds=float(doc.get("probe_seconds", 0.0)),
    )
